"""vrnn-serve's request bodies: parse and check one `POST /v1/generate` body, naming the field at fault.

Standard library and numpy only (no HTTP framework), so every refusal can be tested on its own.  The
checks mirror vrnn-run's options (docs/serving.md lists them), with the bounds a shared service needs:
a length and a prime no longer than the server allows, a temperature no larger than MAX_TEMPERATURE.
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass
from typing import Any

from vrnn.runtime.choice import MAX_LATENT_TEMPERATURE, SamplingOptions
from vrnn.runtime.errors import UsageError, VrnnError
from vrnn.runtime.limits import MAX_SEED
from vrnn.runtime.serving.batcher import GenerationRequest
from vrnn.runtime.stops import check_stops
from vrnn.runtime.vocab import Vocabulary

MAX_BODY_BYTES = 64 * 1024
# Past 100 every character is within 1% of equally likely: a larger temperature can only be a mistake.
MAX_TEMPERATURE = 100.0
FIELDS = (
    "prime",
    "length",
    "temperature",
    "top_k",
    "top_p",
    "greedy",
    "latent_temperature",
    "seed",
    "stream",
    "stop",
    "logprobs",
)


class RequestError(Exception):
    """A request the server refuses: the HTTP status, and a message that names the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server (vrnn-serve's --max-length and --max-prime)."""

    max_length: int = 10_000
    max_prime: int = 4_096


MAX_HEAD_BYTES = 16 * 1024  # Node's and h11's default; this API's requests need a few hundred bytes
MAX_HEADERS = 100  # http.client's and aiohttp's bound
HEADER_TIMEOUT = 10.0  # seconds for a request's head, from the connection's opening or the last response
BODY_TIMEOUT = 10.0  # seconds for its body (at most 64 KiB) once the head has come
HALF_CLOSED = "vrnn.half_closed"  # the ASGI scope extension (an asyncio.Event) set when the client half-closes


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may hold before it is refused (vrnn-serve's --max-head-bytes and the rest)."""

    max_head_bytes: int = MAX_HEAD_BYTES
    max_headers: int = MAX_HEADERS
    header_timeout: float = HEADER_TIMEOUT
    max_connections: int = 2048


@dataclass(frozen=True)
class Parsed:
    """A checked request: what the batcher runs, the prime as text, and whether to stream."""

    request: GenerationRequest
    prime: str
    stream: bool


MAX_DIGITS = 64  # digits of an integer read as a number; longer ones stay text (int() refuses past 4,300)
SHOWN_CHARS = 40  # characters of a client's value quoted in an error


class LongNumber:
    """An integer of more than MAX_DIGITS digits in a body, kept as its length only: parsing it never fails
    or spends time on it, and whichever field holds it refuses it (none accepts such a number)."""

    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-"))


def _parse_int(text: str) -> int | LongNumber:
    return int(text) if len(text) <= MAX_DIGITS else LongNumber(text)


def _refuse_constant(name: str) -> float:
    raise RequestError(400, f"the body is not valid JSON: {name} is not a JSON number")


def shown(value: object) -> str:
    """A client's value as an error quotes it: JSON, cut to SHOWN_CHARS characters (a body can hold a number
    of 60,000 digits, which an error should not repeat)."""
    if isinstance(value, LongNumber):
        return f"a number of {value.digits:,} digits"
    try:
        text = json.dumps(value, default=lambda v: f"<a number of {v.digits:,} digits>")
    except (TypeError, ValueError):
        text = type(value).__name__
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _integer(body: dict[str, Any], name: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(name, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(422, f"{name} must be an integer, got {shown(value)}", name)
    if not low <= value <= high:
        raise RequestError(422, f"{name} must be from {low} to {high:,}, got {shown(value)}", name)
    return value


def _number(
    body: dict[str, Any], name: str, default: float | None, low: float, high: float, low_open: bool
) -> float | None:
    value = body.get(name, default)
    if value is None and default is None:
        return None
    # An integer is compared as one (math.isfinite would convert it to a float, which overflows past 308 digits).
    finite = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
    if isinstance(value, LongNumber):
        raise RequestError(422, f"{name} must be in {interval}, got {shown(value)}", name)
    if isinstance(value, bool) or not finite:
        raise RequestError(422, f"{name} must be a finite number, got {shown(value)}", name)
    if value < low or (low_open and value == low) or value > high:
        raise RequestError(422, f"{name} must be in {interval}, got {shown(value)}", name)
    return float(value)


def _boolean(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise RequestError(422, f"{name} must be true or false, got {shown(value)}", name)
    return value


def read_json(body: bytes) -> object:
    """A body's JSON, refused with RequestError (413, 400) when it is too large, not UTF-8 or not JSON; numbers
    of more than MAX_DIGITS digits stay LongNumber, NaN and Infinity are refused."""
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(413, f"the body is larger than {MAX_BODY_BYTES // 1024} KiB")
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_refuse_constant, parse_int=_parse_int)
    except UnicodeDecodeError:
        raise RequestError(400, "the body is not UTF-8") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise RequestError(400, f"the body is not valid JSON: {detail}") from None


def parse_generate(body: bytes, vocab: Vocabulary, limits: Limits) -> Parsed:
    """Check a JSON body of `POST /v1/generate` against `vocab` and `limits`; raise RequestError naming the
    field at fault.  A request without a seed gets a random one, which the answer returns."""
    decoded = read_json(body)
    if not isinstance(decoded, dict):
        raise RequestError(400, 'the body must be a JSON object, such as {"length": 200}')
    unknown = sorted(set(decoded) - set(FIELDS))
    if unknown:
        name = unknown[0]
        raise RequestError(422, f"unknown field {name[:40]!r} (known: {', '.join(FIELDS)})", name[:40])
    prime = decoded.get("prime", "")
    if not isinstance(prime, str):
        raise RequestError(422, f"prime must be a string, got {shown(prime)}", "prime")
    if len(prime) > limits.max_prime:
        raise RequestError(422, f"prime is {len(prime):,} characters, more than this server's {limits.max_prime:,}",
                           "prime")  # fmt: skip
    try:
        prime_ids = vocab.encode(prime, what="prime")
    except VrnnError as exc:
        raise RequestError(422, str(exc), "prime") from None
    length = _integer(decoded, "length", 500, 1, limits.max_length)
    temperature = _number(decoded, "temperature", 1.0, 0.0, MAX_TEMPERATURE, low_open=True)
    top_k = _integer(decoded, "top_k", None, 1, len(vocab))
    top_p = _number(decoded, "top_p", None, 0.0, 1.0, low_open=True)
    greedy = _boolean(decoded, "greedy")
    latent = _number(decoded, "latent_temperature", 1.0, 0.0, MAX_LATENT_TEMPERATURE, low_open=False)
    seed = _integer(decoded, "seed", None, 0, MAX_SEED)
    stream = _boolean(decoded, "stream")
    stop = decoded.get("stop")
    if stop is not None and not (isinstance(stop, str) or (isinstance(stop, list) and stop)):
        raise RequestError(422, f"stop must be a string or a list of strings, got {shown(stop)}", "stop")
    try:
        stops = check_stops(stop)
    except UsageError as exc:
        raise RequestError(422, str(exc).replace("--stop", "stop"), "stop") from None
    if greedy and (top_k is not None or top_p is not None or temperature != 1.0):
        raise RequestError(422, "greedy cannot be combined with temperature, top_k or top_p", "greedy")
    options = SamplingOptions(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
                              latent_temperature=latent)  # fmt: skip
    options.validate(len(vocab))  # the checks above are stricter: this cannot fail, and keeps them honest
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
    logprobs = _integer(decoded, "logprobs", None, 0, 5)
    request = GenerationRequest(prime_ids, length, seed, options, streaming=stream, stop=stops, logprobs=logprobs)
    return Parsed(request, prime, stream)
