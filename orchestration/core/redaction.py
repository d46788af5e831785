"""One redaction for every exit: API, ledger, admin, console, logs, error texts and
notifications.

What is masked (``MASK`` in place of the value, the name stays visible):

- **secret-named keys** of JSON values, at any depth — headers (``Authorization``,
  ``X-Auth``, ``X-Api-Token``, ``Cookie``…) and body keys (``password``, ``api_key``…)
  alike. A name is secret when it matches ``SECRET_NAME_PATTERN`` (case-insensitive):
  ``auth``, ``token``, ``secret``, ``passw``/``pwd``, ``cookie``, ``signature``,
  ``credential``, ``session``, ``sig`` as a word, and ``key`` not followed by a letter
  (``api_key``, ``X-Api-Key``, ``apikey``; not ``keyword``). Its whole value is masked
  unless it is null, a boolean or an empty string, which carry no secret;
- inside every string (error texts, messages, URLs): URL user-info
  (``https://user:pw@host`` → ``https://***@host``), the values of secret-named
  query parameters and ``name=value`` / ``name: value`` pairs (``?access_token=…``,
  ``password=…``, ``'Authorization': 'Bearer …'``), and ``Bearer <credential>``.

The walk is iterative (no recursion limit); containers deeper than ``MAX_DEPTH`` are cut.
A client that reads an object and writes it back unchanged sends the masks, which
``restore`` turns back into the stored values, so a round trip cannot wipe a credential.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from orchestration.core.storedjson import CUT, MAX_DEPTH

MASK = "***"

#: Documented in the module docstring and the README ("Secrets"); applied to lower-cased names.
SECRET_NAME_PATTERN = (
    r"auth|token|secret|passw|pwd|cookie|signature|credential|session|(?<![a-z])sig(?![a-z])|key(?![a-z])"
)
_SECRET_NAME = re.compile(SECRET_NAME_PATTERN)

# Every pattern is bounded or anchored at a word's start: they run over whole pages, and
# an unbounded one took minutes on a long stored text (quadratic backtracking).
_USERINFO = re.compile(r"(?<![a-z0-9+.\-])([a-z][a-z0-9+.\-]{0,30}://)([^\s/?#@\"'<>]{1,256})@", re.IGNORECASE)
_BEARER = re.compile(r"\b(Bearer)\s+(?!\*{8})[A-Za-z0-9._~+/=\-]+", re.IGNORECASE)
# A name at a word's start, an optional closing quote (plain or as HTML shows it), then
# ':' or '='; the value is read after it only when the name is secret, so another name's
# value (a URL after "url: ") is still searched for secrets of its own.
_QUOTES = ('"', "'", "&quot;", "&#x27;", "&#39;")
_NAME_SEP = re.compile(
    r"(?<![A-Za-z0-9_\-])(?P<name>[A-Za-z0-9_\-]{1,200})(?:\"|'|&quot;|&#x27;|&#39;)?[ \t]*[:=][ \t]*"
)
# The words of SECRET_NAME_PATTERN, found first in a lower-cased text: a page has a
# name=value pair per HTML attribute (about 1,000 a dashboard), and visiting every pair
# in Python was most of a page's redaction; only names holding one of these can be secret.
_SECRET_WORD = re.compile(r"auth|token|secret|passw|pwd|cookie|signature|credential|session|sig|key")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
# A bare value: up to a separator; an auth scheme ("Basic ") stays with its credential.
_BARE = re.compile(r"(?:(?:bearer|basic|token|digest)[ \t]+)?[^\s&,;}\]#\"'<>]+", re.IGNORECASE)
_LONGEST_QUOTED = 4096


def _value_end(text: str, start: int) -> tuple[int, str] | None:
    """Where the value starting at ``start`` ends, and its quote ('' when bare)."""
    for quote in _QUOTES:
        if text.startswith(quote, start):
            close = text.find(quote, start + len(quote), start + len(quote) + _LONGEST_QUOTED)
            if close >= 0:
                return close + len(quote), quote
            break
    bare = _BARE.match(text, start)
    return (bare.end(), "") if bare else None


def _mask_pairs(text: str, lower: str) -> str:
    """Each ``name: value`` / ``name=value`` whose name is secret, its value masked.
    ``lower``: the text lower-cased."""
    if len(lower) != len(text):
        # A few characters lower-case to two ("İ"): names are ASCII, so lower only that.
        lower = text.translate(_ASCII_LOWER)
    out: list[str] = []
    pos = 0  # text before it is in ``out``
    seen = -1  # the start of the last name looked at
    for word in _SECRET_WORD.finditer(lower):
        if word.start() < pos:
            continue  # inside a value masked already
        start = word.start()
        while start > 0 and text[start - 1] in _NAME_CHARS:
            start -= 1
        if start == seen or start < pos:
            continue
        seen = start
        # The whole name (at most 200 characters), then its separator.
        match = _NAME_SEP.match(text, start)
        found = _value_end(text, match.end()) if match is not None and is_secret_name(match["name"]) else None
        if found is None:
            continue
        end, quote = found
        value = text[match.end() + len(quote) : end - len(quote)]
        out.append(text[pos : match.end()])
        out.append(text[match.end() : end] if value == MASK else f"{quote}{MASK}{quote}")
        pos = end
    out.append(text[pos:])
    return "".join(out)


# Names the pattern would match that hold no secret: an Idempotency-Key names a request
# (its error answer, "Idempotency-Key: at most 200 characters", was masked away).
_NOT_SECRET = re.compile(r"idempotency")


def is_secret_name(name: Any) -> bool:
    return _is_secret_lower(str(name).lower())


# Pages ask about the same few names over and over (every HTML attribute before '=' is
# one: about 950 a dashboard, 11 ms of its CPU); a pure function of the name, so kept.
@functools.lru_cache(maxsize=4096)
def _is_secret_lower(lower: str) -> bool:
    return bool(_SECRET_NAME.search(lower)) and not _NOT_SECRET.search(lower)


# Kept for callers of the header-only version.
is_secret_header = is_secret_name


def redact_text(text: str) -> str:
    """``text`` with URL user-info, secret-named pairs and bearer credentials masked."""
    if "@" in text and "://" in text:
        text = _USERINFO.sub(lambda m: m[1] + MASK + "@" if m[2] != MASK else m[0], text)
    lower = text.lower()
    if _SECRET_NAME.search(lower):
        text = _mask_pairs(text, lower)
    if "bearer" in lower:
        text = _BEARER.sub(lambda m: f"{m[1]} {MASK}", text)
    return text


def redact_html(html: str) -> str:
    """A rendered page with every secret masked (quotes as HTML entities included): the
    net under the pages (admin, console) whose fields are not all masked one by one."""
    return redact_text(html)


def _masks(key: Any, value: Any) -> bool:
    """A secret-named key's value is masked unless it cannot hold a secret."""
    return is_secret_name(key) and not (value is None or isinstance(value, bool) or value == "")


