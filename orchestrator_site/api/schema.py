"""OpenAPI generation: every operation documents the error answers it really gives.

drf-spectacular documents only the success answer of an operation unless a view says
more, so a client (or a contract test) reading ``/api/schema/`` would not know that a
write can answer 403 or 429, or that an unknown id answers 404. The rules here follow
what the API does (see orchestrator_site.api.errors and the permission/throttle classes):

- 400 — anything that reads a body or query parameters can be told its input is wrong;
- 401 — every operation that takes credentials, when they are missing or wrong;
- 403 — writes by a user without staff or the specific permission (and session writes
  without a CSRF token);
- 404 — every operation addressed by an id or name in its path;
- 409 — writes that meet a state conflict or existing data;
- 413 — writes whose body is over API_MAX_BODY_BYTES;
- 429 — writes over the per-user write rate.

Each error answer has DRF's conventional body: ``{"detail": …}`` or per-field lists.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": 'DRF error body: {"detail": "…"} or {"field": ["what is wrong", …], …}.',
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": True,
}

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

DESCRIPTIONS = {
    "400": "Invalid input: the body says which field and why",
    "401": "No credentials, or credentials that are not valid",
    "403": "Signed in without the permission this write needs",
    "404": "No such object",
    "409": "The object's state (or existing data) does not allow this",
    "413": "The body is larger than the server accepts (API_MAX_BODY_BYTES)",
    "422": "This Idempotency-Key was used with another body",
    "429": "Too many writes: retry after the time in Retry-After",
}


class OrchestratorAutoSchema(AutoSchema):
    def map_parsers(self) -> list[str]:
        # The contract is JSON (API.md): form encodings, which the browsable API posts,
        # cannot carry the types the schema states (every form value is a string).
        return ["application/json"]

    def _error_component(self) -> dict[str, str]:
        component = ResolvedComponent(
            name="Error", type=ResolvedComponent.SCHEMA, object="orchestrator-error", schema=ERROR_SCHEMA
        )
        self.registry.register_on_missing(component)
        return component.ref

    def _error_codes(self) -> list[str]:
        codes: list[str] = []
        writes = self.method in UNSAFE_METHODS
        has_query = any(p.get("in") == "query" for p in self._get_parameters())
        if writes or has_query:
            codes.append("400")
        if self.get_auth():
            codes.append("401")
            if writes:
                codes.append("403")
        if "{" in self.path:
            codes.append("404")
        if writes:
            codes += ["409", "413", "429"]
        return codes

    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        content = {"application/json": {"schema": self._error_component()}}
        for code in self._error_codes():
            documented = responses.get(code)
            if documented is None:
                responses[code] = {"description": DESCRIPTIONS[code], "content": content}
            elif "content" not in documented:
                # A view that named the code only with a description still answers with a body.
                documented["content"] = content
        for code, documented in responses.items():
            if code.startswith("4") and "content" not in documented:  # one a view alone answers (422)
                documented["content"] = content
        return responses
