from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from orchestration.fleet.api import urls as fleet_api
from orchestration.fleet.demo_targets import demo_worker_endpoint
from orchestration.loop.api import urls as loop_api

# The queue's, the loop's and the fleet's endpoints answer under one URL namespace.
orchestration_api = (loop_api.urlpatterns + fleet_api.urlpatterns, "orchestration-api")

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The docs' initialisation script from its own URL (?script), not inline: the CSP forbids inline script.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/pipeline/", include("pipeline.api.urls")),
    path("api/v1/", include(orchestration_api)),
    path("api/v1/", include("health.api.urls")),
    path("api/v1/", include("orchestration.routing.api.urls")),
    path("", include("orchestration.loop.api.loop_urls")),
    path("", include("health.urls")),
    path("", include("pipeline.urls")),
    path("demo/workers/<slug:name>", demo_worker_endpoint, name="demo-worker"),
    path("", include("orchestration.console.metrics_urls")),
    path("", include("orchestration.console.urls")),
]

handler400 = "orchestration.console.views.bad_request"
handler403 = "orchestration.console.views.permission_denied"
handler404 = "orchestration.console.views.page_not_found"
handler500 = "orchestration.console.views.server_error"
