"""Code runs only by name: python.call jobs, python worker targets and pipeline stage
runners resolve through the registry the deployment declares (orchestration/core/runnables.py),
and defining one takes the run_code permission, not only staff."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from orchestration.core import runnables
from orchestration.core.jobs import queue
from orchestration.core.models import Job
from orchestration.fleet.models import Worker, WorkerRun
from orchestration.fleet.runner import execute_run, request_run
from pipeline.models import PipelineDefinition
from tests.conftest import _client_for

pytestmark = pytest.mark.django_db

# A name imported into a module of the project: the "prefix allow-list" let it through, and
# call_command("shell", command=…) ran any code as the server's user.
IMPORTED = "orchestration.management.commands.bootstrap.call_command"
REGISTERED = "tests.workers.targets.ok"


def _attack(marker: Path) -> dict:
    return {"path": IMPORTED, "args": ["shell"], "kwargs": {"command": f"open({str(marker)!r}, 'w').write('pwned')"}}


@pytest.fixture
def superuser_client(db):
    return _client_for(get_user_model().objects.create_superuser("root", password="pw-root-123-long"))


@pytest.fixture
def coder_client(db):
    """Staff with the run_code permission granted."""
    user = get_user_model().objects.create_user("coder", password="pw-coder-123-long", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="run_code", content_type__app_label="orchestration"))
    return _client_for(user)


# --- the registry itself ----------------------------------------------------------------------
def test_only_the_object_defined_at_the_path_resolves(settings):
    assert runnables.resolve(REGISTERED).__name__ == "ok"
    for path in (IMPORTED, "builtins.print", "os.system", "tests.workers.targets.time.sleep", "x", 3, None):
        with pytest.raises(runnables.NotRunnable):
            runnables.resolve(path)
    # Listing a path in RUNNABLE_PATHS declares the function defined there, never a name imported there.
    settings.RUNNABLE_PATHS = [IMPORTED, "orchestration.fleet.runner.import_callable", "pipeline.nope.run"]
    for imported in (IMPORTED, "orchestration.fleet.runner.import_callable"):
        with pytest.raises(runnables.NotRunnable, match="only imported there"):
            runnables.resolve(imported)
    with pytest.raises(runnables.NotRunnable, match="cannot be imported"):
        runnables.resolve("pipeline.nope.run")
    settings.RUNNABLE_PATHS = ["django.utils.text.slugify"]
    assert runnables.resolve("django.utils.text.slugify")("A b") == "a-b"


def test_a_nested_function_cannot_be_declared():
    def inner() -> None: ...

    with pytest.raises(TypeError):
        runnables.runnable(inner)


# --- the three paths of the issue, refused at creation ---------------------------------------------
@pytest.mark.parametrize("who", ["staff", "superuser"])
def test_a_python_call_job_to_an_imported_name_is_refused_and_nothing_runs(
    who, staff_client, superuser_client, tmp_path, django_capture_on_commit_callbacks
):
    client = staff_client if who == "staff" else superuser_client
    marker = tmp_path / "pwned"
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/v1/jobs/", {"kind": "python.call", "payload": _attack(marker)}, format="json")
    assert response.status_code == 400, response.content
    assert "not declared runnable" in str(response.json()["payload"]["path"])
    assert not Job.objects.filter(kind="python.call").exists()
    assert not marker.exists()


def test_a_python_call_job_is_checked_field_by_field(superuser_client):
    for payload, key in (
        ({"path": "builtins.print"}, "path"),
        ({"path": REGISTERED, "args": "x"}, "args"),
        ({"path": REGISTERED, "kwargs": [1]}, "kwargs"),
    ):
        response = superuser_client.post("/api/v1/jobs/", {"kind": "python.call", "payload": payload}, format="json")
        assert response.status_code == 400 and key in response.json()["payload"], response.content


def test_a_python_worker_target_to_an_imported_name_is_refused_and_nothing_runs(superuser_client, tmp_path):
    marker = tmp_path / "pwned"
    attack = _attack(marker)
    target = {"type": "python", "path": attack["path"], "kwargs": {"command_name": "shell", **attack["kwargs"]}}
    body = {"name": "evil", "category": "collection", "execution_model": "on_demand", "target": target}
    response = superuser_client.post("/api/v1/workers/", body, format="json")
    assert response.status_code == 400 and "not declared runnable" in str(response.json()["target"])
    assert not Worker.objects.filter(name="evil").exists() and not marker.exists()


def test_a_stage_runner_outside_the_registry_is_refused(superuser_client):
    body = {
        "name": "evil",
        "stages": ["only"],
        "gates": {},
        "stage_timeouts": {"only": 5},
        "runners": {"only": "builtins.print"},
    }
    response = superuser_client.post("/api/v1/pipeline/definitions/", body, format="json")
    assert response.status_code == 400 and "only" in response.json()["runners"], response.content
    assert not PipelineDefinition.objects.filter(name="evil").exists()


def test_the_yaml_loaders_refuse_them_too(tmp_path):
    from django.core.management import CommandError, call_command

    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "workers:\n  - {name: evil, category: collection, interval_seconds: 300, "
        f"target: {{type: python, path: {IMPORTED}}}}}\n"
    )
    with pytest.raises(CommandError, match="not declared runnable"):
        call_command("load_fleet", str(fleet))
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("pipeline:\n  stage_timeouts: {only: 5}\n  runners: {only: builtins.print}\n")
    with pytest.raises(CommandError, match="not declared runnable"):
        call_command("load_pipeline", str(pipeline), "--name", "evil")
    assert not Worker.objects.filter(name="evil").exists()
    assert not PipelineDefinition.objects.filter(name="evil").exists()


# --- at run time: stored before the registry changed ---------------------------------------------
def test_a_stored_python_call_job_fails_for_good_without_running(tmp_path):
    marker = tmp_path / "pwned"
    job = Job.objects.create(kind="python.call", payload=_attack(marker), max_attempts=5)
    Job.objects.filter(pk=job.pk).update(status="processing", lease_token="t")
    assert queue.execute(job.pk, "t") == "failed"
    job.refresh_from_db()
    assert job.attempts == 1 and "not declared runnable" in job.error
    assert not marker.exists()


def test_a_stored_python_worker_target_fails_without_running(tmp_path):
    marker = tmp_path / "pwned"
    attack = _attack(marker)
    worker = Worker.objects.create(
        name="stored",
        category="collection",
        execution_model="on_demand",
        target={"type": "python", "path": attack["path"], "kwargs": {"command_name": "shell", **attack["kwargs"]}},
    )
    execute_run(request_run(worker).pk)
    run = WorkerRun.objects.get(worker=worker)
    assert run.status == "failed" and "not declared runnable" in run.error
    assert not marker.exists()


# --- defining code is its own permission -----------------------------------------------------------
def test_staff_without_run_code_may_not_define_code_but_may_do_the_rest(staff_client, coder_client):
    job = {"kind": "python.call", "payload": {"path": REGISTERED}}
    worker = {"name": "w", "category": "collection", "execution_model": "on_demand"}
    python = {"type": "python", "path": REGISTERED}
    definition = {"name": "d", "stages": ["only"], "gates": {}, "stage_timeouts": {"only": 5}}
    runners = {"only": "tests.pipeline.stage_runners.count_words"}

    assert staff_client.post("/api/v1/jobs/", job, format="json").status_code == 403
    assert staff_client.post("/api/v1/workers/", {**worker, "target": python}, format="json").status_code == 403
    response = staff_client.post("/api/v1/pipeline/definitions/", {**definition, "runners": runners}, format="json")
    assert response.status_code == 403
    assert not Job.objects.filter(kind="python.call").exists() and not Worker.objects.filter(name="w").exists()

    assert coder_client.post("/api/v1/jobs/", job, format="json").status_code == 201
    assert coder_client.post("/api/v1/workers/", {**worker, "target": python}, format="json").status_code == 201
    response = coder_client.post("/api/v1/pipeline/definitions/", {**definition, "runners": runners}, format="json")
    assert response.status_code == 201

    # Staff still edit everything else of a python worker and a definition with runners.
    assert staff_client.patch("/api/v1/workers/w/", {"description": "x"}, format="json").status_code == 200
    url = "/api/v1/pipeline/definitions/d/"
    assert staff_client.patch(url, {"description": "x"}, format="json").status_code == 200
    # But not what runs.
    changed = {"target": {**python, "kwargs": {"items": 1}}}
    assert staff_client.patch("/api/v1/workers/w/", changed, format="json").status_code == 403
    other = {"runners": {"only": "tests.pipeline.stage_runners.boom"}}
    assert staff_client.patch(url, other, format="json").status_code == 403


@pytest.fixture
def clerk(db) -> Client:
    """Staff with every permission of the project's apps in the admin, except run_code."""
    from django.contrib.auth.models import Group

    admins = Group.objects.create(name="admins")
    admins.permissions.set(
        Permission.objects.filter(content_type__app_label__in=["orchestration", "pipeline"]).exclude(
            codename="run_code"
        )
    )
    user = get_user_model().objects.create_user("clerk", password="pw-clerk-123-long", is_staff=True)
    user.groups.add(admins)
    client = Client()
    client.force_login(user)
    return client


