"""vrnn-serve's OpenAI-compatible routes, driven by the official `openai` client on a loopback port."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import openai
import pytest
from conftest import REPO
from test_serve import BUNDLED, Server, serving

from vrnn.runtime import Sampler


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


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serving("--max-length", "2000") as running:
        yield running


def test_completions_whole_and_streamed_are_vrnn_runs_text(server: Server) -> None:
    """prompt P, seed S and options O: exactly `vrnn-run --prime P --seed S` with O, without the prime."""
    sampler = Sampler.from_onnx(BUNDLED)
    api = client(server.url)
    for options in ({}, {"temperature": 0.7, "top_p": 0.9}, {"extra_body": {"top_k": 5, "latent_temperature": 0.5}}):
        whole = api.completions.create(model="shakespeare", prompt="ROMEO:", max_tokens=120, seed=3, **options)
        keywords = {**{k: v for k, v in options.items() if k != "extra_body"}, **options.get("extra_body", {})}
        expected = sampler.generate(120, prime="ROMEO:", seed=3, **keywords)[len("ROMEO:") :]
        (choice,) = whole.choices
        assert choice.text == expected and choice.finish_reason == "length" and choice.index == 0
        assert whole.object == "text_completion" and whole.model == "shakespeare"
        assert whole.usage.prompt_tokens == 6 and whole.usage.completion_tokens == 120
        streamed = api.completions.create(model="shakespeare", prompt="ROMEO:", max_tokens=120, seed=3, stream=True,
                                          **options)  # fmt: skip
        chunks = list(streamed)
        assert "".join(c.choices[0].text for c in chunks) == expected
        assert chunks[-1].choices[0].finish_reason == "length"


def test_stop_n_list_prompts_echo_and_greedy(server: Server) -> None:
    sampler = Sampler.from_onnx(BUNDLED)
    api = client(server.url)
    stopped = api.completions.create(model="shakespeare", prompt="", max_tokens=300, seed=1, stop=["\n\n"])
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].text == sampler.complete(300, seed=1, stop="\n\n")[0].text
    three = api.completions.create(model="shakespeare", prompt="JULIET:", max_tokens=80, seed=9, n=3)
    batch = sampler.generate(80, prime="JULIET:", seed=9, num_samples=3)  # choice i is sample i of the batch
    assert [c.text for c in three.choices] == [t[len("JULIET:") :] for t in batch]
    listed = api.completions.create(model="shakespeare", prompt=["A", "B"], max_tokens=40, seed=2, n=2, echo=True)
    assert [c.index for c in listed.choices] == [0, 1, 2, 3]
    for c, prime in zip(listed.choices, ["A", "A", "B", "B"], strict=True):
        assert c.text == sampler.generate(40, prime=prime, seed=2, num_samples=2)[c.index % 2]
    greedy = api.completions.create(model="shakespeare", prompt="", max_tokens=50, seed=4, temperature=0)
    assert greedy.choices[0].text == sampler.generate(50, seed=4, greedy=True)


def test_logprobs_match_sampler_complete(server: Server) -> None:
    api = client(server.url)
    answer = api.completions.create(model="shakespeare", prompt="ROMEO:", max_tokens=60, seed=5, logprobs=2,
                                    temperature=0.8)  # fmt: skip
    expected = Sampler.from_onnx(BUNDLED).complete(60, prime="ROMEO:", seed=5, logprobs=2, temperature=0.8)[0]
    lp = answer.choices[0].logprobs
    assert lp.tokens == list(expected.text) and len(lp.token_logprobs) == 60
    assert lp.token_logprobs == pytest.approx(expected.logprobs, abs=1e-12)
    assert all(len(top) <= 2 for top in lp.top_logprobs) and lp.top_logprobs == expected.top_logprobs


def test_bad_parameters_raise_bad_request_and_a_full_server_a_retryable_error(server: Server) -> None:
    api = client(server.url)
    bad_ones = [{"presence_penalty": 0.5}, {"logit_bias": {"5": 1}}, {"best_of": 3}, {"suffix": "x"},
                {"max_tokens": 0}, {"n": 17}, {"prompt": [1, 2]}, {"temperature": -1}, {"stop": ["a"] * 5}]  # fmt: skip
    for bad in bad_ones:
        arguments = {"model": "shakespeare", "prompt": "", "max_tokens": 5, **bad}
        with pytest.raises(openai.BadRequestError):
            api.completions.create(**arguments)
    with pytest.raises(openai.NotFoundError):
        api.completions.create(model="gpt-4", prompt="", max_tokens=5)
    with serving("--max-batch", "1", "--max-queue", "0", "--max-length", "1000000") as full:
        hold = httpx.Client(timeout=60)
        with hold.stream("POST", f"{full.url}/v1/generate", json={"length": 1_000_000, "stream": True}) as r:
            chunks = r.iter_raw()  # (kept: a dropped iterator closes the response)
            next(chunks)
            with pytest.raises(openai.APIStatusError) as raised:
                client(full.url).completions.create(model="shakespeare", prompt="", max_tokens=5)
            assert raised.value.status_code == 503 and raised.value.response.headers["retry-after"] == "1"
        hold.close()
