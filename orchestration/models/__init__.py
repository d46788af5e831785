from orchestration.models.idempotency import IdempotencyKey
from orchestration.models.jobs import Campaign, Job, JobRollup, Lane
from orchestration.models.ledger import LedgerEntry
from orchestration.models.loop import Action, ChannelWindow, LoopState, Rule, ScoreDeduction
from orchestration.models.processes import OrchestratorProcess
from orchestration.models.workers import Anomaly, ScoreReport, Worker, WorkerRun

__all__ = ["Action", "Campaign", "ChannelWindow", "Job", "Lane", "LedgerEntry", "LoopState", "Rule"]
__all__ += ["Anomaly", "ScoreReport", "Worker", "WorkerRun"]
__all__ += ["OrchestratorProcess"]
__all__ += ["IdempotencyKey"]
__all__ += ["JobRollup"]
__all__ += ["ScoreDeduction"]