def test_the_admin_job_form_asks_for_run_code_and_a_registered_path(clerk):
    client = clerk
    page = client.post(
        "/admin/orchestration/job/add/",
        {"kind": "python.call", "payload": f'{{"path": "{REGISTERED}"}}', "priority": "normal", "lane": "default"}
        | {"max_attempts": 3, "backoff": "exponential", "channel": "", "reference": ""},
    )
    assert page.status_code == 200 and "run_code" in page.content.decode()
    page = client.post(
        "/admin/orchestration/job/add/",
        {"kind": "python.call", "payload": '{"path": "builtins.print"}', "priority": "normal", "lane": "default"}
        | {"max_attempts": 3, "backoff": "exponential", "channel": "", "reference": ""},
    )
    assert page.status_code == 200 and "not declared runnable" in page.content.decode()
    assert not Job.objects.filter(kind="python.call").exists()


WORKER_FORM = {
    "name": "w",
    "description": "",
    "category": "collection",
    "execution_model": "on_demand",
    "cron": "",
    "timeout_seconds": 30,
    "depends_on": "[]",
    "optional_depends_on": "[]",
    "priority": "normal",
    "rate_factor": 1.0,
}


def test_the_admin_worker_form_asks_for_run_code_and_a_registered_path(clerk, admin_client):
    python = f'{{"type": "python", "path": "{REGISTERED}"}}'
    page = clerk.post("/admin/orchestration/worker/add/", {**WORKER_FORM, "target": python})
    assert page.status_code == 200 and "run_code" in page.content.decode()
    http = '{"type": "http", "method": "POST", "url": "{base_url}/x"}'
    assert clerk.post("/admin/orchestration/worker/add/", {**WORKER_FORM, "target": http}).status_code == 302
    page = admin_client.post(
        "/admin/orchestration/worker/add/",
        {**WORKER_FORM, "name": "v", "target": '{"type": "python", "path": "os.system"}'},
    )
    assert page.status_code == 200 and "not declared runnable" in page.content.decode()
    assert (
        admin_client.post(
            "/admin/orchestration/worker/add/", {**WORKER_FORM, "name": "v", "target": python}
        ).status_code
        == 302
    )
    assert set(Worker.objects.filter(name__in=["v", "w"]).values_list("name", flat=True)) == {"v", "w"}


