"""The console: server-rendered pages over the same models and service functions the
API uses. Every page is made of named panels; ``?live=1`` returns those panels as
JSON (HTML fragments plus a few numbers), which static/console/console.js polls to
update the page without a reload.

Writes are plain HTML forms (CSRF-protected), checked against the same permissions
as the API (staff, or the specific permission such as ``pipeline.approve_gate``),
and they call the same model methods and domain functions as the API and the admin
(``LoopState.enable``, ``Worker.set_enabled``, ``Service.reset_circuit``,
pipeline.engine…), so the ledger records them alike, with the person who clicked.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.views import redirect_to_login
from django.contrib.staticfiles.views import serve as staticfiles_serve
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from health.choices import BreakerState, CheckKindChoice
from health.models import DependencyError, Service
from orchestration.console import copies, data, service_list
from orchestration.console.forms import GateDecisionForm, LoopIntervalForm, StartPipelineForm
from orchestration.core.models import Anomaly, AnomalyStateError
from orchestration.core.redaction import redact_html
from orchestration.fleet.models import Worker
from orchestration.fleet.runner import WorkerStateError
from orchestration.fleet.runner import trigger as trigger_worker
from orchestration.loop.cycle import CycleBusy, run_cycle
from orchestration.loop.models import Action, ActionStateError, GuardrailCounter, LoopState
from pipeline import engine, people
from pipeline import transitions as t
from pipeline import views as gate_pages
from pipeline.models import PipelineJob

LOGIN_URL = "/login/"
# How often pages poll for fresh panels (milliseconds); short enough to feel live,
# long enough that a handful of open tabs cost the database nothing noticeable.
POLL_MS = 2500


# --- access -------------------------------------------------------------------------------
def console_login_required(view: Callable) -> Callable:
    """Anonymous people go to the login page; a live poll gets a 401 JSON instead (the
    script then reloads the page, which lands on the login page)."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            if request.GET.get("live"):
                return JsonResponse({"detail": "Authentication credentials were not provided."}, status=401)
            return redirect_to_login(request.get_full_path(), LOGIN_URL)
        return view(request, *args, **kwargs)

    return wrapper


def can_control(user) -> bool:
    """Loop, services, workers: the API lets staff write these."""
    return bool(user.is_staff)


def can_decide(user) -> bool:
    return bool(user.is_staff or user.has_perm("pipeline.approve_gate"))


def can_change_pipeline(user) -> bool:
    return bool(user.is_staff or user.has_perm("pipeline.change_pipelinejob"))


def can_start_pipeline(user) -> bool:
    return bool(user.is_staff or user.has_perm("pipeline.add_pipelinejob"))


def _require(allowed: bool, what: str) -> None:
    if not allowed:
        raise PermissionDenied(f"You are signed in without permission to {what}. Ask an administrator for access.")


def actor(request: HttpRequest) -> str:
    return request.user.get_username() or "anonymous"


# --- rendering ----------------------------------------------------------------------------
def _permissions(request: HttpRequest) -> dict[str, Any]:
    decider = can_decide(request.user)
    return {
        "can_control": can_control(request.user),
        "can_decide": decider,
        # The navigation's "waiting for me" count.
        "inbox_count": _inbox_count(request) if decider else 0,
        "can_change_pipeline": can_change_pipeline(request.user),
        "can_start_pipeline": can_start_pipeline(request.user),
    }


def _inbox_count(request: HttpRequest) -> int:
    """Shared a few seconds like the panels (copies.py): every page shows it, and reading
    the gates a person may decide cost about a millisecond a page."""

    user = request.user

    def build() -> copies.Copy:
        return copies.Copy(taken_at=timezone.now(), data={"n": len(people.inbox(user))})

    return copies.take(("inbox", request.user.pk), build, fresh=copies.wants_fresh(request)).data["n"]


