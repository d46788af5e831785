"""Stage runner kinds: a definition's ``runners`` maps a stage to a mapping with a
``kind`` key, run by the kind registered under that name.

Contract for a kind (subclass ``RunnerKind``, decorate with ``@register``):

* ``keys``: the keys its mapping may hold besides ``kind`` and ``timeout_seconds``.
* ``problems(spec)``: what is wrong with the mapping, each naming its key; pure, used
  when a definition is written (a 400 naming the field) and again when it runs.
* ``deployment_problem(spec)``: why this deployment will not run it (an executable
  missing from PIPELINE_COMMANDS, say), or None; checked when written and when run.
* ``run(ctx, spec)``: the stage's work, as a runner does (pipeline/runners.py): output
  through ``ctx.save_output``; raise ``StageFailed`` to fail the run (retried up to the
  definition's ``stage_attempts``), ``PermanentJobError`` when a retry cannot help.

Kinds: ``command`` (argv, no shell, in the stage's folder of the run) and ``http``
(POST the stage's input, the gate inputs included, through the outbound guard).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from orchestration.core import outbound
from orchestration.core.jobs.registry import PermanentJobError, RetryLater
from orchestration.core.retry_after import parse_retry_after
from pipeline import processes
from pipeline import workdir as workdir_files

if TYPE_CHECKING:
    from pipeline.runners import StageContext

log = logging.getLogger("pipeline")

DEFAULT_TIMEOUT_SECONDS = 60
MAX_TIMEOUT_SECONDS = 86400
#: Length of the stderr or body excerpt a failure's message carries.
EXCERPT_CHARS = 400
#: What a runner needs after its own deadline before the cluster's (Q_TIMEOUT) would
#: kill the worker: stop the process group (SIGTERM, SIGKILL after
#: processes.TERM_GRACE_SECONDS), drain the pipes, save the output, record the failure.
FINISH_SECONDS = 10
#: Answers a retry may change: the server timed out, is busy, or failed on its side.
RETRYABLE_STATUSES = frozenset({408, 429})


class StageFailed(RuntimeError):
    """The stage's work failed; the message is the job's error as it stands (no traceback)."""

    @property
    def job_error(self) -> str:
        return str(self)


class RunnerKind:
    name: ClassVar[str]
    keys: ClassVar[frozenset[str]] = frozenset()

    def problems(self, spec: dict[str, Any]) -> list[str]:
        return []

    def deployment_problem(self, spec: dict[str, Any]) -> str | None:
        return None

    def run(self, ctx: StageContext, spec: dict[str, Any]) -> dict[str, Any] | None:
        raise NotImplementedError


KINDS: dict[str, RunnerKind] = {}


def register(cls: type[RunnerKind]) -> type[RunnerKind]:
    KINDS[cls.name] = cls()
    return cls


def spec_problems(spec: dict[str, Any]) -> list[str]:
    """Problems of a ``{kind: …}`` runner mapping, each starting with the key it is about."""
    kind = KINDS.get(spec.get("kind"))  # type: ignore[arg-type]
    if kind is None:
        return [f"kind must be one of {', '.join(sorted(KINDS))}, got {spec.get('kind')!r}"]
    problems = []
    extra = set(spec) - {"kind", "timeout_seconds"} - kind.keys
    if extra:
        problems.append(f"unknown key(s) {', '.join(sorted(map(str, extra)))} for a {kind.name} runner")
    seconds = spec.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not 0 < seconds <= MAX_TIMEOUT_SECONDS:
        problems.append(f"timeout_seconds must be 1-{MAX_TIMEOUT_SECONDS}, got {seconds!r}")
    return problems + kind.problems(spec)


def deployment_problem(spec: Any) -> str | None:
    kind = KINDS.get(spec.get("kind")) if isinstance(spec, dict) else None
    return kind.deployment_problem(spec) if kind else None


def timeout_problem(stage: str, seconds: int, stage_minutes: int | None, cluster_seconds: int | None) -> str | None:
    """Why a runner's ``timeout_seconds`` cannot hold for ``stage``: it must end
    FINISH_SECONDS before the stage's own timeout (else the stage times out around it)
    and before the cluster's task timeout (else the cluster kills the worker first)."""
    if stage_minutes and seconds > stage_minutes * 60 - FINISH_SECONDS:
        return (
            f"runners.{stage}.timeout_seconds ({seconds} s) must be at most {stage_minutes * 60 - FINISH_SECONDS} s: "
            f"the stage's timeout (stage_timeouts.{stage} = {stage_minutes} min = {stage_minutes * 60} s) ends it "
            f"otherwise, and the runner needs {FINISH_SECONDS} s after its own to stop and record why"
        )
    if cluster_seconds and seconds > cluster_seconds - FINISH_SECONDS:
        return (
            f"runners.{stage}.timeout_seconds ({seconds} s) must be at most {cluster_seconds - FINISH_SECONDS} s: "
            f"the cluster's task timeout (Q_TIMEOUT = {cluster_seconds} s) kills a task running longer, and the "
            f"runner needs {FINISH_SECONDS} s after its own to stop and record why"
        )
    return None


