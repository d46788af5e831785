"""The core every other layer stands on: the job queue (``jobs``), the ledger, anomalies
and their alerts, the registries of what runs by name, and the shared guards (redaction,
stored JSON, outbound calls, database faults, process supervision).

It imports nothing from the layers above (``loop``, ``fleet``, ``routing``, ``console``,
``health``, ``pipeline``); ``.importlinter`` holds it to that.
"""
