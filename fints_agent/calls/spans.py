"""Copying free-text arguments from the request: string values restricted to spans of it.

Most free-text arguments of web-API calls are copied from the request: a search query, a
place, a contact, a product id. A small model often writes something else there (a placeholder
such as ``"artist_name"``, a made-up id, a paraphrase). With request-span copying on, the
grammar allows such a value only as a span of the request (the latest user message, read by
:func:`fints_agent.calls.request.request_text`): whole words in their order, with the text
between them as written, optionally ending with the punctuation that follows the last word.
Case is kept as written: a small model that wants a capitalized name otherwise picks any word of
the request and capitalizes it ("Today" for the recipient of "Tell Ingrid that I'll pick up the
kids today").

Which strings are restricted: every ``"type": "string"`` schema that says nothing else about
its value (no ``enum``, ``const``, ``pattern``, ``format`` or length bound), at any depth (array
items too). Values the model must compose rather than copy (a summary, a translation) do not
fit this; leave copying off for such tools.

Only the grammar is changed; calls are still validated against the tool's own schema.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from fints_agent.calls.specs import ToolSpec

MAX_SPAN_WORDS = 12
"""The longest span, in words."""
MAX_REQUEST_WORDS = 160
"""Spans start within the first this many words of the request (the grammar grows with it)."""

_EDGE_PUNCTUATION = ".,!?;:\"'()[]{}<>«»“”‘’…"
_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f]')
"""Characters a span never contains (JSON escapes; spans do not cross them)."""
_REGEX_SPECIAL = frozenset("\\.^$|?*+()[]{}/-")
_VALUE_KEYWORDS = frozenset(
    {"enum", "const", "pattern", "format", "minLength", "maxLength", "contentEncoding"}
)


def _words(text: str) -> list[tuple[int, int, int] | None]:
    """Each whitespace-separated word as (core start, core end, end with trailing punctuation);
    None for a word with nothing left once its edge punctuation is stripped, or whose core has
    a character a span may not contain."""
    words: list[tuple[int, int, int] | None] = []
    for match in re.finditer(r"\S+", text):
        if len(words) >= MAX_REQUEST_WORDS + MAX_SPAN_WORDS:
            break
        start, end = match.start(), match.end()
        a, b = start, end
        while a < b and text[a] in _EDGE_PUNCTUATION:
            a += 1
        while b > a and text[b - 1] in _EDGE_PUNCTUATION:
            b -= 1
        if a == b or _UNSAFE.search(text, a, b) or not text[a:b].isprintable():
            words.append(None)
            continue
        unsafe = _UNSAFE.search(text, b, end)
        words.append((a, b, unsafe.start() if unsafe else end))
    return words


def _escape(text: str) -> str:
    """Literal text as a regular expression (only metacharacters escaped: xgrammar's regex
    parser warns about escapes it does not know, such as an escaped space)."""
    return "".join("\\" + c if c in _REGEX_SPECIAL else c for c in text)


def request_span_pattern(text: str) -> str | None:
    """A regular expression that matches exactly the spans of ``text`` (None: no span).

    A span is one to :data:`MAX_SPAN_WORDS` consecutive words, their edge punctuation stripped
    at both ends, the text between them kept as written; the punctuation right after the last
    word may follow. Spans start within the first :data:`MAX_REQUEST_WORDS` words.
    """
    words = _words(text)
    alternatives = []
    for i, first in enumerate(words[:MAX_REQUEST_WORDS]):
        if first is None:
            continue
        run = [first]
        for word in words[i + 1 : i + MAX_SPAN_WORDS]:
            gap = text[run[-1][1] : word[0]] if word is not None else ""
            if word is None or _UNSAFE.search(gap):
                break
            run.append(word)
        pattern = ""
        for k in range(len(run) - 1, -1, -1):
            a, b, end = run[k]
            core = _escape(text[a:b])
            tails = []
            if k + 1 < len(run):
                tails.append(_escape(text[b : run[k + 1][0]]) + pattern)
            if end > b:
                tails.append(_escape(text[b:end]))
            pattern = core + ("(?:" + "|".join(tails) + ")?" if tails else "")
        alternatives.append(pattern)
    if not alternatives:
        return None
    return "^(?:" + "|".join(alternatives) + ")$"


def _restrict(schema: Any, pattern: str) -> Any:
    if isinstance(schema, list):
        return [_restrict(s, pattern) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {key: _restrict(value, pattern) for key, value in schema.items()}
    if schema.get("type") == "string" and not _VALUE_KEYWORDS & schema.keys():
        out["pattern"] = pattern
    return out


def restrict_to_request(specs: Sequence[ToolSpec], request: str) -> list[ToolSpec]:
    """The tools with their free string values restricted to spans of ``request``.

    For the grammar only: validate calls against the original specs. Tools are returned
    unchanged when the request has no span.
    """
    pattern = request_span_pattern(request)
    if pattern is None:
        return list(specs)
    return [replace(s, parameters=_restrict(s.parameters, pattern)) for s in specs]
