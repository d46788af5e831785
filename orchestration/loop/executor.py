"""Executor: a registry of action handlers, and the loop that runs planned actions.

Contract for a handler::

    @action_handler("retry_failed", description="…")
    def retry_failed(action: PlannedAction, ctx: ActionContext) -> dict: ...

It does real work, returns a JSON-serialisable summary of what it changed (counts,
ids), and raises on failure. It must be safe to run again next cycle: act only on
rows that still need it. ``risky`` (a bool, or a function of the action's params)
marks an action that waits for a person's approval unless its rule is automatic.
One failing handler never stops the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestration.loop.decider import PlannedAction


@dataclass
class ActionContext:
    snapshot: dict[str, Any]
    now: datetime
    cycle: int
    actor: str = "orchestrator"


Handler = Callable[[PlannedAction, ActionContext], dict[str, Any]]


Risk = bool | Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class ActionKind:
    name: str
    handler: Handler
    description: str
    risky: Risk = False

    def is_risky(self, params: dict[str, Any]) -> bool:
        return bool(self.risky(params) if callable(self.risky) else self.risky)


_HANDLERS: dict[str, ActionKind] = {}


class UnknownAction(LookupError):
    pass


def action_handler(name: str, *, description: str = "", risky: Risk = False) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        doc = (func.__doc__ or "").strip()
        _HANDLERS[name] = ActionKind(name, func, description or (doc.splitlines()[0] if doc else name), risky)
        return func

    return register


def is_risky(name: str, params: dict[str, Any]) -> bool:
    """Whether this action, with these params, is a risky one (an unknown action is not:
    it cannot run anyway)."""
    kind = _HANDLERS.get(name)
    return kind.is_risky(params) if kind else False


def action_types() -> dict[str, str]:
    return {name: kind.description for name, kind in sorted(_HANDLERS.items())}


def get_handler(name: str) -> ActionKind:
    try:
        return _HANDLERS[name]
    except KeyError:
        raise UnknownAction(f"no handler for action {name!r}") from None


@dataclass
class ActionResult:
    action: PlannedAction
    ok: bool
    result: dict[str, Any]
    error: str
    duration_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.action.as_dict(),
            "success": self.ok,
            "result": self.result,
            "error": self.error,
            "duration_ms": self.duration_ms,
        }


def execute(actions: list[PlannedAction], ctx: ActionContext) -> list[ActionResult]:
    results = []
    for action in actions:
        started = time.perf_counter()
        try:
            result = get_handler(action.type).handler(action, ctx) or {}
            ok, error = True, ""
        except Exception as exc:  # isolation: the next action still runs
            result, ok, error = {}, False, f"{type(exc).__name__}: {exc}"
        results.append(ActionResult(action, ok, result, error, round((time.perf_counter() - started) * 1000, 2)))
    return results
