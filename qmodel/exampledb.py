"""Where a search keeps the counterexamples it found: the local example database, and a shared
one named by ``QMODEL_EXAMPLE_DB``.

Hypothesis saves every failing example under a key and tries the saved ones first on the next
run. qmodel keys them by the target and the configuration (:func:`database_key`), so different
targets, protocols or invariant selections never replay or evict each other's failures, and the
same target checked on another machine finds its key again.

``QMODEL_EXAMPLE_DB`` names a shared database, combined with the local one (a failure found
anywhere is saved to both, and either is read):

* a directory path: a :class:`~hypothesis.database.DirectoryBasedExampleDatabase` (a network
  share, or a folder a CI job restores and uploads);
* ``redis://host:port/db`` (or ``rediss://``): Hypothesis's
  :class:`~hypothesis.extra.redis.RedisExampleDatabase` (needs the ``redis`` package:
  ``pip install 'qmodel-workers[redis]'``);
* ``github:OWNER/REPO`` or ``github:OWNER/REPO/ARTIFACT``: the example database a GitHub Actions
  workflow uploaded as an artifact (default name ``qmodel-example-db``), read-only, through
  Hypothesis's :class:`~hypothesis.database.GitHubArtifactDatabase` (``GITHUB_TOKEN`` must be set
  for a private repository).

The local database is Hypothesis's own folder (``.hypothesis/examples``, or under
``HYPOTHESIS_STORAGE_DIRECTORY``).
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hypothesis.database import (
    DirectoryBasedExampleDatabase,
    ExampleDatabase,
    GitHubArtifactDatabase,
    MultiplexedDatabase,
    ReadOnlyDatabase,
)

from qmodel.errors import QmodelError

__all__ = [
    "ARTIFACT_NAME",
    "ENV_VAR",
    "InvalidExampleDatabase",
    "database_key",
    "local_database",
    "shared_database",
    "example_database",
    "target_name",
]

#: The environment variable naming the shared database.
ENV_VAR = "QMODEL_EXAMPLE_DB"
#: The artifact name a ``github:`` database reads unless the URL names another.
ARTIFACT_NAME = "qmodel-example-db"
#: Prefix of qmodel's keys in a Redis server that other programs may share.
REDIS_PREFIX = b"qmodel-example:"


class InvalidExampleDatabase(QmodelError, ValueError):
    """``QMODEL_EXAMPLE_DB`` names no database qmodel can open. ``value`` is what was given."""

    def __init__(self, message: str, *, value: str) -> None:
        super().__init__(message)
        self.value = value


def database_key(target: str, configuration: str, invariants: Iterable[str]) -> bytes:
    """The key a machine's examples are saved under: a digest of the target's name, the world's
    configuration (its ``repr``) and the ids of the invariants checked.

    The same three give the same key in every process and on every machine (no ``hash()``, no
    address, no path outside what the caller passes); changing any of them gives another key.
    The design's code is deliberately not part of it: after a fix, the saved failure is what
    should be tried first.
    """
    text = "\n".join((target, configuration, ",".join(sorted(invariants))))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32].encode("ascii")


def target_name(target: Any) -> str:
    """A name for ``target`` (what :func:`~qmodel.machine.machine_for` was given) that is the
    same in every process: ``module:qualname`` of a class, a function or an instance's class;
    a module's name; for a bound method (a catalog entry's ``target``) or an instance, the
    owner's ``repr`` too, when that repr holds no memory address."""
    if inspect.ismodule(target):
        return target.__name__
    owner = getattr(target, "__self__", None)
    if inspect.ismethod(target) and owner is not None:
        return f"{target_name(owner)}.{target.__name__}"
    if isinstance(target, type) or inspect.isfunction(target):
        return f"{target.__module__}:{target.__qualname__}"
    cls = type(target)
    text = repr(target)
    shown = "" if " at 0x" in text else f" {text}"
    return f"{cls.__module__}:{cls.__qualname__}{shown}"


def local_database() -> ExampleDatabase:
    """Hypothesis's local example folder (``.hypothesis/examples`` by default)."""
    # The folder Hypothesis itself would use; it is created on the first save.
    home = os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY") or ".hypothesis"
    return DirectoryBasedExampleDatabase(Path(home) / "examples")


def shared_database(value: str) -> ExampleDatabase:
    """The database ``value`` (the text of ``QMODEL_EXAMPLE_DB``) names; raises
    :class:`InvalidExampleDatabase` saying what forms are accepted when it names none."""
    text = value.strip()
    if not text:
        raise InvalidExampleDatabase(
            f"{ENV_VAR} is set but empty; unset it, or give a directory, a redis:// URL or "
            "github:OWNER/REPO",
            value=value,
        )
    if text.startswith(("redis://", "rediss://", "unix://")):
        return _redis(text)
    if text.startswith("github:"):
        return _github(text)
    if "://" in text:
        raise InvalidExampleDatabase(
            f"{ENV_VAR}={text}: unknown scheme {text.split('://', 1)[0]!r}; give a directory, "
            "a redis:// URL or github:OWNER/REPO[/ARTIFACT]",
            value=value,
        )
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise InvalidExampleDatabase(
            f"{ENV_VAR}={text}: that path is a file; give a directory (it is created if missing)",
            value=value,
        )
    return DirectoryBasedExampleDatabase(path)


def example_database(environ: dict[str, str] | None = None) -> ExampleDatabase:
    """The local database, combined with the shared one when ``QMODEL_EXAMPLE_DB`` is set in
    ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ
    local = local_database()
    value = env.get(ENV_VAR)
    if value is None:
        return local
    return MultiplexedDatabase(local, shared_database(value))


def _redis(url: str) -> ExampleDatabase:
    try:
        import redis
        from hypothesis.extra.redis import RedisExampleDatabase
    except ImportError:
        raise InvalidExampleDatabase(
            f"{ENV_VAR}={url} names a Redis server, but the redis package is not installed; "
            "pip install 'qmodel-workers[redis]'",
            value=url,
        ) from None
    try:
        client = redis.Redis.from_url(url)
    except ValueError as err:
        raise InvalidExampleDatabase(
            f"{ENV_VAR}={url}: not a Redis URL ({err}); write redis://HOST:PORT/DB",
            value=url,
        ) from None
    return RedisExampleDatabase(client, key_prefix=REDIS_PREFIX)


def _github(text: str) -> ExampleDatabase:
    parts = text.removeprefix("github:").strip("/").split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidExampleDatabase(
            f"{ENV_VAR}={text}: write github:OWNER/REPO or github:OWNER/REPO/ARTIFACT",
            value=text,
        )
    owner, repo = parts[0], parts[1]
    artifact = parts[2] if len(parts) == 3 else ARTIFACT_NAME
    # Read-only: a workflow publishes the database by uploading its local folder as an artifact.
    return ReadOnlyDatabase(GitHubArtifactDatabase(owner, repo, artifact_name=artifact))
