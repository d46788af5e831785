"""Guardrails for every automatic remediation: the loop's actions, the fleet's
recoveries and routing's ejections all ask ``judge`` before they act. Pure: plain
data in, a verdict out; ``GuardrailCounter`` persists the counts and applies it.

Per automation and target (a rule and what it acts on, a recovery strategy and its
worker, the ejection and its service):

- **rate limit** — at most ``max_per_hour`` runs in the current hour; further ones are
  held back until the hour is over;
- **loop protection** — more than ``loop_limit`` attempts in the hour (run or held back:
  the condition keeps coming back whatever the remediation does) pauses the automation
  for that target until a person resumes it; the caller raises an anomaly and alerts;
- **risk tiers** — a rule in ``approval`` mode (the default of risky actions) waits for a
  person's approval; only a person switches a rule to ``automatic``;
- **verification** — a later cycle checks whether the triggering condition cleared
  (``cleared``), which makes the action effective or not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from orchestration.loop.decider import holds

HOUR = timedelta(hours=1)

RUN = "run"
APPROVAL = "approval"
RATE_LIMITED = "rate_limited"
PAUSED = "paused"
TRIPPED = "tripped"  # loop protection paused it just now


@dataclass(frozen=True)
class Policy:
    """How one automation may act; 0 switches a limit off."""

    max_per_hour: int = 0
    loop_limit: int = 0
    needs_approval: bool = False


@dataclass(frozen=True)
class Counter:
    """The persisted counts of one (automation, target) for the hour that started at
    ``window_started_at``."""

    window_started_at: datetime | None = None
    attempts: int = 0
    runs: int = 0
    paused_at: datetime | None = None

    def current(self, now: datetime) -> Counter:
        """The counts for the hour ``now`` falls in: a new hour starts from zero (a pause
        stays: only a person lifts it)."""
        if self.window_started_at is None or now - self.window_started_at >= HOUR:
            return replace(self, window_started_at=now, attempts=0, runs=0)
        return self


@dataclass(frozen=True)
class Verdict:
    outcome: str
    counter: Counter
    reason: str = ""

    @property
    def runs(self) -> bool:
        return self.outcome == RUN


def judge(policy: Policy, counter: Counter, now: datetime, *, approved: bool = False) -> Verdict:
    """May the automation act on this target now? ``approved``: a person approved this
    very action, which then runs whatever the counts (and is counted)."""
    counter = counter.current(now)
    if counter.paused_at is not None and not approved:
        return Verdict(PAUSED, counter, f"paused since {counter.paused_at:%Y-%m-%d %H:%M} UTC after a remediation loop")
    counter = replace(counter, attempts=counter.attempts + 1)
    if approved:
        return Verdict(RUN, replace(counter, runs=counter.runs + 1), "approved by a person")
    if policy.loop_limit and counter.attempts > policy.loop_limit:
        return Verdict(
            TRIPPED,
            replace(counter, paused_at=now),
            f"{counter.attempts} attempts within the hour (loop protection above {policy.loop_limit}): "
            "paused for this target until a person resumes it",
        )
    if policy.max_per_hour and counter.runs >= policy.max_per_hour:
        return Verdict(
            RATE_LIMITED,
            counter,
            f"already ran {counter.runs} times this hour on this target (limit {policy.max_per_hour})",
        )
    if policy.needs_approval:
        return Verdict(APPROVAL, counter, "waits for a person's approval (risky, or its rule asks for approval)")
    return Verdict(RUN, replace(counter, runs=counter.runs + 1))


def needs_approval(mode: str, risky: bool) -> bool:
    """A rule in approval mode always waits; an automatic one never does. A rule with
    no mode set yet follows its action's risk."""
    if mode:
        return mode == "approval"
    return risky


def default_mode(risky: bool) -> str:
    return "approval" if risky else "automatic"


# --- verification --------------------------------------------------------------------
def cleared(conditions: list[dict[str, Any]], snapshot: dict[str, Any]) -> bool | None:
    """Did the triggering condition clear? True when any of the ANDed conditions no
    longer holds; None when there is nothing to check against."""
    if not conditions:
        return None
    return not all(holds(condition, snapshot)[0] for condition in conditions)


def expired(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is not None and now >= expires_at


@dataclass(frozen=True)
class Effectiveness:
    verified: int
    effective: int

    @property
    def rate(self) -> float | None:
        return round(self.effective / self.verified, 3) if self.verified else None

    def as_dict(self) -> dict[str, Any]:
        return {"verified": self.verified, "effective": self.effective, "rate": self.rate}


def effectiveness(outcomes: Iterable[bool | None]) -> Effectiveness:
    """Per rule: of its verified actions, how many cleared their condition."""
    known = [o for o in outcomes if o is not None]
    return Effectiveness(len(known), sum(1 for o in known if o))
