"""The README's shell blocks run as written (from a scratch directory), except the ones listed in SKIPPED with
the reason; a skipped command whose output a later one reads is replaced by a short equivalent."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

# command prefix -> why the test does not run it
SKIPPED = {
    "pip install": "installs packages: CI's set-up does exactly this",
    "make setup": "installs packages: CI's set-up does exactly this",
    ". .venv/bin/activate": "a shell's own command; this test puts the environment's bin/ on PATH instead",
    "make demo": "long (set-up, 300 training steps); its parts are the by-hand commands below",
    "make check": "a part of this suite",
    "make test": "this suite itself",
    "npm ci --prefix clients/js": "installs packages: `make js-test` does exactly this",
    "node clients/js/examples/sample.mjs": "the JavaScript suite runs it (clients/js/test/example.test.mjs)",
    "vrnn-train tinyshakespeare -o runs/mine.pt --minutes 10": "long (ten minutes); made by a 30-step run instead",
}


def shell_commands(markdown: str) -> list[str]:
    """The command lines of the ```sh blocks, comments stripped, continuation lines joined."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", markdown, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


@pytest.mark.slow
def test_every_readme_shell_command_runs(tmp_path: Path, tiny_corpus: Path) -> None:
    commands = shell_commands((REPO / "README.md").read_text(encoding="utf-8"))
    assert len(commands) >= 6
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    ran = []
    for command in commands:
        skip = next((reason for prefix, reason in SKIPPED.items() if command.startswith(prefix)), None)
        if skip is not None:
            if command.startswith("vrnn-train"):
                (tmp_path / "runs").mkdir(exist_ok=True)
                short = [str(tiny_corpus), "-o", "runs/mine.pt", "--preset", "tiny", "--steps", "30", "-q"]
                subprocess.run(["vrnn-train", *short], cwd=tmp_path, env=env, check=True, capture_output=True)
            continue
        result = subprocess.run(shlex.split(command), cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=300)  # fmt: skip
        assert result.returncode == 0, f"{command}: {result.stderr}"
        ran.append(command)
    assert any(c.startswith("vrnn-run") for c in ran) and any(c.startswith("vrnn-export") for c in ran)


def test_the_readme_python_example_runs_as_written(tmp_path: Path) -> None:
    """The Python API block runs on the bundled cell, from any folder, with nothing made beforehand."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), flags=re.S)
    result = subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ROMEO:") and len(result.stdout) > 1000


def test_the_readme_sample_is_what_its_command_prints() -> None:
    """The sample under the README's opening is the bundled model's text for the command it names, whole lines."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    command, shown = re.search(r"The bundled Tiny Shakespeare model \(`([^`]+)`\):\n\n```\n(.*?)```", readme,
                               flags=re.S).groups()  # fmt: skip
    args = shlex.split(command)
    assert args[0] == "vrnn-run"
    printed = subprocess.run([sys.executable, "-m", "vrnn.runtime.cli", *args[1:]], capture_output=True, text=True,
                             timeout=120, check=True).stdout  # fmt: skip
    assert printed == shown


def test_the_readme_shows_the_javascript_example_as_it_is() -> None:
    """The README's JavaScript block is clients/js/examples/sample.mjs, which the JavaScript suite runs."""
    blocks = re.findall(r"```js\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), flags=re.S)
    shown = "\n".join(line.removeprefix("  ") for line in blocks[0].splitlines()) + "\n"
    assert shown.strip() == (REPO / "clients/js/examples/sample.mjs").read_text(encoding="utf-8").strip()


def prose(markdown: str) -> str:
    """The page without its fenced code blocks, where '#' and '](' are code, not headings or links."""
    return re.sub(r"```.*?```", "", markdown, flags=re.S)


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", prose(markdown), flags=re.M):
        text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
        anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


def test_every_relative_link_in_the_docs_resolves() -> None:
    """A link from the README or docs/ to a file of the repository, or to a heading in it, names one that exists
    (headings get renamed as results come in; a stale anchor fails here, not for a reader)."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", prose(page.read_text(encoding="utf-8"))):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not this test's business
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked.read_text("utf-8")):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
