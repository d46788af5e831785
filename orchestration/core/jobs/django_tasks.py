"""Django's Tasks API as a front door: a ``@task`` becomes a durable, watched job.

``TASKS = {"default": {"BACKEND": "orchestration.core.jobs.django_tasks.OrchestratorBackend"}}``
makes ``my_task.enqueue(…)`` create a ``Job`` of kind ``django.task`` (payload
``{"path", "args", "kwargs"}``) in the caller's transaction, so it commits or rolls
back with the caller's own rows. From then on it is a job like any other: claimed
by the cluster, leased, retried with backoff, reclaimed after a kill -9, cancelled,
seen by the loop, the admin, the API and the console.

The mapping, both ways:

* ``priority`` −100…100 → the queue's four: below 0 low, 0–49 normal, 50–89 high,
  90 and up critical (read back as −50, 0, 50, 90);
* ``run_after`` → ``not_before``; ``queue_name`` → lane (the backend's ``QUEUES``
  are the lanes it accepts);
* statuses: pending and retry → READY, processing → RUNNING, completed →
  SUCCESSFUL, failed and canceled → FAILED;
* the return value is stored as ``result = {"return_value": …}``; an exception as
  the job's error, read back as a ``TaskError`` (its class path and traceback);
* ``TaskContext.attempt`` is the job's attempt number.

Only a ``@task`` of an installed app runs: the path must name a ``Task`` object
defined there, when the job is queued through the API and again when it runs.
"""

from __future__ import annotations

import traceback
from importlib import import_module
from typing import Any

from django.apps import apps
from django.db import transaction
from django_tasks.backends.base import BaseTaskBackend
from django_tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist
from django_tasks.signals import task_enqueued, task_finished, task_started
from django_tasks.utils import get_module_path, normalize_json

from orchestration.core.choices import JobStatus, Priority
from orchestration.core.jobs import queue
from orchestration.core.jobs.registry import PermanentJobError, job_kind
from orchestration.core.models import Job

KIND = "django.task"

# (lowest task priority, queue priority), highest first; and the way back.
_PRIORITY_FLOORS = [(90, Priority.CRITICAL), (50, Priority.HIGH), (0, Priority.NORMAL), (-100, Priority.LOW)]
_TASK_PRIORITY = {Priority.CRITICAL: 90, Priority.HIGH: 50, Priority.NORMAL: 0, Priority.LOW: -50}

_STATUS = {
    JobStatus.PENDING: TaskResultStatus.READY,
    JobStatus.RETRY: TaskResultStatus.READY,
    JobStatus.PROCESSING: TaskResultStatus.RUNNING,
    JobStatus.COMPLETED: TaskResultStatus.SUCCESSFUL,
    JobStatus.FAILED: TaskResultStatus.FAILED,
    JobStatus.CANCELED: TaskResultStatus.FAILED,
}


def queue_priority(task_priority: int) -> str:
    for floor, priority in _PRIORITY_FLOORS:
        if task_priority >= floor:
            return priority
    return Priority.LOW


def job_statuses(status: TaskResultStatus) -> list[str]:
    """The job statuses a task status stands for (the API's filters the other way)."""
    return [job for job, task in _STATUS.items() if task == status]


class NotATask(LookupError):
    pass


