"""The ``orchestration`` app's models, as Django finds them. Each lives in its layer
(core, loop, fleet); code imports them from there, never from here."""

from orchestration.core.models import (
    Anomaly,
    Campaign,
    Delivery,
    DeliveryAttempt,
    IdempotencyKey,
    Job,
    JobRollup,
    Lane,
    LedgerEntry,
    NotificationChannel,
    OrchestratorProcess,
)
from orchestration.fleet.models import ScoreReport, Worker, WorkerRun
from orchestration.loop.models import (
    Action,
    AutomationPolicy,
    ChannelWindow,
    GuardrailCounter,
    LoopState,
    Rule,
    ScoreDeduction,
)

__all__ = ["Action", "Campaign", "ChannelWindow", "Job", "Lane", "LedgerEntry", "LoopState", "Rule"]
__all__ += ["Anomaly", "ScoreReport", "Worker", "WorkerRun"]
__all__ += ["OrchestratorProcess"]
__all__ += ["IdempotencyKey"]
__all__ += ["JobRollup"]
__all__ += ["AutomationPolicy", "GuardrailCounter", "ScoreDeduction"]
__all__ += ["Delivery", "DeliveryAttempt", "NotificationChannel"]
