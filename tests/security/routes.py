"""Every URL the site serves, read from Django's resolver, so a new endpoint is tested
by the security suite the day it is added (nobody has to remember to list it)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.views import APIView

from tests.security.world import World

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")

# Public on purpose; everything else needs a signed-in user.
PUBLIC = {
    "health:liveness": "liveness probe for load balancers and process supervisors (DESIGN 'Security')",
    "orchestration-api:healthz": "API liveness probe, public by the API contract",
    "console:login": "the sign-in page itself",
    "pipeline-link": "a signed one-click gate decision link: the single-use token bound to one person is the "
    "credential; GET changes nothing, POST rechecks that person's permission",
    "console:logout": "signing out needs no permission (POST only, CSRF-protected)",
    "console:static": "CSS/JS of the sign-in page, served without a web server in front",
    "health:demo-healthy": "a demo service's health endpoint: the health checker calls it without credentials",
    "health:demo-flaky": "a demo service's health endpoint: the health checker calls it without credentials",
    "health:demo-slow": "a demo service's health endpoint: the health checker calls it without credentials",
    "health:ping": "a heartbeat's ping: cron jobs call it without credentials; the secret is the URL's UUID",
    "health:ping-start": "a heartbeat's start signal, like health:ping",
    "health:ping-fail": "a heartbeat's failure signal, like health:ping",
    "demo-worker": "a demo worker's endpoint: the fleet's HTTP call carries no credentials; "
    "it answers only while the demo fleet has that worker",
    "health:status-pages": "the public status pages' index: only pages marked public, titles and descriptions",
    "health:status-page": "a public status page: names, states, uptime and incident times of a group marked public",
    "admin:login": "the admin's sign-in page",
    "admin:logout": "signing out of the admin (POST only)",
}


@dataclass(frozen=True)
class Route:
    name: str  # namespaced URL name, e.g. "orchestration-api:job-cancel"
    route: str  # the pattern as text, for messages
    callback: Callable[..., Any]
    params: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def view_class(self) -> type | None:
        return getattr(self.callback, "cls", None)

    @property
    def is_api(self) -> bool:
        """A DRF view: authenticates by session or Bearer token, answers 401/403 in JSON."""
        cls = self.view_class
        return cls is not None and issubclass(cls, APIView)

    @property
    def is_admin(self) -> bool:
        return self.name.startswith("admin:")

    @property
    def methods(self) -> tuple[str, ...]:
        """HTTP methods a DRF view answers (not OPTIONS/HEAD); empty for plain views,
        whose methods are not declared anywhere a test can read."""
        cls = self.view_class
        if not self.is_api or cls is None:
            return ()
        allowed = {m.upper() for m in cls.http_method_names}
        actions = getattr(self.callback, "actions", None)
        if actions is not None:
            declared = {m.upper() for m in actions}
        else:
            declared = {m.upper() for m in cls.http_method_names if hasattr(cls, m)}
        return tuple(m for m in ("GET", "POST", "PUT", "PATCH", "DELETE") if m in declared & allowed)

    @property
    def writes(self) -> tuple[str, ...]:
        return tuple(m for m in self.methods if m in WRITE_METHODS)

    def path(self, values: dict[str, Any]) -> str:
        return reverse(self.name, kwargs={p: values[p] for p in self.params})

    def __str__(self) -> str:
        return self.name


def _walk(patterns, prefix: str = "", namespace: str = "") -> Iterator[tuple[str, str, URLPattern]]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            inner = f"{namespace}:{entry.namespace}" if namespace and entry.namespace else entry.namespace or namespace
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern), inner)
        else:
            yield prefix + str(entry.pattern), namespace, entry


def _params(route: str) -> tuple[str, ...]:
    named = re.findall(r"\(\?P<(\w+)>", route) + re.findall(r"<(?:\w+:)?(\w+)>", route)
    return tuple(dict.fromkeys(named))


def all_routes() -> list[Route]:
    """Every named URL. The ``.json``-suffix twins of DRF routes are left out: they
    resolve to the same view (with ``format`` set), checked through their base route."""
    routes: dict[str, Route] = {}
    for route, namespace, pattern in _walk(get_resolver().url_patterns):
        if pattern.name is None or "(?P<format>" in route:
            continue
        name = f"{namespace}:{pattern.name}" if namespace else pattern.name
        routes.setdefault(name, Route(name, route, pattern.callback, _params(route), dict(pattern.default_args)))
    return sorted(routes.values(), key=lambda r: r.name)


def unnamed_routes() -> list[str]:
    return [route for route, _ns, pattern in _walk(get_resolver().url_patterns) if pattern.name is None]


def values_for(route: Route, world: World | None) -> dict[str, object]:
    """Path parameters: the world's objects, or unknown ones without a world."""
    if world is None:
        return {
            "pk": 987654,
            "name": "no-such-thing",
            "task_type": "no-such-type",
            "path": "no/such.css",
            "token": "not-a-token",
        }
    name = route.name
    by_route = {
        "health-api:service": world.service.name,
        "console:service": world.service.name,
        "console:worker": world.worker.name,
        "orchestration-api:worker": world.worker.name,
        "orchestration-api:lane": world.lane.name,
        "pipeline-api:definition": world.definition.name,
        "routing-api:context": world.context.name,
        "orchestration-api:job": world.job.pk,
        "orchestration-api:rule": world.rule.pk,
        "orchestration-api:score-deduction": world.deduction.pk,
        "orchestration-api:channel": world.channel.pk,
        "health-api:maintenance": world.maintenance.pk,
        "orchestration-api:action": world.action.pk,
        "console:action": world.action.pk,
        "console:guardrail": world.counter.pk,
        "orchestration-api:guardrail": world.counter.pk,
        "orchestration-api:automation-policy": world.automation_policy.pk,
        "console:anomaly": world.anomaly.pk,
        "orchestration-api:escalation-policy": world.policy.pk,
        "orchestration-api:ledger": world.entry.pk,
        "orchestration-api:score-report": world.report.pk,
        "orchestration-api:anomaly": world.anomaly.pk,
        "health-api:service-alert": world.alert.pk,
        "pipeline-api:job": world.pipeline_job.pk,
        "console:pipeline": world.pipeline_job.pk,
        "routing-api:suggestion": world.suggestion.pk,
    }
    value: object = None
    for prefix, candidate in sorted(by_route.items(), key=lambda kv: -len(kv[0])):
        if name.startswith(prefix):
            value = candidate
            break
    return {
        "pk": value,
        "name": value,
        "task_type": world.multiplier.task_type,
        "path": "console/console.css",
        "token": "not-a-token",
    }
