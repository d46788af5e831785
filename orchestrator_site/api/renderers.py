"""Every API answer passes through the one redaction on its way out: a field added
tomorrow (an error text, a URL, a payload) cannot show a secret because a serializer
forgot to mask it."""

from __future__ import annotations

from typing import Any

from rest_framework.renderers import JSONRenderer

from orchestration.core.redaction import redact
from orchestration.core.storedjson import MAX_DEPTH

# Stored values are cut at MAX_DEPTH below their field already; the envelope (a page, its
# results, a row) adds a few levels that must not cut them once more.
_ENVELOPE = 8


class RedactingJSONRenderer(JSONRenderer):
    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: dict | None = None) -> bytes:
        return super().render(redact(data, MAX_DEPTH + _ENVELOPE), accepted_media_type, renderer_context)