def render_page(
    request: HttpRequest,
    template: str,
    panels: dict[str, str],
    context: dict[str, Any],
    *,
    status: int = 200,
    extra_json: dict[str, Any] | None = None,
    shown: copies.Copy | None = None,
    whole: bool = False,
    permissions: dict[str, Any] | None = None,
) -> HttpResponse:
    """``shown``: panels read and rendered once for many requests (copies.py); the
    page then says when they were read. ``whole``: the page shows nothing but them
    and the reader's navigation, so it is rendered once for many as well.
    ``permissions``: the reader's (_permissions), when the view read them already."""
    permissions = _permissions(request) if permissions is None else permissions
    context = {
        **permissions,
        "poll_ms": POLL_MS,
        "now": timezone.now(),
        **context,
    }
    copied = shown.html if shown is not None else {}
    if shown is not None:
        context["shown"], context["copy_max_age"] = shown, settings.CONSOLE_COPY_MAX_AGE_SECONDS
    if request.GET.get("live"):
        body = {
            # As old as its oldest part: a copy's panels were read when it was taken.
            "generated_at": (shown.taken_at if shown is not None else context["now"]).isoformat(),
            # Pages are masked by RedactHtmlMiddleware; these panels travel inside JSON
            # (a copy's were masked when it was made).
            "panels": {
                name: _own_token(request, copied[name])
                if name in copied
                else redact_html(render_to_string(tpl, context, request))
                for name, tpl in panels.items()
            },
            **(extra_json or {}),
        }
        response = JsonResponse(body)
        response["Cache-Control"] = "no-store"
        return response
    if shown is None:
        return render(request, template, context, status=status)
    if whole and status == 200 and not copies.wants_fresh(request):
        return _copied_page(request, template, context, shown, permissions)
    response = render(request, template, context, status=status)
    response.content = _own_token(request, response.content.decode()).encode()
    return response


# Stands for the reader's CSRF token in what is rendered once for many: panels with
# forms, whole pages. Beyond the reader and their permissions (in the key of what holds
# it), the token is all that differs between readers.
CSRF_STAND_IN = "csrf-token-of-this-request"


def _own_token(request: HttpRequest, html: str) -> str:
    return mark_safe(html.replace(CSRF_STAND_IN, get_token(request))) if CSRF_STAND_IN in html else html


def _copied_page(
    request: HttpRequest, template: str, context: dict[str, Any], shown: copies.Copy, permissions: dict[str, Any]
) -> HttpResponse:
    """The whole page, rendered once per copy of its panels and per reader (the
    navigation names them and counts their inbox): rendering the page around copied
    panels, and masking it, were most of what was left of a request's CPU. The footer's
    time is then when this page was rendered, as the copy note above says."""
    key = (template, request.user.pk, shown.copied, *((name, context[name]) for name in permissions))
    page = shown.pages.get(key)
    if page is None:
        html = render_to_string(template, {**context, "csrf_token": CSRF_STAND_IN}, request)
        page = shown.pages[key] = redact_html(html)
    response = HttpResponse(page.replace(CSRF_STAND_IN, get_token(request)))
    response.masked = True  # masked when it was rendered (RedactHtmlMiddleware)
    return response


def _copied_panels(
    request: HttpRequest,
    key: tuple,
    builders: dict[str, Callable[[Any], Any]],
    templates: dict[str, str],
) -> copies.Copy:
    """What ``builders`` read, and the panels of ``templates`` rendered from it, shared
    for a few seconds by the requests of this process that see them alike (copies.py):
    those templates differ for staff only (links to the admin), and have no forms."""

    user = request.user  # (the build may run after this request, in another thread)

    def build() -> copies.Copy:
        now = timezone.now()
        values = {name: builder(now) for name, builder in builders.items()}
        context = {"poll_ms": POLL_MS, "now": now, "user": user, **values}
        html = {name: redact_html(render_to_string(tpl, context)) for name, tpl in templates.items()}
        html = {name: mark_safe(text) for name, text in html.items()}  # masked, of our own templates
        return copies.Copy(taken_at=now, data=values, html=html)

    return copies.take((*key, request.user.is_staff), build, fresh=copies.wants_fresh(request))


def _back(request: HttpRequest, fallback: str) -> HttpResponse:
    target = request.POST.get("next") or ""
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = fallback
    return redirect(target or fallback)


# --- dashboard ----------------------------------------------------------------------------
DASHBOARD_PANELS = {
    "health": "console/panels/health.html",
    "queue": "console/panels/queue.html",
    "services": "console/panels/services.html",
    "workers": "console/panels/workers.html",
    "anomalies": "console/panels/anomalies.html",
    "gates": "console/panels/gates.html",
    "routing": "console/panels/routing.html",
    "activity": "console/panels/activity.html",
}


