from health.api import views
from orchestrator_site.api.routers import OptionalSlashRouter

app_name = "health-api"

router = OptionalSlashRouter()
router.register("services", views.ServiceViewSet, basename="service")
router.register("maintenance", views.MaintenanceWindowViewSet, basename="maintenance")
router.register("service-alerts", views.ServiceAlertViewSet, basename="service-alert")

urlpatterns = router.urls