def effective_timeout(spec: dict[str, Any], stage_minutes: int | None, cluster_seconds: int | None) -> tuple[int, str]:
    """(seconds, why they differ from the spec's or ""): the spec's timeout, cut to what
    the stage and the cluster allow now. A definition saved under other settings (a
    lower Q_TIMEOUT since) still ends its runner before the cluster would."""
    seconds = spec.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    limits = []
    if stage_minutes:
        limits.append((stage_minutes * 60 - FINISH_SECONDS, f"the stage's timeout is {stage_minutes} min"))
    if cluster_seconds:
        limits.append(
            (cluster_seconds - FINISH_SECONDS, f"the cluster's task timeout (Q_TIMEOUT) is {cluster_seconds} s")
        )
    for limit, why in sorted(limits):
        if seconds > limit:
            cut = max(1, limit)
            return cut, f"cut from {seconds} s to {cut} s: {why}"
    return seconds, ""


def _one_line(text: str) -> str:
    # A stage's error is shown by its first line (events, the console): keep it on one.
    return " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def _output_limit() -> int:
    from django.conf import settings

    return int(settings.PIPELINE_RUNNER_OUTPUT_BYTES)


def _timeout(ctx: StageContext, spec: dict[str, Any]) -> tuple[int, str]:
    from django.conf import settings

    minutes = ctx.job.config.get("stage_timeouts", {}).get(ctx.stage)
    return effective_timeout(spec, minutes, settings.Q_CLUSTER.get("timeout"))


def _cut_note(note: str) -> str:
    return f" ({note})" if note else ""


#: Files the command runner writes itself in the stage's folder: not the command's output.
RUNNER_FILES = frozenset({"input.json", "stdout.txt", "stderr.txt"})


