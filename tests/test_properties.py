"""Property-based: random option values and primes give output or a clean error, never a crash."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vrnn.runtime import Sampler, UsageError
from vrnn.runtime.cli import main as run_main

options = st.fixed_dictionaries(
    {
        "length": st.integers(-3, 40),
        "prime": st.text(max_size=12),
        "temperature": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 5)),
        "top_k": st.one_of(st.none(), st.integers(-3, 100)),
        "top_p": st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
        "greedy": st.booleans(),
        "seed": st.one_of(st.none(), st.integers(0, 2**32)),
        "num_samples": st.integers(-1, 3),
    }
)


@pytest.fixture(scope="module")
def generator(trained: dict[str, Path]) -> Sampler:
    return Sampler.from_onnx(trained["cell"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(opts=options)
def test_api_gives_text_or_a_usage_error(generator: Sampler, opts: dict) -> None:
    try:
        result = generator.generate(**opts)
    except UsageError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    texts = result if isinstance(result, list) else [result]
    assert len(texts) == opts["num_samples"]
    for text in texts:
        assert text.startswith(opts["prime"]) and len(text) == len(opts["prime"]) + opts["length"]
        assert set(text) <= set(generator.vocab.chars)
    assert math.isfinite(opts["temperature"]) and opts["temperature"] > 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(opts=options)
def test_cli_gives_text_or_a_one_line_error(trained: dict[str, Path], opts: dict) -> None:
    args = [str(trained["cell"]), "--length", str(opts["length"]), "--prime", opts["prime"],
            "--temperature", str(opts["temperature"]), "--num-samples", str(opts["num_samples"])]  # fmt: skip
    for flag, key in (("--top-k", "top_k"), ("--top-p", "top_p"), ("--seed", "seed")):
        if opts[key] is not None:
            args += [flag, str(opts[key])]
    if opts["greedy"]:
        args.append("--greedy")
    if "\x00" in opts["prime"]:
        return  # a NUL cannot be passed in argv at all
    result = CliRunner().invoke(run_main, args)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    if result.exit_code == 0:
        assert result.output.startswith(opts["prime"])
    else:
        assert result.exit_code in (1, 2)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
