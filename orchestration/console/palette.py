"""Badge colours for the console, from the same palettes the admin uses.

The console's CSS classes (``b-<state>``, ``b-run-<status>``, …) are generated
from ``orchestration.choices.BADGE_COLORS`` and the apps' own colour maps, so a
state has one colour everywhere and a new state only needs a palette entry.
"""

from __future__ import annotations

from functools import lru_cache

from orchestration.choices import BADGE_COLORS
from pipeline.choices import STATUS_COLORS as PIPELINE_COLORS

LIGHT_BACKGROUNDS = {"#ffc107", "#0dcaf0", "#adb5bd"}

SEVERITY_COLORS = {"critical": "#b02a37", "high": "#dc3545", "medium": "#fd7e14", "low": "#6c757d"}
RUN_COLORS = {
    "queued": "#6c757d",
    "running": "#0d6efd",
    "succeeded": "#198754",
    "failed": "#dc3545",
    "timed_out": "#b02a37",
    "crashed": "#b02a37",
    "interrupted": "#fd7e14",
    "skipped": "#adb5bd",
    "unknown": "#6c757d",
}
GATE_COLORS = {"waiting": "#fd7e14", "approved": "#198754", "rejected": "#dc3545", "pending": "#adb5bd"}
EVENT_COLORS = {
    "job_started": "#0d6efd",
    "stage_started": "#0dcaf0",
    "stage_completed": "#198754",
    "stage_failed": "#dc3545",
    "gate_pause": "#fd7e14",
    "gate_approved": "#198754",
    "gate_rejected": "#dc3545",
    "job_resumed": "#0d6efd",
    "job_completed": "#198754",
    "job_failed": "#b02a37",
    "job_canceled": "#495057",
}


def _rules(prefix: str, colors: dict[str, str]) -> list[str]:
    out = []
    for state, color in colors.items():
        text = "#212529" if color in LIGHT_BACKGROUNDS else "#fff"
        out.append(f".{prefix}{state}{{background:{color};color:{text}}}")
    return out


@lru_cache(maxsize=1)
def badge_css() -> str:
    rules = _rules("b-", BADGE_COLORS)
    rules += _rules("b-sev-", SEVERITY_COLORS)
    rules += _rules("b-run-", RUN_COLORS)
    rules += _rules("b-pl-", PIPELINE_COLORS)
    rules += _rules("b-gate-", GATE_COLORS)
    rules += _rules("b-ev-", EVENT_COLORS)
    # Text colours for the queue tiles' status dots.
    rules += [f".dot-{state}{{background:{color}}}" for state, color in BADGE_COLORS.items()]
    return "".join(rules)