def _file_kind(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return "json" if suffix == ".json" else "text" if suffix in (".txt", ".md", ".csv", ".log") else "file"


@register
class CommandKind(RunnerKind):
    """Starts ``argv`` (argv[0] listed in PIPELINE_COMMANDS, exactly as written) in
    ``<run>/<stage>/``, with ``PIPELINE_INPUT`` naming the stage's input as a JSON file
    there; stdout and stderr are the stage's artifacts, each cut at
    PIPELINE_RUNNER_OUTPUT_BYTES, and so is each file the command writes in that folder
    (up to PIPELINE_COMMAND_ARTIFACT_FILES files and PIPELINE_COMMAND_ARTIFACT_BYTES)."""

    name = "command"
    keys = frozenset({"argv"})

    def problems(self, spec: dict[str, Any]) -> list[str]:
        argv = spec.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and "\x00" not in a for a in argv):
            return [f"argv must be a non-empty list of strings (no shell), got {argv!r}"]
        if not argv[0]:
            return ["argv[0] must name the executable"]
        return []

    def deployment_problem(self, spec: dict[str, Any]) -> str | None:
        from pipeline.definitions import allowed_commands

        argv = spec.get("argv")
        if isinstance(argv, list) and argv and argv[0] not in allowed_commands():
            return (
                f"{argv[0]!r} is not a command this deployment declared (PIPELINE_COMMANDS); "
                f"declared: {', '.join(allowed_commands()) or 'none'}"
            )
        return None

    def run(self, ctx: StageContext, spec: dict[str, Any]) -> dict[str, Any] | None:
        argv: list[str] = spec["argv"]
        # The list may have changed since the definition was saved.
        if problem := self.deployment_problem(spec):
            raise PermanentJobError(f"stage {ctx.stage}: {problem}")
        timeout, cut = _timeout(ctx, spec)
        workdir = ctx.run_dir / ctx.stage
        workdir.mkdir(parents=True, exist_ok=True)
        input_path = workdir / "input.json"
        input_path.write_text(json.dumps(ctx.stage_input(), indent=2, default=str))
        # Only what a command needs: the orchestrator's own environment holds its secrets.
        env = {key: os.environ[key] for key in ("PATH", "LANG", "LC_ALL", "TZ") if key in os.environ}
        env.setdefault("PATH", os.defpath)
        env.update(
            PIPELINE_INPUT=str(input_path),
            PIPELINE_JOB_ID=str(ctx.job.pk),
            PIPELINE_STAGE=ctx.stage,
            PIPELINE_RUN=str(ctx.run),
            HOME=str(workdir),
        )
        before = workdir_files.snapshot(workdir, RUNNER_FILES)
        root = ctx.run_dir.resolve()
        try:
            outcome = processes.run(
                argv,
                cwd=workdir,
                timeout=timeout,
                env=env,
                output_limit=_output_limit(),
                should_stop=ctx.should_stop,
            )
        except OSError as exc:
            raise PermanentJobError(f"stage {ctx.stage}: cannot start {argv[0]!r}: {exc.strerror or exc}") from None
        if outcome.stopped:
            return {"stopped": True}
        files = self._register_files(ctx, workdir, root, before)
        if workdir.is_symlink():
            # The command swapped its folder for a link: its output must not be written through it.
            workdir.unlink()
            workdir.mkdir()
        common: dict[str, Any] = {
            "argv": argv,
            "exit_code": outcome.returncode,
            "seconds": outcome.seconds,
            "run": ctx.run,
            "timeout_seconds": timeout,
            **files,
        }
        if cut:
            common["timeout_note"] = cut
        for stream, content, total in (
            ("stdout", outcome.stdout, outcome.stdout_bytes),
            ("stderr", outcome.stderr, outcome.stderr_bytes),
        ):
            ctx.save_output(
                f"{ctx.stage}/{stream}.txt",
                "text",
                content,
                {**common, "stream": stream, "bytes": total, "truncated": total > len(content)},
            )
        if outcome.timed_out:
            raise StageFailed(
                f"command {argv[0]} ran past its {timeout} s{_cut_note(cut)} and was killed with its process group; "
                f"stderr: {_one_line(outcome.stderr_tail)[-EXCERPT_CHARS:] or '(empty)'}"
            )
        if outcome.returncode != 0:
            raise StageFailed(
                f"command {argv[0]} exited with {outcome.returncode}: "
                f"{_one_line(outcome.stderr_tail)[-EXCERPT_CHARS:] or '(no stderr)'}"
            )
        return {"exit_code": 0, "seconds": outcome.seconds, "stdout_bytes": outcome.stdout_bytes}

    @staticmethod
    def _register_files(
        ctx: StageContext, workdir: Path, root: Path, before: dict[str, workdir_files.Stamp]
    ) -> dict[str, Any]:
        """Each file the command wrote or changed becomes an artifact of the stage; what
        was refused or skipped is said in the stage's events and its stdout's metadata."""
        from django.conf import settings

        found = workdir_files.harvest(
            workdir,
            root,
            before,
            ignore=RUNNER_FILES,
            max_files=settings.PIPELINE_COMMAND_ARTIFACT_FILES,
            max_bytes=settings.PIPELINE_COMMAND_ARTIFACT_BYTES,
            prefix=f"{ctx.stage}/",
        )
        for each in found.files:
            ctx.record_artifact(
                f"{ctx.stage}/{each.relpath}",
                _file_kind(each.name),
                {
                    "name": each.name,
                    "bytes": each.size,
                    "content_type": each.content_type,
                    "produced_by": "command",
                    "run": ctx.run,
                },
            )
        if found.refused:
            ctx.notes.append(f"refused {len(found.refused)} file(s) of the command: {'; '.join(found.refused[:10])}")
        if found.skipped:
            ctx.notes.append(
                f"skipped {found.skipped} file(s), {found.skipped_bytes} bytes, of the command: past the limits "
                f"(PIPELINE_COMMAND_ARTIFACT_FILES = {settings.PIPELINE_COMMAND_ARTIFACT_FILES}, "
                f"PIPELINE_COMMAND_ARTIFACT_BYTES = {settings.PIPELINE_COMMAND_ARTIFACT_BYTES})"
            )
        for note in ctx.notes:
            log.warning("pipeline job %s, stage %s: %s", ctx.job.pk, ctx.stage, note)
        return {
            "files": [f"{ctx.stage}/{each.relpath}" for each in found.files],
            # The first few: a command making links by the thousand must not bloat the row.
            "files_refused": found.refused[:20],
            "files_refused_count": len(found.refused),
            "files_skipped": found.skipped,
        }


@dataclass(frozen=True)
class _Answer:
    status: int
    content_type: str
    retry_after: str | None
    body: bytes
    total: int


def _post(url: str, payload: dict[str, Any], timeout: float, limit: int) -> _Answer:
    import requests

    deadline = time.monotonic() + timeout
    with outbound.session() as guarded:
        with guarded.post(url, json=payload, timeout=timeout, stream=True, allow_redirects=False) as response:
            body, total = bytearray(), 0
            for chunk in response.iter_content(65536):
                total += len(chunk)
                body += chunk[: max(0, limit - len(body))]
                if time.monotonic() > deadline:
                    raise requests.Timeout(f"the answer took longer than {timeout} s")
            return _Answer(
                response.status_code,
                response.headers.get("Content-Type", ""),
                response.headers.get("Retry-After"),
                bytes(body),
                total,
            )