def test_the_admin_definition_form_asks_for_run_code_and_a_registered_runner(clerk, admin_client):
    form = {"name": "d", "description": "", "stages": '["only"]', "gates": "{}", "stage_timeouts": '{"only": 5}'}
    form |= {"lane": "pipeline", "stage_attempts": 3}
    runner = '{"only": "tests.pipeline.stage_runners.count_words"}'
    page = clerk.post("/admin/pipeline/pipelinedefinition/add/", {**form, "runners": runner})
    assert page.status_code == 200 and "run_code" in page.content.decode()
    page = admin_client.post(
        "/admin/pipeline/pipelinedefinition/add/", {**form, "runners": '{"only": "builtins.print"}'}
    )
    assert page.status_code == 200 and "not declared runnable" in page.content.decode()
    assert not PipelineDefinition.objects.filter(name="d").exists()
    assert admin_client.post("/admin/pipeline/pipelinedefinition/add/", {**form, "runners": runner}).status_code == 302


def test_misdeclared_runnables_are_reported_at_start(settings):
    from django.core.exceptions import ImproperlyConfigured

    from orchestration.core.checks import orchestrator_settings

    settings.RUNNABLE_PATHS = ["django.utils.text.slugify", IMPORTED]
    errors = [e for e in orchestrator_settings(None) if e.id == "orchestration.E005"]
    assert len(errors) == 1 and IMPORTED in errors[0].msg and "RUNNABLE_PATHS" in errors[0].msg
    with pytest.raises(ImproperlyConfigured, match="RUNNABLE_MODULES names 'no_such_module'"):
        runnables.load_modules(["no_such_module"])