# Dashboard panels without forms: read and rendered once for many requests (copies.py);
# each is read by data.<name>_panel.
COPIED_DASHBOARD_PANELS = ("queue", "services", "workers", "anomalies", "routing", "activity")
# Read once for many requests too, but rendered for each: their panels hold forms.
READ_ONCE = ("loop", "gates")


def _dashboard(
    request: HttpRequest,
    *,
    status: int = 200,
    loop_form: LoopIntervalForm | None = None,
    gate_forms: dict[int, GateDecisionForm] | None = None,
    start_form: StartPipelineForm | None = None,
) -> HttpResponse:
    builders = {name: getattr(data, f"{name}_panel") for name in (*COPIED_DASHBOARD_PANELS, *READ_ONCE)}
    templates = {name: DASHBOARD_PANELS[name] for name in COPIED_DASHBOARD_PANELS}
    shown = _copied_panels(request, ("dashboard",), builders, templates)
    loop = shown.data["loop"]
    bound = gate_forms or {}
    # New rows: the copy's are shared by other requests.
    gates = {
        **shown.data["gates"],
        "waiting": [
            {
                **row,
                "form": bound.get(row["job"].pk)
                or GateDecisionForm(initial={"stage": row["job"].stage}, auto_id=f"gate-{row['job'].pk}-%s"),
            }
            for row in shown.data["gates"]["waiting"]
        ],
    }
    context = {
        **shown.data,
        "loop": loop,
        "loop_form": loop_form or LoopIntervalForm(initial={"interval_seconds": loop["state"].interval_seconds}),
        "gates": gates,
        "start_form": start_form or StartPipelineForm(auto_id="start-%s"),
        "page": "dashboard",
    }
    extra = {
        "summary": {
            "health_score": loop["score"],
            "health_status": loop["status"],
            "cycle_count": loop["state"].cycle_count,
            "jobs": context["queue"]["by_status"],
            "gates_waiting": len(gates["waiting"]),
        }
    }
    permissions = _permissions(request)
    unbound = not (loop_form or gate_forms or start_form)
    if unbound:
        shown = _with_form_panels(request, shown, context, permissions)
    return render_page(
        request,
        "console/dashboard.html",
        DASHBOARD_PANELS,
        context,
        status=status,
        extra_json=extra,
        shown=shown,
        whole=unbound,
        permissions=permissions,
    )


FORM_PANELS = ("health", "gates")


def _with_form_panels(
    request: HttpRequest, shown: copies.Copy, context: dict[str, Any], permissions: dict[str, Any]
) -> copies.Copy:
    """``shown`` with the loop's and the gates' panels (unbound forms) rendered once per
    copy of the data they show and per set of permissions, each request's own CSRF
    token put in; rendered per request they were a third of the dashboard's CPU."""
    permissions = {name: value for name, value in permissions.items() if name != "inbox_count"}
    user = request.user

    def build() -> copies.Copy:
        values = {**context, **permissions, "user": user, "poll_ms": POLL_MS, "csrf_token": CSRF_STAND_IN}
        html = {name: redact_html(render_to_string(DASHBOARD_PANELS[name], values)) for name in FORM_PANELS}
        return copies.Copy(taken_at=shown.taken_at, html=html)

    key = ("dashboard-forms", shown.taken_at, user.is_staff, *sorted(permissions.items()))
    forms = copies.take(key, build, refresh=False)
    # The stand-in stays: render_page puts in the request's token.
    return replace(shown, html={**shown.html, **{name: mark_safe(html) for name, html in forms.html.items()}})


@console_login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    return _dashboard(request)


