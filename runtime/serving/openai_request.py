"""vrnn-serve's OpenAI-compatible completions: parse and check one `POST /v1/completions` body.

Standard library and numpy only, like vrnn.runtime.serving.request.  A body becomes one GenerationRequest per choice:
prompt p (of a list: choices p*n to p*n + n - 1) and sample i of n get the noise of sample i of
`vrnn-run --prime P --num-samples n --seed S` (docs/serving.md, "OpenAI-compatible").  Refusals are
OpenAIError: a status, a message, and the parameter at fault.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from vrnn.runtime.choice import MAX_LATENT_TEMPERATURE, SamplingOptions
from vrnn.runtime.errors import UsageError, VrnnError
from vrnn.runtime.limits import MAX_SEED
from vrnn.runtime.serving.batcher import GenerationRequest
from vrnn.runtime.serving.request import Limits, RequestError, read_json, shown
from vrnn.runtime.stops import check_stops
from vrnn.runtime.vocab import Vocabulary

MAX_CHOICES = 16  # n: each choice draws the noise of all n samples, so the noise costs n^2
MAX_PROMPTS = 16
DEFAULT_MAX_TOKENS = 16  # OpenAI's
KNOWN = {"model", "prompt", "max_tokens", "temperature", "top_p", "n", "stream", "stop", "seed", "logprobs", "echo",
         "user", "top_k", "latent_temperature", "presence_penalty", "frequency_penalty", "logit_bias", "best_of",
         "suffix", "stream_options"}  # fmt: skip


class OpenAIError(Exception):
    """A request refused in OpenAI's terms: the HTTP status, its message, the parameter at fault."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


@dataclass(frozen=True)
class Completions:
    """A checked completions request: one GenerationRequest per choice, in choice order."""

    requests: list[GenerationRequest]
    prompts: list[str]
    n: int
    stream: bool
    echo: bool
    logprobs: int | None
    seed: int


def _int(body: dict[str, Any], name: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OpenAIError(400, f"{name} must be an integer from {low} to {high:,}, got {shown(value)}", name)
    return value


def _float(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise OpenAIError(400, f"{name} must be a number from {low:g} to {high:g}, got {shown(value)}", name)
    return float(value)


def _neutral(body: dict[str, Any], name: str, neutral: tuple[object, ...], why: str) -> None:
    value = body.get(name)
    if value is not None and value not in neutral:
        raise OpenAIError(400, f"{name} is not supported: {why}", name)


def parse_completions(body: bytes, vocab: Vocabulary, limits: Limits, model_id: str) -> Completions:
    """Check a `POST /v1/completions` body; raise OpenAIError naming the parameter at fault."""
    try:
        decoded = read_json(body)
    except RequestError as exc:
        raise OpenAIError(exc.status, exc.message) from None
    if not isinstance(decoded, dict):
        raise OpenAIError(400, "the body must be a JSON object")
    unknown = sorted(set(decoded) - KNOWN)
    if unknown:
        raise OpenAIError(400, f"unknown parameter {unknown[0][:40]!r}", unknown[0][:40])
    model = decoded.get("model")
    if not isinstance(model, str):
        raise OpenAIError(400, "model is required: a string", "model")
    if model != model_id:
        raise OpenAIError(404, f"no model {model[:100]!r}: this server serves {model_id!r}", "model")
    _neutral(decoded, "presence_penalty", (0, 0.0), "a character model samples without penalties")
    _neutral(decoded, "frequency_penalty", (0, 0.0), "a character model samples without penalties")
    _neutral(decoded, "logit_bias", ({},), "there are no token ids to bias")
    _neutral(decoded, "suffix", ("",), "the model only continues a text")
    prompt = decoded.get("prompt", "")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise OpenAIError(400, "prompt must be a string or a non-empty list of strings (no token ids)", "prompt")
    if len(prompts) > MAX_PROMPTS:
        raise OpenAIError(400, f"prompt may hold at most {MAX_PROMPTS} strings, got {len(prompts)}", "prompt")
    prime_ids = []
    for p in prompts:
        if len(p) > limits.max_prime:
            raise OpenAIError(400, f"a prompt is {len(p):,} characters, more than {limits.max_prime:,}", "prompt")
        try:
            prime_ids.append(vocab.encode(p, what="prompt"))
        except VrnnError as exc:
            raise OpenAIError(400, str(exc), "prompt") from None
    max_tokens = _int(decoded, "max_tokens", DEFAULT_MAX_TOKENS, 1, limits.max_length)
    n = _int(decoded, "n", 1, 1, MAX_CHOICES)
    best_of = _int(decoded, "best_of", n, 1, MAX_CHOICES)
    if best_of != n:
        raise OpenAIError(400, "best_of must equal n: every sample drawn is returned", "best_of")
    temperature = _float(decoded, "temperature", 1.0, 0.0, 100.0)
    top_p = _float(decoded, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0:
        raise OpenAIError(400, "top_p must be more than 0", "top_p")
    top_k = _int(decoded, "top_k", 0, 0, len(vocab))
    latent = _float(decoded, "latent_temperature", 1.0, 0.0, MAX_LATENT_TEMPERATURE)
    logprobs = _int(decoded, "logprobs", None, 0, 5)
    seed = _int(decoded, "seed", None, 0, MAX_SEED)
    for flag in ("stream", "echo"):
        if not isinstance(decoded.get(flag, False), bool):
            raise OpenAIError(400, f"{flag} must be true or false", flag)
    if decoded.get("user") is not None and not isinstance(decoded["user"], str):
        raise OpenAIError(400, "user must be a string", "user")
    try:
        stops = check_stops(decoded.get("stop"))
    except UsageError as exc:
        raise OpenAIError(400, str(exc).replace("--stop", "stop"), "stop") from None
    # OpenAI's temperature 0 is greedy decoding; here greedy combines with no other option.
    greedy = temperature == 0
    if greedy and (top_k or top_p < 1):
        raise OpenAIError(400, "temperature 0 (greedy) cannot be combined with top_p or top_k", "temperature")
    options = SamplingOptions(temperature=1.0 if greedy else temperature, top_k=top_k or None,
                              top_p=None if top_p >= 1 else top_p, greedy=greedy,
                              latent_temperature=latent)  # fmt: skip
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
    stream = decoded.get("stream", False)
    requests = [GenerationRequest(ids, max_tokens, seed, options, streaming=stream, stop=stops, logprobs=logprobs,
                                  sample=(i, n))
                for ids in prime_ids for i in range(n)]  # fmt: skip
    return Completions(requests, prompts, n, stream, decoded.get("echo", False), logprobs, seed)
