"""JSON texts as the designs read and write them in KV, each parsed and serialised once.

A simulated run reads the same KV values over and over (every request of the seeds' worker
reads ``recent:comments``, and each message is read by every claim and poll of it), and each
cache write is the list it read with one message added or changed. Parsing and serialising those
texts again every time was the largest single cost of a run. :class:`JsonTexts` remembers:

* for a text, the value it parses to (``parse``), including texts it produced itself (``dumps``),
  so a value written by one request is read back by the next without parsing;
* for a value it serialised, its text, so a list is serialised from the texts of its elements
  and only a new element costs an encoding.

The output is byte for byte ``json.dumps(value, separators=(",", ":"))`` (``JSON.stringify``'s
layout): a compact list is ``[`` + its elements' texts joined by ``,`` + ``]``, and an element's
text does not depend on where it sits. Only texts it produced itself are reused as element
texts: a text read from KV may be laid out otherwise, and is parsed, never copied out.

The contract that makes remembering safe: **values are never mutated** once parsed or
serialised here. ``parse`` hands the same value to every caller; a value given to ``dumps`` may
be handed out later by ``parse``. The designs already build new dicts and lists for every change
(``{**msg, ...}``, ``dict(...)``, comprehensions, :func:`qmodel.workers.cache.apply`), as
immutable updates; code that must mutate a parsed value copies it first.
"""

from __future__ import annotations

import json
from typing import Any

from qmodel.sim.http import compact_json

__all__ = ["JsonTexts"]


class JsonTexts:
    """Parses and serialises JSON texts, remembering what it did.

    Memory is bounded: once the texts remembered hold ``max_chars`` characters, or ``size``
    entries, it forgets everything and starts over. Forgetting changes only the speed, never a
    result. (A worker reused for a whole search keeps one of these for its lifetime, and one
    ``recent:comments`` text can be 60 kB.)
    """

    def __init__(self, *, size: int = 2048, max_chars: int = 1_000_000) -> None:
        self._size = size
        self._max_chars = max_chars
        self._chars = 0
        #: text -> the value it parses to
        self._values: dict[str, Any] = {}
        #: id(value) -> (value, its text), for dicts and lists; the value is kept so that its id
        #: cannot be reused by another object while remembered
        self._texts: dict[int, tuple[Any, str]] = {}

    def parse(self, text: str) -> Any:
        """``JSON.parse(text)``; raises ``ValueError`` on malformed JSON, as ``json.loads``."""
        try:
            return self._values[text]
        except KeyError:
            pass
        value = json.loads(text)
        self._make_room(text)
        self._values[text] = value
        return value

    def dumps(self, value: Any) -> str:
        """``JSON.stringify(value)`` of an acyclic JSON value (dicts with string keys, lists,
        strings, numbers, booleans, ``None``); raises ``TypeError`` for what JSON cannot hold."""
        kind = type(value)
        if kind is not dict and kind is not list:
            return compact_json(value)
        known = self._texts.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        if kind is list:
            text = "[" + ",".join([self.dumps(item) for item in value]) + "]"
        else:
            text = compact_json(value)
        self._make_room(text)
        self._texts[id(value)] = (value, text)
        self._values[text] = value
        return text

    def _make_room(self, text: str) -> None:
        self._chars += len(text)
        if self._chars > self._max_chars or len(self._texts) + len(self._values) >= self._size:
            self._texts.clear()
            self._values.clear()
            self._chars = len(text)
