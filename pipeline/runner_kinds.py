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
import os
import re
import time
from typing import TYPE_CHECKING, Any, ClassVar

from orchestration.core import outbound
from orchestration.core.jobs.registry import PermanentJobError
from pipeline import processes

if TYPE_CHECKING:
    from pipeline.runners import StageContext

DEFAULT_TIMEOUT_SECONDS = 60
MAX_TIMEOUT_SECONDS = 86400
#: Length of the stderr or body excerpt a failure's message carries.
EXCERPT_CHARS = 400


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


def _one_line(text: str) -> str:
    # A stage's error is shown by its first line (events, the console): keep it on one.
    return " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def _output_limit() -> int:
    from django.conf import settings

    return int(settings.PIPELINE_RUNNER_OUTPUT_BYTES)


@register
class CommandKind(RunnerKind):
    """Starts ``argv`` (argv[0] listed in PIPELINE_COMMANDS, exactly as written) in
    ``<run>/<stage>/``, with ``PIPELINE_INPUT`` naming the stage's input as a JSON file
    there; stdout and stderr are the stage's artifacts, each cut at
    PIPELINE_RUNNER_OUTPUT_BYTES."""

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
        timeout = spec.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
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
        common = {"argv": argv, "exit_code": outcome.returncode, "seconds": outcome.seconds, "run": ctx.run}
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
                f"command {argv[0]} ran past its {timeout} s and was killed with its process group; "
                f"stderr: {_one_line(outcome.stderr_tail)[-EXCERPT_CHARS:] or '(empty)'}"
            )
        if outcome.returncode != 0:
            raise StageFailed(
                f"command {argv[0]} exited with {outcome.returncode}: "
                f"{_one_line(outcome.stderr_tail)[-EXCERPT_CHARS:] or '(no stderr)'}"
            )
        return {"exit_code": 0, "seconds": outcome.seconds, "stdout_bytes": outcome.stdout_bytes}


@register
class HttpKind(RunnerKind):
    """POSTs the stage's input (job, stage, run, gate inputs) as JSON to ``url``; a 2xx
    answer passes. The answer's body is the stage's artifact, cut at
    PIPELINE_RUNNER_OUTPUT_BYTES; redirects are not followed (a 3xx fails)."""

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

        url: str = spec["url"]
        timeout = spec.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
        limit = _output_limit()
        deadline = time.monotonic() + timeout
        try:
            outbound.check_url(url)
            with outbound.session() as guarded:
                with guarded.post(
                    url, json=ctx.stage_input(), timeout=timeout, stream=True, allow_redirects=False
                ) as response:
                    body, total = bytearray(), 0
                    # requests' timeout is per read; a server dripping bytes must not outlast the stage's.
                    for chunk in response.iter_content(65536):
                        total += len(chunk)
                        body += chunk[: max(0, limit - len(body))]
                        if time.monotonic() > deadline:
                            raise requests.Timeout(f"the answer took longer than {timeout} s")
                    status, content_type = response.status_code, response.headers.get("Content-Type", "")
        except outbound.OutboundRefused as exc:
            raise PermanentJobError(f"stage {ctx.stage}: {exc}") from None
        except requests.Timeout:
            raise StageFailed(f"POST {url}: no answer within {timeout} s") from None
        except requests.RequestException as exc:
            raise StageFailed(f"POST {url}: {type(exc).__name__}: {_one_line(str(exc))[:EXCERPT_CHARS]}") from None
        relpath = f"{ctx.stage}/response.{'json' if 'json' in content_type else 'txt'}"
        ctx.save_output(
            relpath,
            "json" if relpath.endswith(".json") else "text",
            bytes(body),
            {
                "url": url,
                "status": status,
                "content_type": content_type,
                "bytes": total,
                "truncated": total > len(body),
                "run": ctx.run,
            },
        )
        if not 200 <= status < 300:
            excerpt = _one_line(bytes(body[:EXCERPT_CHARS]).decode(errors="replace")) or "(empty body)"
            raise StageFailed(f"POST {url} answered {status}: {excerpt}")
        return {"status": status, "bytes": total}