class SummaryView(APIView):
    """The dashboard's numbers as JSON (no HTML), for scripts: a session or a Bearer
    token, like the rest of the API (no credentials → 401)."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, summary="Console summary")
    def get(self, request):
        return Response(data.summary())


# --- loop control -------------------------------------------------------------------------
@require_POST
@console_login_required
def loop_enable(request: HttpRequest) -> HttpResponse:
    _require(can_control(request.user), "control the loop")
    form = LoopIntervalForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The loop was not enabled: fix the interval below.")
        return _dashboard(request, status=400, loop_form=form)
    state = LoopState.enable(form.cleaned_data.get("interval_seconds"), actor=actor(request))
    messages.success(request, f"Loop enabled: a cycle every {state.interval_seconds:g} s.")
    return _back(request, reverse("console:dashboard"))


@require_POST
@console_login_required
def loop_disable(request: HttpRequest) -> HttpResponse:
    _require(can_control(request.user), "control the loop")
    LoopState.disable(actor=actor(request))
    messages.success(request, "Loop disabled: no cycles run until it is enabled again.")
    return _back(request, reverse("console:dashboard"))


@require_POST
@console_login_required
def loop_run_once(request: HttpRequest) -> HttpResponse:
    _require(can_control(request.user), "control the loop")
    dry_run = request.POST.get("dry_run") in ("1", "on", "true")
    try:
        result = run_cycle(dry_run=dry_run, manual=True, actor=actor(request))
    except CycleBusy as exc:
        messages.warning(request, f"No cycle run: {exc}.")
        return _back(request, reverse("console:dashboard"))
    system = result["snapshot"]["system"]
    execution = result["execution"]
    # The score comes with what lowered it.
    lost = "".join(f"; −{d['points']} {d['reason']}" for d in system.get("deductions", []))
    messages.success(
        request,
        f"Cycle {result['cycle']}{' (dry run)' if dry_run else ''}: health {system['health_score']} "
        f"({system['status']}{lost}) — "
        f"{result['decision']['summary']}; "
        f"{execution['succeeded']} succeeded, {execution['failed']} failed.",
    )
    return _back(request, reverse("console:dashboard"))


@require_POST
@console_login_required
def pipeline_start(request: HttpRequest) -> HttpResponse:
    _require(can_start_pipeline(request.user), "start pipeline jobs")
    form = StartPipelineForm(request.POST, auto_id="start-%s")
    if not form.is_valid():
        messages.error(request, "No job started: see the form.")
        return _dashboard(request, status=400, start_form=form)
    job = engine.create_job(
        form.cleaned_data["slug"],
        form.cleaned_data["intent"],
        definition=form.cleaned_data["definition"],
        actor=actor(request),
    )
    messages.success(request, f"Pipeline job {job} started at {job.stage}.")
    return redirect("console:pipeline-job", pk=job.pk)


# --- lists ----------------------------------------------------------------------------------
@console_login_required
def services_list(request: HttpRequest) -> HttpResponse:
    try:
        query = service_list.parse(request.GET)
    except service_list.FilterError as exc:
        return _error(request, 400, "Bad filter", f"{exc.field}: {exc}")
    panels = {"services": "console/panels/services.html"}
    shown = _copied_panels(
        request,
        ("services", query.query_string(after=query.after)),
        {"services": functools.partial(data.services_panel, query=query)},
        panels,
    )
    context = {**shown.data, "page": "services", "breakers": BreakerState.values, "kinds": CheckKindChoice.values}
    return render_page(request, "console/services.html", panels, context, shown=shown, whole=True)


@console_login_required
def workers_list(request: HttpRequest) -> HttpResponse:
    context = {"workers": data.workers_panel(timezone.now()), "page": "workers"}
    return render_page(request, "console/workers.html", {"workers": "console/panels/workers.html"}, context)


@console_login_required
def processes_list(request: HttpRequest) -> HttpResponse:
    context = {"processes": data.processes_panel(timezone.now()), "page": "processes"}
    return render_page(request, "console/processes.html", {"processes": "console/panels/processes.html"}, context)


@console_login_required
def pipelines_list(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status") or None
    if status and status not in t.STATUSES:
        return _error(
            request, 400, "Unknown status", f"There is no status {status!r}; use one of {', '.join(t.STATUSES)}."
        )
    context = {"pipelines": data.pipelines_page(timezone.now(), status), "page": "pipelines"}
    panels = {"pipelines": "console/panels/pipelines.html"}
    return render_page(request, "console/pipelines.html", panels, context)


# --- services -------------------------------------------------------------------------------
SERVICE_PANELS = {"service": "console/panels/service.html"}


@console_login_required
def service_detail(request: HttpRequest, name: str) -> HttpResponse:
    service = get_object_or_404(Service.objects.select_related("circuit"), name=name)
    context = {**data.service_page(service, timezone.now()), "page": "service"}
    return render_page(request, "console/service.html", SERVICE_PANELS, context)


@require_POST
@console_login_required
def service_check(request: HttpRequest, name: str) -> HttpResponse:
    _require(can_control(request.user), "check services")
    service = get_object_or_404(Service, name=name)
    if not service.enabled:
        messages.warning(request, f"{service.name} is disabled; enable it before checking it.")
    else:
        sweep = service.check_now(actor=actor(request))
        outcome = sweep.as_dict()
        messages.success(
            request,
            f"Checked {service.name}: {len(outcome.get('failed', []))} failed, "
            f"{len(outcome.get('skipped_circuit_open', []))} skipped (circuit open).",
        )
    return _back(request, reverse("console:service", args=[service.name]))


@require_POST
@console_login_required
def service_reset_circuit(request: HttpRequest, name: str) -> HttpResponse:
    _require(can_control(request.user), "reset circuit breakers")
    service = get_object_or_404(Service, name=name)
    service.reset_circuit(actor=actor(request))
    messages.success(request, f"Circuit of {service.name} reset to closed.")
    return _back(request, reverse("console:service", args=[service.name]))


@require_POST
@console_login_required
def service_switch(request: HttpRequest, name: str, enabled: bool) -> HttpResponse:
    _require(can_control(request.user), "enable or disable services")
    service = get_object_or_404(Service, name=name)
    try:
        changed = service.set_enabled(enabled, actor=actor(request))
    except DependencyError as exc:
        # The API's 409: dependents first.
        messages.error(request, f"{service.name} stays enabled: {exc}.")
        return _back(request, reverse("console:service", args=[service.name]))
    state = "enabled" if enabled else "disabled"
    messages.success(request, f"{service.name} {state}." if changed else f"{service.name} was already {state}.")
    return _back(request, reverse("console:service", args=[service.name]))


# --- workers --------------------------------------------------------------------------------
WORKER_PANELS = {"worker": "console/panels/worker.html"}


@console_login_required
def worker_detail(request: HttpRequest, name: str) -> HttpResponse:
    worker = get_object_or_404(Worker, name=name)
    context = {**data.worker_page(worker, timezone.now()), "page": "worker"}
    return render_page(request, "console/worker.html", WORKER_PANELS, context)


@require_POST
@console_login_required
def worker_trigger(request: HttpRequest, name: str) -> HttpResponse:
    _require(can_control(request.user), "trigger workers")
    worker = get_object_or_404(Worker, name=name)
    try:
        with transaction.atomic():
            run = trigger_worker(worker, actor=actor(request))
    except WorkerStateError as exc:
        messages.error(request, f"Not triggered: {exc}.")
        return _back(request, reverse("console:worker", args=[worker.name]))
    messages.success(request, f"Run {run.execution_id[:8]} of {worker.name} queued.")
    return _back(request, reverse("console:worker", args=[worker.name]))


@require_POST
@console_login_required
def worker_switch(request: HttpRequest, name: str, enabled: bool) -> HttpResponse:
    _require(can_control(request.user), "enable or disable workers")
    worker = get_object_or_404(Worker, name=name)
    state = "enabled" if enabled else "disabled"
    if worker.set_enabled(enabled, actor=actor(request)):
        messages.success(request, f"{worker.name} {state}.")
    else:
        messages.info(request, f"{worker.name} was already {state}.")
    return _back(request, reverse("console:worker", args=[worker.name]))


@require_POST
@console_login_required
def worker_resume(request: HttpRequest, name: str) -> HttpResponse:
    _require(can_control(request.user), "resume workers")
    worker = get_object_or_404(Worker, name=name)
    if worker.resume(actor=actor(request)):
        messages.success(request, f"{worker.name} resumed; its schedule goes on from now.")
    else:
        messages.info(request, f"{worker.name} was not paused.")
    return _back(request, reverse("console:worker", args=[worker.name]))


# --- pipeline jobs --------------------------------------------------------------------------
PIPELINE_PANELS = {"pipeline": "console/panels/pipeline.html"}


def _pipeline_page(
    request: HttpRequest,
    job: PipelineJob,
    *,
    status: int = 200,
    form: GateDecisionForm | None = None,
    values: dict | None = None,
    input_errors: dict | None = None,
) -> HttpResponse:
    context = {**data.pipeline_job_page(job, timezone.now()), "page": "pipeline"}
    context["form"] = form or GateDecisionForm(initial={"stage": job.stage}, auto_id=f"gate-{job.pk}-%s")
    # The gate's input_schema as form fields (the same fields as a decision link's page).
    context["input_fields"] = gate_pages.form_fields(job.policy().input_schema, values, input_errors)
    # Errors by the input fields keep the form still: a live update would erase them.
    context["hold_gate_form"] = bool(input_errors)
    return render_page(request, "console/pipeline_job.html", PIPELINE_PANELS, context, status=status)


@console_login_required
def pipeline_job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(PipelineJob.objects.select_related("definition"), pk=pk)
    return _pipeline_page(request, job)


@console_login_required
def inbox(request: HttpRequest) -> HttpResponse:
    """Jobs waiting at a gate for the signed-in person, each with its decision form."""
    rows = [
        {"job": job, "fields": gate_pages.form_fields(job.policy().input_schema), "gate": job.policy()}
        for job in people.inbox(request.user)
    ]
    # The count beside the link is this list's, not a shared copy's.
    return render_page(request, "console/inbox.html", {}, {"rows": rows, "page": "inbox", "inbox_count": len(rows)})


@require_POST
@console_login_required
def pipeline_decide(request: HttpRequest, pk: int) -> HttpResponse:
    """Approve or reject a waiting gate through pipeline.engine (the API's path)."""
    _require(can_decide(request.user), "approve or reject pipeline gates")
    job = get_object_or_404(PipelineJob.objects.select_related("definition"), pk=pk)
    from_page = request.POST.get("from") == "job"
    form = GateDecisionForm(request.POST, auto_id=f"gate-{job.pk}-%s")
    if form.is_valid() and form.cleaned_data["stage"] not in (job.config or {}).get("stages", []):
        form.add_error(None, f"Unknown stage {form.cleaned_data['stage']!r} for this job.")
    if not form.is_valid():
        messages.error(request, f"Nothing decided for {job}: see the form.")
        if from_page:
            return _pipeline_page(request, job, status=400, form=form)
        return _dashboard(request, status=400, gate_forms={job.pk: form})
    verb = form.cleaned_data["decision"]
    stage = form.cleaned_data["stage"]
    schema = job.policy(stage).input_schema
    values, problems = gate_pages.posted_input(schema, request.POST) if verb == "approve" else ({}, {})
    try:
        if problems:
            raise engine.GateInputError(problems)
        engine.decide(
            job,
            stage,
            verb,
            person=people.person_of(request.user),
            notes=form.cleaned_data["notes"],
            values=values if verb == "approve" else None,
            via="console",
        )
    except engine.GateForbidden as exc:
        messages.error(request, f"{job} was not {verb}d at {stage}: {exc}")
        return _pipeline_page(request, job, status=403, form=form)
    except engine.GateInputError as exc:
        messages.error(request, f"Nothing decided for {job}: see the form.")
        return _pipeline_page(request, job, status=400, form=form, values=values, input_errors=exc.errors)
    except t.TransitionError as exc:
        # Someone else decided first, or the job moved on: say so, change nothing.
        messages.error(request, f"{job} was not {verb}d at {stage}: {exc}")
        if from_page:
            return _pipeline_page(request, job, status=409)
        return _dashboard(request, status=409)
    messages.success(request, f"{job}: {stage} {'approved' if verb == 'approve' else 'rejected'}.")
    fallback = reverse("console:pipeline-job", args=[job.pk]) if from_page else reverse("console:dashboard")
    return _back(request, fallback)


def _pipeline_action(request: HttpRequest, pk: int, verb: str) -> HttpResponse:
    _require(can_change_pipeline(request.user), f"{verb} pipeline jobs")
    job = get_object_or_404(PipelineJob.objects.select_related("definition"), pk=pk)
    try:
        getattr(engine, verb)(job, actor=actor(request))
    except t.TransitionError as exc:
        messages.error(request, f"{job} was not {verb}d: {exc}")
        return _pipeline_page(request, job, status=409)
    messages.success(request, f"{job} {'resumed' if verb == 'resume' else 'canceled'}.")
    return _back(request, reverse("console:pipeline-job", args=[job.pk]))


@require_POST
@console_login_required
def pipeline_resume(request: HttpRequest, pk: int) -> HttpResponse:
    return _pipeline_action(request, pk, "resume")


@require_POST
@console_login_required
def pipeline_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    return _pipeline_action(request, pk, "cancel")


# --- automatic actions: approvals, effect, paused automations ---------------------------------
@console_login_required
def actions_page(request: HttpRequest) -> HttpResponse:
    """Risky actions waiting for a person, what recent actions achieved, each rule's
    effectiveness, and the automations loop protection paused."""
    context = {**data.actions_page(timezone.now()), "page": "actions"}
    return render_page(request, "console/actions.html", {}, context)


@require_POST
@console_login_required
def action_decide(request: HttpRequest, pk: int) -> HttpResponse:
    """Approve or reject a pending action through the model method the API and admin use."""
    _require(can_control(request.user), "approve or reject automatic actions")
    action = get_object_or_404(Action, pk=pk)
    decision = request.POST.get("decision")
    if decision not in ("approve", "reject"):
        messages.error(request, "Choose approve or reject.")
        return _back(request, reverse("console:actions"))
    notes = (request.POST.get("notes") or "")[:2000]
    try:
        action.decide(decision == "approve", actor=actor(request), notes=notes)
    except ActionStateError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, f"{action.action_type} {decision}d" + (" (runs next cycle)." if decision == "approve" else ".")
        )
    return _back(request, reverse("console:actions"))


