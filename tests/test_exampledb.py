"""The example database: the local folder combined with a shared one named by
``QMODEL_EXAMPLE_DB`` (a directory, a real Redis server, or a GitHub artifact, read-only), so a
failure found on one machine is the first example tried on the next."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.database import (
    DirectoryBasedExampleDatabase,
    GitHubArtifactDatabase,
    MultiplexedDatabase,
    ReadOnlyDatabase,
)

from qmodel import cli
from qmodel.exampledb import InvalidExampleDatabase, example_database, shared_database
from qmodel.profiles import register

CLAIM = [
    "check",
    "--target",
    "catalog:CLAIM_NOT_ATOMIC",
    "--profile",
    "ci",
    "--stop-at-first",
    "--json",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A real redis-server of this test module's own, on a free loopback port, kept in memory
    only; stopped at the end. Without the server installed the tests skip, except under CI
    (``.ci/run`` installs Debian's redis-server), where that is a failure."""
    pytest.importorskip("redis")
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed: apt-get install redis-server"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start on port {port}")
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict[str, object]]:
    code = cli.main(argv)
    return code, json.loads(capsys.readouterr().out)


def _two_machines(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    shared: str,
) -> tuple[dict[str, object], dict[str, object]]:
    """The same check on two 'machines' (two local example folders) sharing ``shared``."""
    monkeypatch.setenv("QMODEL_EXAMPLE_DB", shared)
    results = []
    for machine in ("first", "second"):
        monkeypatch.setenv("HYPOTHESIS_STORAGE_DIRECTORY", str(tmp_path / machine))
        code, obj = _run(capsys, CLAIM)
        assert code == 1, obj
        results.append(obj)
    return results[0], results[1]


def test_second_run_against_one_redis_finds_the_failure_at_once(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    redis_url: str,
) -> None:
    """Two runs on two machines against one real Redis: the first searches, the second replays
    the saved failure as its first example (found_at_example 1), the same violation."""
    import redis

    first, second = _two_machines(capsys, monkeypatch, tmp_path, redis_url)
    assert first["found_at_example"] > 1  # type: ignore[operator]
    assert second["found_at_example"] == 1
    assert second["invariant"] == first["invariant"]
    assert second["trace"] == first["trace"]
    keys = redis.Redis.from_url(redis_url).keys(b"qmodel-example:*")
    assert keys, "nothing was saved under qmodel's prefix"


def test_shared_directory_works_the_same(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A shared folder (a network share, a restored CI artifact) does what Redis does."""
    first, second = _two_machines(capsys, monkeypatch, tmp_path, str(tmp_path / "shared"))
    assert first["found_at_example"] > 1  # type: ignore[operator]
    assert second["found_at_example"] == 1


def test_without_a_shared_database_the_gate_keeps_none(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The ci profile keeps no database unless QMODEL_EXAMPLE_DB is set: every run of the gate
    is the same search, found at the same example."""
    monkeypatch.setenv("HYPOTHESIS_STORAGE_DIRECTORY", str(tmp_path / "local"))
    runs = [_run(capsys, CLAIM)[1] for _ in range(2)]
    assert runs[0]["found_at_example"] == runs[1]["found_at_example"] > 1  # type: ignore[operator]
    assert not (tmp_path / "local").exists()


def test_profiles_combine_local_and_shared(tmp_path: Path) -> None:
    """With QMODEL_EXAMPLE_DB the profiles read and write both databases, and ci gives up
    derandomize for them (its searches are pinned to a seed instead); without, ci keeps none."""
    env = {"QMODEL_EXAMPLE_DB": str(tmp_path / "shared")}
    try:
        register(env)
        ci = settings.get_profile("qmodel-ci")
        assert isinstance(ci.database, MultiplexedDatabase) and not ci.derandomize
        assert isinstance(settings.get_profile("qmodel-nightly").database, MultiplexedDatabase)
        register({})
        assert settings.get_profile("qmodel-ci").database is None
        assert settings.get_profile("qmodel-ci").derandomize
        assert isinstance(
            settings.get_profile("qmodel-dev").database, DirectoryBasedExampleDatabase
        )
    finally:
        register()
    assert isinstance(example_database({}), DirectoryBasedExampleDatabase)


def test_github_artifact_is_read_only() -> None:
    """github:OWNER/REPO[/ARTIFACT] reads the artifact a workflow uploaded, never writes it."""
    db = shared_database("github:acme/chat")
    assert isinstance(db, ReadOnlyDatabase)
    inner = db._wrapped
    assert isinstance(inner, GitHubArtifactDatabase)
    assert (inner.owner, inner.repo, inner.artifact_name) == ("acme", "chat", "qmodel-example-db")
    named = shared_database("github:acme/chat/nightly-db")._wrapped  # type: ignore[attr-defined]
    assert named.artifact_name == "nightly-db"


@pytest.mark.parametrize(
    "value, message",
    [
        ("", "QMODEL_EXAMPLE_DB is set but empty"),
        ("ftp://host/db", "unknown scheme 'ftp'"),
        ("github:acme", "write github:OWNER/REPO or github:OWNER/REPO/ARTIFACT"),
        ("redis://host:notaport/0", "not a Redis URL"),
    ],
)
def test_bad_values_say_what_to_write(value: str, message: str) -> None:
    """A value naming no database is refused with the accepted forms."""
    with pytest.raises(InvalidExampleDatabase, match=message):
        shared_database(value)


def test_a_file_is_not_a_database(tmp_path: Path) -> None:
    """A path to a file is refused (a directory is created when missing)."""
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(InvalidExampleDatabase, match="that path is a file; give a directory"):
        shared_database(str(f))


def test_bad_value_is_a_json_error_of_the_command_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """qmodel check with a bad QMODEL_EXAMPLE_DB exits 2 with one JSON object saying so."""
    monkeypatch.setenv("QMODEL_EXAMPLE_DB", "ftp://host/db")
    code, obj = _run(capsys, ["check", "--target", "sound", "--json"])
    assert code == 2 and obj["verdict"] == "error"
    assert obj["error"] == {
        "kind": "example-database",
        "message": "QMODEL_EXAMPLE_DB=ftp://host/db: unknown scheme 'ftp'; give a directory, a "
        "redis:// URL or github:OWNER/REPO[/ARTIFACT]",
    }
