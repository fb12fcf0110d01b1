"""vrnn-serve's OpenAI-compatible routes, driven by the official `openai` client on a loopback port."""

from __future__ import annotations

import re
import subprocess
import sys

import openai
import pytest
from conftest import REPO
from test_serve import serving


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0, timeout=30)


def test_models_list_and_retrieve_name_the_served_cell() -> None:
    with serving() as server:
        models = client(server.url).models.list()
        assert [m.id for m in models.data] == ["shakespeare"]
        assert models.data[0].object == "model" and models.data[0].owned_by == "vrnn"
        assert client(server.url).models.retrieve("shakespeare").id == "shakespeare"
        with pytest.raises(openai.NotFoundError, match="this server serves 'shakespeare'"):
            client(server.url).models.retrieve("gpt-4")


def test_chat_completions_get_a_404_that_says_to_use_completions() -> None:
    with serving() as server, pytest.raises(openai.NotFoundError, match="/v1/completions"):
        client(server.url).chat.completions.create(model="shakespeare", messages=[{"role": "user", "content": "hi"}])


def test_the_python_examples_of_the_openai_section_run_as_written() -> None:
    """Each ```python block of docs/serving.md's "OpenAI-compatible" section, against a server (its port for
    8000), prints what its comment says."""
    section = (REPO / "docs" / "serving.md").read_text().split("## OpenAI-compatible", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks
    with serving() as server:
        for code in blocks:
            run = subprocess.run([sys.executable, "-c", code.replace("http://127.0.0.1:8000", server.url)],
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
            assert run.returncode == 0, run.stderr
            shown = re.findall(r"# (.+)$", code, re.M)
            assert run.stdout.splitlines() == shown, (run.stdout, shown)
