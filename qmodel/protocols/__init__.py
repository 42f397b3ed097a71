"""The protocols qmodel knows by name, and how a protocol is found by name or by reference.

Built in: the chat protocol's eras ``patch``, ``queue``, ``do``, ``queues`` and ``queues-push``
(:mod:`qmodel.protocols.chat`) and the job queue ``jobs`` (:mod:`qmodel.protocols.jobs`). A
user's own protocol is named ``package.module:NAME`` (a :class:`~qmodel.protocol.Protocol`
value in an importable module, or a ``path/to/file.py:NAME``). Built-in protocols are imported
when first asked for, so this module is cheap to import.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from qmodel.errors import QmodelError
from qmodel.protocol import Protocol

__all__ = ["BUILTIN", "UnknownProtocol", "get", "names"]

#: Built-in protocol names and where their values live.
BUILTIN: dict[str, str] = {
    "patch": "qmodel.protocols.chat.eras:PATCH",
    "queue": "qmodel.protocols.chat.eras:QUEUE",
    "do": "qmodel.protocols.chat.eras:DO",
    "jobs": "qmodel.protocols.jobs.protocol:JOBS",
    "queues": "qmodel.protocols.chat.eras:QUEUES",
    "queues-push": "qmodel.protocols.chat.eras:QUEUES_PUSH",
}


class UnknownProtocol(QmodelError, KeyError):
    """A protocol name that is neither built in nor a loadable ``module:NAME`` reference."""

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message

    def __str__(self) -> str:
        return self.message


def names() -> tuple[str, ...]:
    """The built-in protocol names."""
    return tuple(BUILTIN)


def get(name: str | Protocol) -> Protocol:
    """The protocol ``name``: a built-in name, ``package.module:NAME``,
    ``path/to/file.py:NAME``, or a :class:`Protocol` (returned as it is).

    An unknown name raises :class:`UnknownProtocol` with the closest built-in names; a
    reference that does not load, or names something that is not a protocol, says which.
    """
    if isinstance(name, Protocol):
        return name
    if not isinstance(name, str) or not name:
        raise UnknownProtocol(
            f"a protocol is a name ({', '.join(BUILTIN)}) or package.module:NAME; got {name!r}",
            name=str(name),
        )
    if name in BUILTIN:
        return _load(BUILTIN[name], name)
    if ":" in name:
        return _load(name, name)
    close = difflib.get_close_matches(name, list(BUILTIN), n=3)
    hint = f" Closest matches: {', '.join(close)}." if close else ""
    raise UnknownProtocol(
        f"unknown protocol {name!r}.{hint} Built-in protocols: {', '.join(BUILTIN)}; a "
        "protocol of your own is named package.module:NAME",
        name=name,
    )


def _load(ref: str, name: str) -> Protocol:
    where, _, attr = ref.rpartition(":")
    if not where or not attr.isidentifier():
        raise UnknownProtocol(
            f"protocol {name!r}: a reference is package.module:NAME or path/to/file.py:NAME",
            name=name,
        )
    try:
        module = _import(where)
    except Exception as exc:  # an import error of the user's module, whatever it is
        raise UnknownProtocol(
            f"protocol {name!r}: {where} could not be imported: {type(exc).__name__}: {exc}",
            name=name,
        ) from exc
    value = getattr(module, attr, None)
    if not isinstance(value, Protocol):
        got = "nothing" if value is None else f"a {type(value).__name__}"
        raise UnknownProtocol(
            f"protocol {name!r}: {where} has {got} named {attr}, not a qmodel.protocol.Protocol",
            name=name,
        )
    return value


def _import(where: str) -> object:
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise FileNotFoundError(f"no file {where}")
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        modname = f"qmodel_protocol_{digest}"
        if modname in sys.modules:
            return sys.modules[modname]
        spec = importlib.util.spec_from_file_location(modname, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[modname] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(where)
