"""Every state the console shows as a badge has a colour (a new state without one
would render as a grey, unreadable pill)."""

from __future__ import annotations

import re

from health.choices import BreakerState, ServiceHealth
from orchestration.console.palette import badge_css
from orchestration.core.choices import ActionStatus, AnomalySeverity, JobStatus, Severity
from orchestration.fleet.choices import RunStatus
from pipeline import transitions as t
from pipeline.choices import EventType


def classes() -> set[str]:
    return set(re.findall(r"\.(b-[a-z_-]+)\{", badge_css()))


def test_every_state_has_a_badge_colour():
    have = classes()
    wanted = {f"b-{v}" for v in [*JobStatus.values, *Severity.values, *ActionStatus.values]}
    wanted |= {f"b-{v}" for v in [*ServiceHealth.values, *BreakerState.values, "enabled", "disabled"]}
    wanted |= {f"b-sev-{v}" for v in AnomalySeverity.values}
    wanted |= {f"b-run-{v}" for v in RunStatus.values}
    wanted |= {f"b-pl-{v}" for v in t.STATUSES}
    wanted |= {f"b-ev-{v}" for v in EventType.values}
    wanted |= {f"b-gate-{v}" for v in ("waiting", "approved", "rejected", "pending")}
    assert wanted - have == set()


def test_light_backgrounds_get_dark_text():
    css = badge_css()
    assert ".b-warning{background:#ffc107;color:#212529}" in css
    assert ".b-failed{background:#dc3545;color:#fff}" in css
