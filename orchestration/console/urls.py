"""The console's pages and forms (mounted at the site root)."""

from django.urls import path, re_path

from orchestration.console import views

app_name = "console"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("console/summary", views.SummaryView.as_view(), name="summary"),
    path("console/loop/enable", views.loop_enable, name="loop-enable"),
    path("console/loop/disable", views.loop_disable, name="loop-disable"),
    path("console/loop/run-once", views.loop_run_once, name="loop-run-once"),
    path("services/", views.services_list, name="services"),
    path("services/<str:name>/", views.service_detail, name="service"),
    path("services/<str:name>/check", views.service_check, name="service-check"),
    path("services/<str:name>/reset-circuit", views.service_reset_circuit, name="service-reset"),
    path("services/<str:name>/enable", views.service_switch, {"enabled": True}, name="service-enable"),
    path("services/<str:name>/disable", views.service_switch, {"enabled": False}, name="service-disable"),
    path("workers/", views.workers_list, name="workers"),
    path("workers/<slug:name>/", views.worker_detail, name="worker"),
    path("workers/<slug:name>/trigger", views.worker_trigger, name="worker-trigger"),
    path("workers/<slug:name>/enable", views.worker_switch, {"enabled": True}, name="worker-enable"),
    path("workers/<slug:name>/disable", views.worker_switch, {"enabled": False}, name="worker-disable"),
    path("workers/<slug:name>/resume", views.worker_resume, name="worker-resume"),
    path("processes/", views.processes_list, name="processes"),
    path("actions/", views.actions_page, name="actions"),
    path("actions/<int:pk>/decide", views.action_decide, name="action-decide"),
    path("actions/guardrails/<int:pk>/resume", views.guardrail_resume, name="guardrail-resume"),
    path("anomalies/<int:pk>/acknowledge", views.anomaly_write, {"verb": "acknowledge"}, name="anomaly-acknowledge"),
    path("anomalies/<int:pk>/resolve", views.anomaly_write, {"verb": "resolve"}, name="anomaly-resolve"),
    path("pipelines/", views.pipelines_list, name="pipelines"),
    path("inbox/", views.inbox, name="inbox"),
    path("pipelines/start", views.pipeline_start, name="pipeline-start"),
    path("pipelines/<int:pk>/", views.pipeline_job_detail, name="pipeline-job"),
    path("pipelines/<int:pk>/decide", views.pipeline_decide, name="pipeline-decide"),
    path("pipelines/<int:pk>/resume", views.pipeline_resume, name="pipeline-resume"),
    path("pipelines/<int:pk>/cancel", views.pipeline_cancel, name="pipeline-cancel"),
    # Static files when DEBUG is off (see views.static_files for why).
    re_path(r"^static/(?P<path>.+)$", views.static_files, name="static"),
]
