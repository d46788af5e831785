"""The pages behind a signed decision link: GET shows what the link would do and
changes nothing; POST makes the decision as the link's person, whose permission is
checked again at that moment."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from pipeline import engine, gates, links, people
from pipeline import transitions as t
from pipeline.models import GateLink


def form_fields(schema: dict[str, Any], values: dict[str, Any] | None = None, errors: dict | None = None) -> list[dict]:
    """The schema's fields with the values and errors to show (shared with the console)."""
    fields = gates.form_fields(schema)
    for f in fields:
        f["value"] = (values or {}).get(f["name"], f["default"])
        f["errors"] = (errors or {}).get(f["name"], [])
    return fields


def posted_input(schema: dict[str, Any], post) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The ``input-<field>`` entries of a posted form, typed per the schema."""
    raw = {key[len("input-") :]: value for key, value in post.items() if key.startswith("input-")}
    return gates.coerce_form(schema, raw)


def _page(request: HttpRequest, status: int = 200, **context: Any) -> HttpResponse:
    return render(request, "pipeline/link.html", context, status=status)


def _mismatch(request: HttpRequest, link: GateLink) -> str | None:
    user = request.user
    if user.is_authenticated and user.get_username() != link.username:
        return f"This link belongs to {link.username}; you are signed in as {user.get_username()}."
    return None


@require_http_methods(["GET", "POST"])
def decision_link(request: HttpRequest, token: str) -> HttpResponse:
    try:
        link = links.open_link(token)
    except links.LinkRefused as exc:
        return _page(request, exc.status, problem=str(exc))
    if problem := _mismatch(request, link):
        return _page(request, 403, problem=problem)
    job = link.job
    schema = job.policy(link.stage).input_schema
    context = {"link": link, "job": job, "verb": link.verb}
    if request.method == "GET":
        return _page(request, fields=form_fields(schema), **context)
    values, errors = posted_input(schema, request.POST) if link.verb == "approve" else ({}, {})
    if errors:
        return _page(request, 400, fields=form_fields(schema, values, errors), errors=["See the fields."], **context)
    now = timezone.now()
    try:
        with transaction.atomic():
            # Used and decided together: a refused decision leaves the link unused.
            if not links.claim(link, now=now):
                return _page(request, 410, problem="This link was already used.")
            person = people.person_of(people.user_named(link.username))
            engine.decide(
                job.pk,
                link.stage,
                link.verb,
                person=person,
                notes=request.POST.get("notes", "")[:5000],
                values=values if link.verb == "approve" else None,
                via="link",
            )
    except engine.GateForbidden as exc:
        return _page(request, 403, problem=str(exc))
    except engine.GateInputError as exc:
        return _page(request, 400, fields=form_fields(schema, values, exc.errors), errors=[str(exc)], **context)
    except t.TransitionError as exc:
        return _page(request, 409, problem=str(exc))
    verb = "approved" if link.verb == "approve" else "rejected"
    return _page(request, done=f"You {verb} the {link.stage} gate of job #{job.pk} ({job.slug}).")
