from orchestration.core.models.anomalies import Anomaly, AnomalyStateError
from orchestration.core.models.escalation import EscalationPolicy
from orchestration.core.models.idempotency import IdempotencyKey
from orchestration.core.models.jobs import Campaign, Job, JobRollup, Lane
from orchestration.core.models.ledger import LedgerEntry
from orchestration.core.models.notifications import Delivery, DeliveryAttempt, NotificationChannel
from orchestration.core.models.processes import OrchestratorProcess

__all__ = [
    "Anomaly",
    "AnomalyStateError",
    "Campaign",
    "Delivery",
    "DeliveryAttempt",
    "EscalationPolicy",
    "IdempotencyKey",
    "Job",
    "JobRollup",
    "Lane",
    "LedgerEntry",
    "NotificationChannel",
    "OrchestratorProcess",
]