@require_POST
@console_login_required
def guardrail_resume(request: HttpRequest, pk: int) -> HttpResponse:
    _require(can_control(request.user), "resume paused automations")
    counter = get_object_or_404(GuardrailCounter, pk=pk)
    if counter.resume(actor=actor(request)):
        messages.success(request, f"{counter.automation} on {counter.target} resumed.")
    else:
        messages.info(request, f"{counter.automation} on {counter.target} was not paused.")
    return _back(request, reverse("console:actions"))


@require_POST
@console_login_required
def anomaly_write(request: HttpRequest, pk: int, verb: str) -> HttpResponse:
    """Acknowledge (stops escalation) or resolve an anomaly: the API's model methods."""
    _require(can_control(request.user), f"{verb} anomalies")
    anomaly = get_object_or_404(Anomaly, pk=pk)
    notes = (request.POST.get("notes") or "")[:2000]
    try:
        (anomaly.acknowledge if verb == "acknowledge" else anomaly.resolve_by)(actor=actor(request), notes=notes)
    except AnomalyStateError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{anomaly.code} on {anomaly.subject} {verb}d.")
    return _back(request, reverse("console:actions"))


# --- sign in / out ------------------------------------------------------------------------
class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    redirect_authenticated_user = True


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    from django.contrib.auth import logout

    logout(request)
    messages.info(request, "Signed out.")
    return redirect(LOGIN_URL)


