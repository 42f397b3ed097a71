"""A Workers project as the target: the Wrangler configuration read as Wrangler reads it (JSONC
with comments and trailing commas, the search order, main, a Durable Object of the worker's own
script), and a project folder checked through its main module."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from qmodel import cli
from qmodel.errors import InvalidTarget
from qmodel.node.config import bindings_for, find_config, main_of, parse_jsonc
from qmodel.targets import resolve

ROOT = Path(__file__).resolve().parent.parent
SOUND = ROOT / "examples" / "workers" / "sound"

JSONC = """{
  // the sound design, as a wrangler.jsonc
  "name": "comments-sound",
  "main": "worker.mjs", /* the entry */
  "compatibility_date": "2025-01-01",
  "vars": { "GREETING": "a,}b // not a comment", "URL": "https://x.test/*y*/", },
  "kv_namespaces": [
    { "binding": "COMMENTS_KV", "id": "00000000000000000000000000000000" },
  ],
  "durable_objects": {
    "bindings": [
      { "name": "QUEUE", "class_name": "MessageQueue", "script_name": "comments-sound" },
    ],
  },
}
"""


def test_jsonc_keeps_strings_whole() -> None:
    """Comments and trailing commas go; a string holding ,} or // or /* stays as written."""
    data = parse_jsonc(JSONC)
    assert data["vars"] == {"GREETING": "a,}b // not a comment", "URL": "https://x.test/*y*/"}
    assert data["kv_namespaces"] == [
        {"binding": "COMMENTS_KV", "id": "00000000000000000000000000000000"}
    ]
    assert parse_jsonc("[1, 2, /* three */ ]") == [1, 2]


def test_the_search_order_is_wranglers(tmp_path: Path) -> None:
    """In a folder with wrangler.toml and wrangler.json, the .json is read; a parent's
    configuration is found from a subfolder."""
    (tmp_path / "wrangler.toml").write_text('name = "toml"\nmain = "a.mjs"\n')
    (tmp_path / "wrangler.json").write_text('{"name": "json", "main": "b.mjs"}')
    (tmp_path / "src").mkdir()
    assert find_config(tmp_path) == tmp_path / "wrangler.json"
    assert find_config(tmp_path / "src" / "worker.mjs") == tmp_path / "wrangler.json"
    assert main_of(tmp_path / "wrangler.json") == (tmp_path / "b.mjs").resolve()


def test_a_durable_object_of_the_workers_own_script_is_no_other_workers(tmp_path: Path) -> None:
    """script_name equal to the worker's own name is its own class; another script's class is
    refused, and --do-binding gets past that refusal."""
    (tmp_path / "wrangler.jsonc").write_text(JSONC)
    worker = tmp_path / "worker.mjs"
    assert dict(bindings_for(worker).durable) == {"QUEUE": "MessageQueue"}
    (tmp_path / "wrangler.jsonc").write_text(
        JSONC.replace('"script_name": "comments-sound"', '"script_name": "other"')
    )
    with pytest.raises(InvalidTarget, match="uses class MessageQueue of another worker"):
        bindings_for(worker)
    assert dict(bindings_for(worker, durable=["QUEUE=Local"]).durable) == {"QUEUE": "Local"}


def test_a_folder_without_configuration_or_with_a_missing_main_says_so(tmp_path: Path) -> None:
    """A folder with no Wrangler file, and a main that is missing (TypeScript or not), each get
    a message that says what to do."""
    with pytest.raises(InvalidTarget, match="a folder without a Wrangler configuration"):
        resolve(str(tmp_path))
    (tmp_path / "wrangler.json").write_text('{"name": "x", "main": "src/index.ts"}')
    with pytest.raises(InvalidTarget, match="index.ts, which does not exist"):
        resolve(str(tmp_path))
    (tmp_path / "wrangler.json").write_text('{"name": "x", "main": "gone.js"}')
    with pytest.raises(InvalidTarget, match="which does not exist"):
        resolve(str(tmp_path))


@pytest.mark.skipif(
    shutil.which(os.environ.get("QMODEL_NODE") or "node") is None
    and os.environ.get("QMODEL_REQUIRE_NODE") != "1",
    reason="Node.js is not installed (the Node lane's tests need it)",
)
def test_a_project_folder_is_checked_through_its_main(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """qmodel check --target FOLDER runs the main module its wrangler.jsonc names, with the
    bindings it declares (its Durable Object of its own script included)."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(SOUND / "worker.mjs", project / "worker.mjs")
    (project / "wrangler.jsonc").write_text(JSONC)
    code = cli.main(
        ["check", "--target", str(project), "--profile", "dev", "--max-examples", "3", "--json"]
    )
    answer = json.loads(capsys.readouterr().out)
    assert code == 0 and answer["verdict"] == "ok", answer
    assert answer["target"] == str((project / "worker.mjs").resolve())
