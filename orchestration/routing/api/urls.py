from django.urls import path

from orchestration.routing.api import views as api
from orchestrator_site.api.routers import OptionalSlashRouter

app_name = "routing-api"

router = OptionalSlashRouter()
router.register("suggestions", api.SuggestionViewSet, basename="suggestion")
router.register("routing/contexts", api.ContextViewSet, basename="context")
router.register("routing/multipliers", api.MultiplierViewSet, basename="multiplier")

urlpatterns = [
    path("routing/route", api.RouteView.as_view(), name="route"),
    path("routing/tasks", api.TaskView.as_view(), name="tasks"),
    path("routing/prioritize", api.PrioritizeView.as_view(), name="prioritize"),
    path("routing/stats", api.StatsView.as_view(), name="stats"),
    path("routing/memory", api.MemoryView.as_view(), name="memory"),
    path("routing/ejections", api.EjectionsView.as_view(), name="ejections"),
    path("routing/modules", api.ModulesView.as_view(), name="modules"),
    *router.urls,
]