def resolve(path: Any) -> Task:
    """The ``@task`` defined at exactly ``path`` in an installed app; ``NotATask``
    otherwise (nothing is imported outside the installed apps)."""
    if not isinstance(path, str) or "." not in path:
        raise NotATask(f"{path!r} is not a dotted path like app.tasks.function")
    module_name, _, name = path.rpartition(".")
    if apps.get_containing_app_config(module_name) is None:
        raise NotATask(f"{module_name!r} is not part of an installed app")
    try:
        found = getattr(import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise NotATask(f"{path!r} cannot be imported: {exc}") from None
    if not isinstance(found, Task) or found.module_path != path:
        raise NotATask(f"{path!r} is not a function decorated with @task")
    return found


def payload_problems(payload: dict[str, Any]) -> dict[str, str]:
    """What is wrong with a django.task payload, by key (checked when the job is
    queued through the API, and again when it runs)."""
    problems: dict[str, str] = {}
    try:
        resolve(payload.get("path"))
    except NotATask as exc:
        problems["path"] = str(exc)
    if not isinstance(payload.get("args", []), list):
        problems["args"] = "must be a list"
    if not isinstance(payload.get("kwargs", {}), dict):
        problems["kwargs"] = "must be an object"
    return problems


class OrchestratorBackend(BaseTaskBackend):
    """The Tasks backend whose queue is the orchestrator's Job table.

    ``OPTIONS``: ``max_attempts`` (default 3) and ``backoff`` (``exponential``).
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        try:
            args, kwargs = normalize_json(list(args)), normalize_json(dict(kwargs))
        except TypeError as exc:
            raise InvalidTaskError(f"task arguments must be JSON: {exc}") from None

        job = queue.enqueue(
            KIND,
            {"path": task.module_path, "args": args, "kwargs": kwargs, "backend": self.alias},
            priority=queue_priority(task.priority),
            lane=task.queue_name,
            not_before=task.run_after,
            max_attempts=int(self.options.get("max_attempts", 3)),
            backoff=self.options.get("backoff", "exponential"),
        )
        result = self._result(job, task)
        # Sent once the job exists for everyone (with the caller's transaction).
        transaction.on_commit(lambda: task_enqueued.send(type(self), task_result=result))
        return result

    def get_result(self, result_id: str) -> TaskResult:
        try:
            job = Job.objects.get(pk=int(result_id), kind=KIND)
        except (ValueError, TypeError, Job.DoesNotExist):
            raise TaskResultDoesNotExist(result_id) from None
        try:
            task = resolve(job.payload.get("path"))
        except NotATask as exc:
            raise TaskResultDoesNotExist(f"{result_id}: {exc}") from None
        return self._result(job, task)

    def _result(self, job: Job, task: Task) -> TaskResult:
        task = task.using(
            priority=_TASK_PRIORITY.get(Priority(job.priority), 0),
            queue_name=job.lane,
            run_after=job.not_before,
            backend=self.alias,
        )
        errors = []
        if job.error:
            errors.append(_task_error(job.error))
        result = TaskResult(
            task=task,
            id=str(job.pk),
            status=_STATUS[JobStatus(job.status)],
            enqueued_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            last_attempted_at=job.started_at,
            args=job.payload.get("args", []),
            kwargs=job.payload.get("kwargs", {}),
            backend=self.alias,
            errors=errors,
            # One entry per attempt: the node of the current one, as far as it is known.
            worker_ids=[job.lease_owner or "orchestrator"] * job.attempts,
        )
        if job.status == JobStatus.COMPLETED and isinstance(job.result, dict):
            object.__setattr__(result, "_return_value", job.result.get("return_value"))
        return result


def _task_error(text: str) -> TaskError:
    """The TaskError of a job's error text ("<exception class path>: message\\n…")."""
    first = text.split("\n", 1)[0]
    class_path = first.split(":", 1)[0].strip()
    if "." not in class_path or " " in class_path:
        class_path = "builtins.Exception"
    return TaskError(exception_class_path=class_path, traceback=text)


class TaskRaised(Exception):
    """A task's own exception, carried to the queue as the job's error text."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.job_error = f"{get_module_path(type(exc))}: {exc}\n" + "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__, limit=10)
        )


@job_kind(KIND, description="A function decorated with Django's @task (payload: path, args, kwargs).")
def run_django_task(payload: dict, ctx) -> dict:
    problems = payload_problems(payload)
    if problems:
        # The code changed since the job was queued: nothing runs.
        raise PermanentJobError("; ".join(f"{key}: {why}" for key, why in problems.items()))
    task = resolve(payload["path"])
    backend = OrchestratorBackend(payload.get("backend", "default"), {"QUEUES": []})
    result = backend._result(ctx.job, task)
    task_started.send(OrchestratorBackend, task_result=result)
    args, kwargs = payload.get("args", []), payload.get("kwargs", {})
    try:
        if task.takes_context:
            value = task.call(TaskContext(task_result=result), *args, **kwargs)
        else:
            value = task.call(*args, **kwargs)
        value = normalize_json(value)
    except Exception as exc:
        object.__setattr__(result, "status", TaskResultStatus.FAILED)
        task_finished.send(OrchestratorBackend, task_result=result)
        raise TaskRaised(exc) from exc
    object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
    object.__setattr__(result, "_return_value", value)
    task_finished.send(OrchestratorBackend, task_result=result)
    return {"return_value": value}
