from django.urls import path

from orchestration.loop.api import notifications, views
from orchestrator_site.api.routers import OptionalSlashRouter

# Included with the fleet's under one namespace, "orchestration-api" (orchestrator_site/urls.py).
router = OptionalSlashRouter()
router.register("jobs", views.JobViewSet, basename="job")
router.register("lanes", views.LaneViewSet, basename="lane")
router.register("ledger", views.LedgerViewSet, basename="ledger")
router.register("rules", views.RuleViewSet, basename="rule")
router.register("actions", views.ActionViewSet, basename="action")
router.register("guardrails", views.GuardrailViewSet, basename="guardrail")
router.register("automation-policies", views.AutomationPolicyViewSet, basename="automation-policy")
router.register("score-deductions", views.ScoreDeductionViewSet, basename="score-deduction")
router.register("escalation-policies", views.EscalationPolicyViewSet, basename="escalation-policy")
router.register("processes", views.ProcessViewSet, basename="process")
router.register("channels", notifications.ChannelViewSet, basename="channel")

urlpatterns = [
    path("", views.ApiRootView.as_view(), name="root"),
    path("healthz", views.HealthzView.as_view(), name="healthz"),
    *router.urls,
]
