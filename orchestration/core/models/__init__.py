from orchestration.core.models.anomalies import Anomaly
from orchestration.core.models.idempotency import IdempotencyKey
from orchestration.core.models.jobs import Campaign, Job, JobRollup, Lane
from orchestration.core.models.ledger import LedgerEntry
from orchestration.core.models.notifications import Delivery, DeliveryAttempt, NotificationChannel
from orchestration.core.models.processes import OrchestratorProcess

__all__ = [
    "Anomaly",
    "Campaign",
    "Delivery",
    "DeliveryAttempt",
    "IdempotencyKey",
    "Job",
    "JobRollup",
    "Lane",
    "LedgerEntry",
    "NotificationChannel",
    "OrchestratorProcess",
]