class Masked(dict):
    """A JSON object whose builder masked every text in it that could hold a secret
    (``redact_text`` on each free-text field; the rest are numbers, choices and
    validated names), so ``redact`` passes it through: for answers where walking every
    value costs more than building them (``/health/status`` at 10,000 services)."""


def redact(value: Any, max_depth: int = MAX_DEPTH) -> Any:
    """A copy of a JSON value with every secret masked (see the module docstring).

    Iterative, and containers ``max_depth`` levels down are cut (``CUT``): a payload
    nested 500 deep made a recursive version, and so every read of the job (API list,
    detail, admin page), fail with RecursionError.
    """
    root: list[Any] = [None]
    # (value, where its copy goes, key or index there, depth)
    stack: list[tuple[Any, Any, Any, int]] = [(value, root, 0, 0)]
    while stack:
        item, parent, slot, depth = stack.pop()
        if isinstance(item, Masked):
            parent[slot] = item  # masked field by field where it was built
        elif isinstance(item, Mapping | list | tuple):
            if depth >= max_depth:
                parent[slot] = CUT
            elif isinstance(item, Mapping):
                copy: dict[Any, Any] = {}
                parent[slot] = copy
                for key, child in item.items():
                    shown = redact_text(key) if isinstance(key, str) else key
                    if _masks(key, child):
                        copy[shown] = MASK
                        continue
                    copy[shown] = None
                    stack.append((child, copy, shown, depth + 1))
            else:
                items: list[Any] = [None] * len(item)
                parent[slot] = items
                stack.extend((child, items, index, depth + 1) for index, child in enumerate(item))
        elif isinstance(item, str):
            parent[slot] = redact_text(item)
        else:
            parent[slot] = item
    return root[0]


def redact_error(error: str, *, staff: bool) -> str:
    """A stored error text as its reader may see it: masked for everyone, and for
    non-staff without the traceback (which holds paths and code)."""
    if not error:
        return error
    if not staff:
        error = error.split("Traceback (most recent call last):", 1)[0].rstrip()
    return redact_text(error)


class MaskedSecretError(ValueError):
    """The mask came back for a value that has no stored value to stand for."""


def restore_text(incoming: str, stored: Any, where: str = "value") -> str:
    """A string as written by a client: the masked form of the stored string keeps the
    stored one; a new string may not carry the mask (it would store the mask)."""
    if isinstance(stored, str) and incoming == redact_text(stored):
        return stored
    if MASK in incoming:
        raise MaskedSecretError(f"{where}: send the real value ({MASK} only stands for a stored one)")
    return incoming


def restore(value: Any, stored: Any, where: str = "") -> Any:
    """``redact`` undone where a client sent a read back: every mask, at any depth,
    becomes the stored value at the same place (MaskedSecretError where there is none)."""
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, Any, str]] = [(value, stored, root, 0, where)]
    while stack:
        item, old, parent, slot, path = stack.pop()
        if isinstance(item, Mapping):
            old_map = old if isinstance(old, Mapping) else {}
            copy: dict[Any, Any] = {}
            parent[slot] = copy
            for key, child in item.items():
                here = f"{path}.{key}" if path else str(key)
                if child == MASK and is_secret_name(key):
                    if key not in old_map or old_map[key] == MASK:
                        raise MaskedSecretError(f"{key!r}: send its real value ({MASK} only stands for a stored one)")
                    copy[key] = old_map[key]
                else:
                    copy[key] = None
                    stack.append((child, old_map.get(key), copy, key, here))
        elif isinstance(item, list):
            old_items = old if isinstance(old, list) else []
            items: list[Any] = [None] * len(item)
            parent[slot] = items
            for index, child in enumerate(item):
                previous = old_items[index] if index < len(old_items) else None
                stack.append((child, previous, items, index, f"{path}[{index}]"))
        elif isinstance(item, str):
            parent[slot] = restore_text(item, old, path or "value")
        else:
            parent[slot] = item
    return root[0]


def restore_headers(incoming: Mapping[str, Any], stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """Headers as written by a client: a masked value keeps the stored one."""
    return restore(dict(incoming), dict(stored or {}))
