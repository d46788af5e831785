"""The worker fleet: registry, cadence, dependencies, locks, scores, anomalies, recovery, alerts.

Modules with no Django imports (pure, unit-tested in microseconds): ``cadence``,
``graph``, ``scoring``, ``rules``. Everything else works on the models in
``orchestration.fleet.models``.
"""
