"""Action handlers the default health rules use."""

from __future__ import annotations

from health.models import Service, ServiceAlert, breaker_name
from orchestration.core.choices import Severity
from orchestration.core.models.ledger import record
from orchestration.loop.decider import PlannedAction
from orchestration.loop.executor import ActionContext, action_handler


@action_handler("service_alert")
def service_alert(action: PlannedAction, ctx: ActionContext) -> dict:
    """Ledger alert about services, naming each root cause once with the dependents it
    explains (params: severity)."""
    severity = action.params.get("severity", Severity.WARNING)
    if severity not in Severity.values:
        raise ValueError(f"unknown severity {severity!r}")
    alerts = list(
        ServiceAlert.objects.filter(resolved_at__isnull=True).select_related("service").order_by("service__name")
    )
    open_circuits = sorted(Service.objects.enabled().filter(circuit__state="open").values_list("name", flat=True))
    causes = [
        f"{a.service.name}" + (f" (also failing because of it: {', '.join(a.affected)})" if a.affected else "")
        for a in alerts
    ]
    parts = [action.reason or "Service health needs attention"]
    if open_circuits:
        parts.append(f"circuits open: {', '.join(open_circuits)}")
    if causes:
        parts.append(f"root causes: {'; '.join(causes)}")
    entry = record(
        "health.alert",
        " — ".join(parts),
        severity=severity,
        subject=breaker_name(alerts[0].service.name) if len(alerts) == 1 else "services",
        data={
            "rule": action.rule,
            "trigger": action.trigger,
            "open_circuits": open_circuits,
            "root_causes": [{"service": a.service.name, "affected": a.affected} for a in alerts],
            "overall_health": ctx.snapshot.get("services", {}).get("overall_health"),
        },
        actor=ctx.actor,
    )
    return {"ledger_entry": entry.pk, "open_circuits": open_circuits, "root_causes": [a.service.name for a in alerts]}
