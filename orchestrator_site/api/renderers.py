"""Every API answer passes through the one redaction on its way out: a field added
tomorrow (an error text, a URL, a payload) cannot show a secret because a serializer
forgot to mask it."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from rest_framework.compat import LONG_SEPARATORS, SHORT_SEPARATORS
from rest_framework.renderers import JSONRenderer

from orchestration.core.redaction import Masked, redact
from orchestration.core.storedjson import MAX_DEPTH

# Stored values are cut at MAX_DEPTH below their field already; the envelope (a page, its
# results, a row) adds a few levels that must not cut them once more.
_ENVELOPE = 8
# Entries of a spread object encoded per call (render_in_pieces).
PIECE = 500


class RedactingJSONRenderer(JSONRenderer):
    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: dict | None = None) -> bytes:
        return super().render(redact(data, MAX_DEPTH + _ENVELOPE), accepted_media_type, renderer_context)

    def encoding(self) -> tuple[Callable[[Any], str], str, str]:
        """(JSON text of a value as ``render`` writes it, the comma, the colon)."""
        separators = SHORT_SEPARATORS if self.compact else LONG_SEPARATORS
        dumps = functools.partial(
            json.dumps,
            cls=self.encoder_class,
            ensure_ascii=self.ensure_ascii,
            allow_nan=not self.strict,
            separators=separators,
        )
        return dumps, *separators

    def render_in_pieces(self, data: Masked, spread: str) -> bytes:
        """``render(data)``, byte for byte (the same encoder and settings, keys in the same
        order), but the object under ``spread`` encoded entry by entry: encoded in one
        call, a 6 MB ``/health/status`` body held the interpreter lock for the whole
        encoding (~0.1 s of CPU), stalling every other request of the process. That
        object may come encoded already (``Encoded``: its entries, each ``"key":value``)."""
        dumps, comma, colon = self.encoding()
        parts: list[str] = []
        for key, value in data.items():
            if key == spread and isinstance(value, Encoded):
                parts.append(dumps(key) + colon + "{" + comma.join(value) + "}")
            elif key == spread and isinstance(value, dict):
                entries = list(value.items())
                # A few hundred entries a call: ~2 ms of lock each, nearly one call's cost.
                chunks = (dumps(dict(entries[i : i + PIECE])) for i in range(0, len(entries), PIECE))
                parts.append(dumps(key) + colon + "{" + comma.join(c[1:-1] for c in chunks) + "}")
            else:
                parts.append(dumps(key) + colon + dumps(value))
        text = "{" + comma.join(parts) + "}"
        return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


class Encoded(list):
    """A JSON object's entries, each encoded already as ``"key":value`` (render_in_pieces)."""
