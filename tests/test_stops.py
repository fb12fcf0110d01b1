"""Stop sequences (vrnn.runtime.stops, Sampler's `stop`, vrnn-run --stop) and log-probabilities (Sampler.complete's
`logprobs`).  A text ends just before the first stop string it generates, the stop string is not in it, the
prime is not searched, and a stopped text is a prefix of the same seed's text without `stop`; each
character's log-probability is that of the distribution it was drawn from, recomputed here independently."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from conftest import bin_path
from hypothesis import given
from hypothesis import strategies as st

from vrnn.runtime import Sampler
from vrnn.runtime.bundled import BUNDLED_CELL, bundled_file
from vrnn.runtime.errors import UsageError
from vrnn.runtime.loop import SeededNoise
from vrnn.runtime.stops import StopMatcher, check_stops, cut_at_stop, stopped_stream

BUNDLED = str(bundled_file(BUNDLED_CELL, "the bundled cell"))


@pytest.mark.parametrize(
    ("text", "stops", "expected", "stopped"),
    [
        ("hello world", ["o"], "hell", True),
        ("hello world", ["world", "lo w"], "hel", True),  # "lo w" ends first
        ("xabc", ["abc", "b"], "xa", True),  # "b" is generated whole before "abc" is
        ("xabc", ["bc", "abc"], "x", True),  # both end at c: before the earlier start
        ("aaab", ["aab"], "a", True),  # a partial match that fails, then one that does not
        ("hello", ["xyz"], "hello", False),
        ("hell", ["hello"], "hell", False),  # held back while it could begin a stop, then flushed
        ("\n\nROMEO", ["\n\n"], "", True),
    ],
)
def test_cut_at_stop(text: str, stops: list[str], expected: str, stopped: bool) -> None:
    assert cut_at_stop(text, stops) == (expected, stopped)
    assert "".join(stopped_stream(iter(text), stops)) == expected


@given(st.text(alphabet="ab\n", max_size=40), st.lists(st.text(alphabet="ab\n", min_size=1, max_size=4), min_size=1,
       max_size=4))  # fmt: skip
def test_a_stopped_text_is_a_prefix_holding_no_stop_string(text: str, stops: list[str]) -> None:
    cut, stopped = cut_at_stop(text, stops)
    assert text.startswith(cut)
    assert not any(s in cut for s in stops)
    if stopped:  # it ends just before a stop string that the text goes on with
        assert any(text[len(cut) :].startswith(s) for s in stops)
    else:
        assert cut == text


def test_the_matcher_releases_characters_as_soon_as_they_cannot_begin_a_stop() -> None:
    matcher = StopMatcher(["END"])
    assert [matcher.feed(c) for c in "xEyE"] == ["x", "", "Ey", ""]
    assert matcher.flush() == "E"


@pytest.mark.parametrize(
    ("stop", "says"),
    [(["a"] * 5, "at most 4"), ([""], "1 to 256"), (["x" * 257], "1 to 256"), ([1], "string"), (3, "string")],
)
def test_bad_stops_are_refused_naming_the_problem(stop: object, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        check_stops(stop)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sampler() -> Sampler:
    return Sampler.from_onnx(BUNDLED)


@pytest.mark.slow
@pytest.mark.parametrize("options", [{}, {"temperature": 0.7}, {"top_p": 0.9}, {"top_k": 5}, {"greedy": True}], ids=str)
def test_a_stopped_text_is_a_prefix_of_the_unstopped_one(sampler: Sampler, options: dict) -> None:
    for seed in range(4):
        whole = sampler.generate(400, prime="ROMEO:", seed=seed, **options)
        for stops in (["\n\n"], [":", "e"], ["ROMEO"], ["zzz"]):
            stopped = sampler.generate(400, prime="ROMEO:", seed=seed, stop=stops, **options)
            (completion,) = sampler.complete(400, prime="ROMEO:", seed=seed, stop=stops, **options)
            new, reason = completion.text, completion.finish_reason
            assert stopped == "ROMEO:" + new
            expected, was_stopped = cut_at_stop(whole[len("ROMEO:") :], stops)  # the prime is not searched
            assert new == expected and reason == ("stop" if was_stopped else "length")
            assert "".join(sampler.stream(400, prime="ROMEO:", seed=seed, stop=stops, **options)) == new


def test_each_sample_of_a_batch_stops_on_its_own_and_the_batch_ends_when_all_have(sampler: Sampler) -> None:
    alone = sampler.generate(300, seed=11, num_samples=5)
    completions = sampler.complete(300, seed=11, num_samples=5, stop=["\n"])
    for text, completion in zip(alone, completions, strict=True):
        assert (completion.text, completion.finish_reason == "stop") == cut_at_stop(text, ["\n"])
    calls, original = [], sampler.cell.session.run
    sampler.cell.session.run = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        sampler.complete(5000, seed=11, num_samples=5, stop=["e"])  # every sample stops within a few characters
    finally:
        sampler.cell.session.run = original
    assert len(calls) == 1  # the first call of 256 steps already holds every stop: no second one


def test_vrnn_run_stop_prints_the_text_up_to_the_stop() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([bin_path("vrnn-run"), "-n", "300", "--seed", "1", *args], capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    whole = run().stdout
    stopped = run("--stop", "\n\n", "--stop", "ANGELO")
    assert stopped.returncode == 0
    assert stopped.stdout == cut_at_stop(whole.removesuffix("\n"), ["\n\n", "ANGELO"])[0] + "\n"
    assert len(stopped.stdout) < len(whole)
    refused = run(*["--stop", "x"] * 5)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "at most 4" in refused.stderr


@pytest.mark.parametrize(
    "options", [{}, {"temperature": 0.6}, {"top_k": 4}, {"top_p": 0.8, "temperature": 1.3}, {"greedy": True}], ids=str
)
def test_logprobs_are_those_of_the_distribution_each_character_was_drawn_from(sampler: Sampler, options: dict) -> None:
    """Recomputed independently: the cell teacher-forced along the text with the same latent noise, its logits
    scaled, cut and renormalised here in plain numpy."""
    (completion,) = sampler.complete(120, prime="JULIET:", seed=4, logprobs=3, **options)
    assert completion.text == sampler.generate(120, prime="JULIET:", seed=4, **options)[len("JULIET:") :]
    cell, vocab = sampler.cell, sampler.vocab
    eps = SeededNoise(4, 1, cell.config.latent_size).eps(len("JULIET:") + 120)
    state, prev = cell.initial_state(1), np.array([vocab.chars.index(cell.start_char)])
    for t, char in enumerate("JULIET:" + completion.text):
        _, logits, state = cell.steps(prev, state, eps[t : t + 1], np.full((1, 1), 0.5), 1.0)
        if t >= len("JULIET:"):
            scaled = logits[0, 0].astype(np.float64) / options.get("temperature", 1.0)
            order = np.argsort(-scaled, kind="stable")
            keep = np.ones_like(scaled, bool)
            if "top_k" in options or options.get("greedy"):
                keep[order[options.get("top_k", 1) :]] = False
            probs = np.where(keep, np.exp(scaled - scaled.max()), 0.0)
            probs /= probs.sum()
            if "top_p" in options:
                ranked = probs[order]
                before = np.cumsum(ranked) - ranked
                probs[order[before >= options["top_p"]]] = 0.0
                probs /= probs.sum()
            i = t - len("JULIET:")
            assert completion.logprobs[i] == pytest.approx(np.log(probs[vocab.chars.index(char)]), abs=1e-9)
            best = sorted(((c, lp) for c, lp in completion.top_logprobs[i].items()), key=lambda kv: -kv[1])
            assert len(best) <= 3 and best[0][1] == pytest.approx(np.log(probs.max()), abs=1e-9)
        prev = np.array([vocab.chars.index(char)])
    assert completion.logprobs and all(np.isfinite(completion.logprobs))
    if options.get("greedy"):
        assert set(completion.logprobs) == {0.0}


def test_logprobs_are_refused_outside_0_to_5(sampler: Sampler) -> None:
    for bad in (-1, 6, 1.5, True):
        with pytest.raises(UsageError, match="logprobs must be an integer from 0 to 5"):
            sampler.complete(5, logprobs=bad)
