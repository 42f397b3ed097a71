"""``Request`` and ``Response`` shaped like the Fetch API, as Workers see them.

A target receives a :class:`Request` and returns a :class:`Response`. Bodies are text; the
``json()`` helpers parse and serialise JSON, and ``await request.json()`` reads exactly as in a
Worker. :class:`URL` gives ``pathname`` and ``search_params`` as ``new URL(request.url)`` does.
The Node lane maps these records 1:1 to their JavaScript namesakes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import attrs

__all__ = ["Headers", "Request", "Response", "URL", "compact_json", "json_response"]

#: The origin simulated requests are addressed to; any would do.
ORIGIN = "https://worker.qmodel.test"


def _compact_json() -> Callable[[Any], str]:
    """``JSON.stringify``: a function giving ``json.dumps(value, separators=(",", ":"))``, byte
    for byte.

    ``json.dumps`` builds a new encoder object for every call, and ``JSONEncoder.encode`` then
    sets up the C encoder through two Python layers: for the small bodies of a simulated run
    that costs more than the encoding itself, and a run encodes tens of thousands. So the C
    encoder is made here directly, as ``JSONEncoder.iterencode`` makes it. Should the C
    accelerator be missing or answer differently, the plain encoder is used.
    """
    plain = json.JSONEncoder(separators=(",", ":"))
    make = getattr(json.encoder, "c_make_encoder", None)
    ascii_str = json.encoder.encode_basestring_ascii
    if make is None:
        return plain.encode

    def encode(value: Any) -> str:
        # The arguments iterencode passes: markers (fresh, so a circular value raises ValueError
        # as in json.dumps), default, string encoder, indent, separators, sort_keys, skipkeys,
        # allow_nan.
        c_encoder = make({}, plain.default, ascii_str, None, ":", ",", False, False, True)
        return "".join(c_encoder(value, 0))

    probe = {"a": [1, -2.5, float("inf"), None, True, "é\n\u2028"], "b": {}, "c": "x"}
    try:
        if encode(probe) == plain.encode(probe) and encode("é") == plain.encode("é"):
            return encode
    except Exception:  # a different C encoder signature: use the plain path
        pass
    return plain.encode


#: ``JSON.stringify(value)`` (see :func:`_compact_json`).
compact_json = _compact_json()


class Headers:
    """Case-insensitive header map (the Fetch API's ``Headers``)."""

    __slots__ = ("_items",)

    def __init__(self, init: Mapping[str, str] | Iterable[tuple[str, str]] | None = None) -> None:
        self._items: dict[str, str] = {}
        if init is not None:
            # A dict first: the Mapping check is an abstract-class check, slow on every response.
            mapping = isinstance(init, dict) or isinstance(init, Mapping)
            pairs = init.items() if mapping else init
            for k, v in pairs:
                self._items[k.lower()] = str(v)

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._items.get(name.lower(), default)

    def set(self, name: str, value: str) -> None:
        self._items[name.lower()] = str(value)

    def has(self, name: str) -> bool:
        return name.lower() in self._items

    def items(self) -> list[tuple[str, str]]:
        return sorted(self._items.items())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


class URL:
    """The parts of a URL a worker routes on (``new URL(request.url)``)."""

    __slots__ = ("href", "pathname", "search_params")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.href = url
        self.pathname = parts.path or "/"
        #: First value per name, as ``URLSearchParams.get`` answers.
        self.search_params: dict[str, str] = {}
        if parts.query:
            for k, v in parse_qsl(parts.query, keep_blank_values=True):
                self.search_params.setdefault(k, v)


def _to_headers(headers: Headers | Mapping[str, str] | None) -> Headers:
    return headers if isinstance(headers, Headers) else Headers(headers)


@attrs.define(eq=False)
class Request:
    """An HTTP request: ``method``, absolute ``url``, ``headers`` and a text ``body``."""

    method: str
    url: str
    headers: Headers = attrs.field(factory=Headers, converter=_to_headers)
    body: str | None = None

    @classmethod
    def make(
        cls,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        json_body: Any = None,
    ) -> Request:
        """Build a request to ``path`` on the simulated origin, with an optional JSON body."""
        url = ORIGIN + path
        if query:
            url += "?" + urlencode({k: str(v) for k, v in query.items()})
        headers = Headers()
        body = None
        if json_body is not None:
            body = compact_json(json_body)
            headers.set("content-type", "application/json")
        return cls(method.upper(), url, headers, body)

    async def text(self) -> str:
        """The body as text (empty when there is none)."""
        return self.body or ""

    async def json(self) -> Any:
        """The body parsed as JSON; raises ``ValueError`` on malformed JSON, as ``request.json()``
        rejects."""
        return json.loads(self.body or "")

    def describe(self) -> str:
        """``METHOD /path?query``, for traces."""
        parts = urlsplit(self.url)
        return f"{self.method} {parts.path}" + (f"?{parts.query}" if parts.query else "")


@attrs.define(eq=False, repr=False)
class Response:
    """An HTTP response: ``status``, ``headers`` and a text ``body``."""

    body: str = ""
    status: int = 200
    headers: Headers = attrs.field(factory=Headers, converter=_to_headers)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def __repr__(self) -> str:
        # Short, and cheap: the scheduler's step records show a finished request by its repr.
        return f"<Response {self.status}, {len(self.body)} chars>"

    async def text(self) -> str:
        return self.body

    async def json(self) -> Any:
        return json.loads(self.body)

    def json_body(self) -> Any:
        """The body parsed as JSON, or ``None`` when it is not JSON (for clients and checks)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``Response.json(data, {status})``: a JSON body with its content type."""
    h = Headers(headers)
    h.set("content-type", "application/json")
    return Response(compact_json(data), status, h)
