"""What ships beside the code: the README's set-up, the documents it links, the GitHub Actions
workflow for users, and the package's metadata."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from importlib.metadata import metadata, version
from pathlib import Path

import pytest
import yaml
from hypothesis import settings

import qmodel

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
WORKFLOW = ROOT / "docs" / "github-actions.yml"


def fresh_machine_commands() -> tuple[str, list[str]]:
    """The README's "On a fresh machine" section: its prerequisites line and its commands."""
    section = README.split("## On a fresh machine", 1)[1].split("\n## ", 1)[0]
    prerequisites = next(line for line in section.splitlines() if line.startswith("Prerequisites"))
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    return prerequisites, [line for line in block.group(1).splitlines() if line.strip()]


def test_fresh_machine_is_two_commands_after_the_prerequisites() -> None:
    """Exactly two commands: one installs and runs qmodel check on its default, one installs
    what the tests need (the Mermaid checker included) and runs them; the prerequisites name
    the Python and Node versions."""
    prerequisites, commands = fresh_machine_commands()
    assert "Python 3.11 or newer" in prerequisites and "Node.js 20.6 or newer" in prerequisites
    assert len(commands) == 2
    main_job, tests = commands
    assert main_job.endswith("pip install -e . && qmodel check")
    assert "npm ci --prefix tools/esbuild" in tests
    assert "npm ci --prefix tools/mermaid-check" in tests and "'.[test]'" in tests
    assert tests.endswith("&& pytest")


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run runs the README's test command verbatim."""
    _, (_, tests) = fresh_machine_commands()
    run = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests in run.splitlines()


def _links(text: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("doc", ["README.md", "docs/PROTOCOL.md", "docs/seeds.md"], ids=lambda d: d)
def test_links_stay_in_the_repository(doc: str) -> None:
    """Every link of the README and of the documents it points to resolves to a file of the
    repository (or a heading of the README); none leaves it."""
    path = ROOT / doc
    text = path.read_text(encoding="utf-8")
    links = _links(text)
    assert links
    for link in links:
        assert "://" not in link and not link.startswith(".."), f"{doc}: {link}"
        target = link.split("#", 1)[0]
        if target:
            assert (path.parent / target).exists(), f"{doc}: {link} does not exist"
    # The shared folders of the project's own making do not ship: cite docs/ instead.
    assert "../shared" not in text and "`reference/" not in text and "`seeds/" not in text


def test_readme_anchors_exist() -> None:
    """The README's links to its own sections name existing headings."""
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", README, re.M)
    }
    for link in _links(README):
        if link.startswith("#"):
            assert link[1:] in headings, link


def test_workflow_is_valid_yaml_with_the_documented_steps() -> None:
    """The workflow parses; it runs the gate under a qmodel profile with the report folder it
    uploads, appends the reports to the job summary, and shares the example database."""
    doc = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request", "schedule"} <= set(triggers)
    job = doc["jobs"]["qmodel"]
    env = job["env"]
    assert env["QMODEL_EXAMPLE_DB"] == "github:${{ github.repository }}/qmodel-example-db"
    for profile in re.findall(r"'(qmodel-\w+)'", env["PROFILE"]):
        settings.get_profile(profile)  # a profile the plugin registers
    steps = job["steps"]
    runs = [s.get("run", "") for s in steps]
    gate = next(r for r in runs if r.startswith("pytest"))
    assert '--hypothesis-profile="$PROFILE"' in gate and "--qmodel-report qmodel-reports" in gate
    assert any("$GITHUB_STEP_SUMMARY" in r and "qmodel-reports/*.md" in r for r in runs)
    uploads = {
        s["with"]["name"]: s["with"] for s in steps if "upload-artifact" in s.get("uses", "")
    }
    assert uploads["qmodel-reports"]["path"] == "qmodel-reports/"
    assert uploads["qmodel-example-db"]["path"] == ".hypothesis/examples/"
    assert uploads["qmodel-example-db"]["include-hidden-files"] is True


def test_workflow_scripts_are_valid_shell() -> None:
    """Every run: script of the workflow parses as bash."""
    bash = shutil.which("bash")
    assert bash is not None
    doc = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    for step in doc["jobs"]["qmodel"]["steps"]:
        if "run" in step:
            proc = subprocess.run([bash, "-n", "-c", step["run"]], capture_output=True, text=True)
            assert proc.returncode == 0, (step["run"], proc.stderr)


def test_package_metadata() -> None:
    """The distribution qmodel-workers carries the version of qmodel/__init__.py, the SPDX
    license with its file, the pytest and Hypothesis classifiers, the tested Hypothesis range,
    and py.typed."""
    meta = metadata("qmodel-workers")
    assert version("qmodel-workers") == qmodel.__version__
    assert meta["License-Expression"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    classifiers = meta.get_all("Classifier") or []
    assert "Framework :: Pytest" in classifiers and "Framework :: Hypothesis" in classifiers
    requires = meta.get_all("Requires-Dist") or []
    assert any(r.replace(" ", "").startswith("hypothesis<7,>=6.138.15") for r in requires), requires
    assert (ROOT / "qmodel" / "py.typed").exists()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["qmodel"]
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
