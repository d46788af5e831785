"""An example Django app whose background work is written against Django's Tasks API
(``@task``) and runs on the orchestrator's queue."""