# --- static files -------------------------------------------------------------------------
def static_files(request: HttpRequest, path: str) -> HttpResponse:
    """Serve /static/ from the app and project static folders through Django's
    staticfiles finders when DEBUG is off.

    The embedded profile is one `runserver` process with no web server in front
    (the machine may have no internet, so no CDN either), and whitenoise is not a
    dependency; the finders are what `runserver` itself uses under DEBUG. A deployment
    behind nginx can `collectstatic` and let nginx answer /static/ before Django.
    """
    response = staticfiles_serve(request, path, insecure=True)
    response["Cache-Control"] = "public, max-age=300"
    return response


# --- error pages --------------------------------------------------------------------------
def _error(request: HttpRequest, status: int, title: str, message: str) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"detail": message}, status=status)
    context = {"status": status, "title": title, "message": message}
    return render(request, "error.html", context, status=status)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    # What Django refuses before a view runs (too many form fields, a body it would not
    # read): its own page was HTML, also on the API.
    return _error(request, 400, "Bad request", "The request could not be read (too large or malformed).")


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _error(
        request,
        404,
        "Page not found",
        f"Nothing lives at {request.path}. It may have been renamed or deleted.",
    )


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    detail = str(exception) if exception and str(exception) else "You do not have permission to do that."
    return _error(request, 403, "Not allowed", detail)


def _wants_json(request: HttpRequest) -> bool:
    return (
        "application/json" in request.headers.get("Accept", "")
        or request.path.startswith(("/api/", "/orchestrator/", "/metrics", "/health"))
        or bool(request.GET.get("live"))
    )


def server_error(request: HttpRequest) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"detail": "Internal error; it has been logged."}, status=500)
    # Rendered without the request context on purpose: whatever broke may be in it.
    try:
        html = render_to_string(
            "error.html",
            {
                "status": 500,
                "title": "Something went wrong",
                "message": "The orchestrator hit an unexpected error while answering. It has been logged; "
                "try again in a moment.",
            },
        )
    except Exception:  # the template system itself may be what failed
        html = "<h1>Server error</h1><p>The orchestrator hit an unexpected error.</p>"
    return HttpResponse(html, status=500)