def _within(seconds: float, call: Callable[[], _Answer], should_stop: Callable[[], bool]) -> _Answer | None:
    """``call()``'s answer; None once ``should_stop()`` (the job was canceled or moved
    on); requests.Timeout once ``seconds`` have passed: requests' own timeout is per
    connect and per read, so a slow connect followed by a dripping answer could outlast
    the stage's limit, and the cluster's, several times over."""
    import requests

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["answer"] = call()
        except BaseException as exc:  # handed to the runner's thread as it is
            box["error"] = exc

    worker = threading.Thread(target=target, name="pipeline-http-runner", daemon=True)
    worker.start()
    deadline = time.monotonic() + seconds
    while worker.is_alive() and time.monotonic() < deadline:
        worker.join(min(0.1, max(0.0, deadline - time.monotonic())))
        if worker.is_alive() and should_stop():
            return None  # the request ends on requests' own timeout; nobody waits for it
    if worker.is_alive():
        # Left to end on requests' own timeout; its answer no longer matters.
        raise requests.Timeout(f"no answer within {seconds} s")
    if "error" in box:
        raise box["error"]
    return box["answer"]


@register
class HttpKind(RunnerKind):
    """POSTs the stage's input (job, stage, run, gate inputs) as JSON to ``url``; a 2xx
    answer passes. The answer's body is the stage's artifact, cut at
    PIPELINE_RUNNER_OUTPUT_BYTES; redirects are not followed (a 3xx fails).

    A 5xx, 408 or 429, no answer in time, or no connection fail the run, which is
    retried (after ``Retry-After`` when a 429 or 503 gives one, up to
    PIPELINE_HTTP_RETRY_AFTER_MAX_SECONDS); any other answer fails the stage at once."""

    name = "http"
    keys = frozenset({"url"})

    def problems(self, spec: dict[str, Any]) -> list[str]:
        url = spec.get("url")
        if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+[^\s]*$", url):
            return [f"url must be an http(s) URL, got {url!r}"]
        if problem := outbound.url_problem(url):
            return [f"url is refused: {problem}"]
        return []

    def run(self, ctx: StageContext, spec: dict[str, Any]) -> dict[str, Any] | None:
        import requests
        from django.conf import settings
        from django.utils import timezone

        url: str = spec["url"]
        timeout, cut = _timeout(ctx, spec)
        payload, limit = ctx.stage_input(), _output_limit()
        try:
            outbound.check_url(url)
            answer = _within(timeout, lambda: _post(url, payload, timeout, limit), ctx.should_stop)
        except outbound.OutboundRefused as exc:
            raise PermanentJobError(f"stage {ctx.stage}: {exc}") from None
        except requests.Timeout:
            raise StageFailed(f"POST {url}: no answer within {timeout} s{_cut_note(cut)}") from None
        except requests.RequestException as exc:
            raise StageFailed(f"POST {url}: {type(exc).__name__}: {_one_line(str(exc))[:EXCERPT_CHARS]}") from None
        if answer is None:
            return {"stopped": True}
        status = answer.status
        relpath = f"{ctx.stage}/response.{'json' if 'json' in answer.content_type else 'txt'}"
        metadata: dict[str, Any] = {
            "url": url,
            "status": status,
            "content_type": answer.content_type,
            "bytes": answer.total,
            "truncated": answer.total > len(answer.body),
            "run": ctx.run,
            "timeout_seconds": timeout,
        }
        if cut:
            metadata["timeout_note"] = cut
        ctx.save_output(relpath, "json" if relpath.endswith(".json") else "text", answer.body, metadata)
        if 200 <= status < 300:
            return {"status": status, "bytes": answer.total}
        excerpt = _one_line(answer.body[:EXCERPT_CHARS].decode(errors="replace")) or "(empty body)"
        message = f"POST {url} answered {status}: {excerpt}"
        asked = parse_retry_after(answer.retry_after, timezone.now()) if status in (429, 503) else None
        if asked is not None:
            delay = min(asked, float(settings.PIPELINE_HTTP_RETRY_AFTER_MAX_SECONDS))
            raise RetryLater(
                f"{message} (Retry-After {answer.retry_after.strip()}: any retry waits {delay:g} s)", delay
            )
        if status >= 500 or status in RETRYABLE_STATUSES:
            raise StageFailed(message)
        # Any other answer (a 4xx, a 3xx not followed) is what the same request gets again.
        raise PermanentJobError(message)
