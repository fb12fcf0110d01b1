"""Load and validate an exported vrnn cell, and run it with onnxruntime: N steps per call."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from vrnn.runtime import schema
from vrnn.runtime.choice import RowOptions, SamplingOptions
from vrnn.runtime.errors import VrnnError
from vrnn.runtime.inputs import check_input_file
from vrnn.runtime.limits import check_threads
from vrnn.runtime.loop import check_finite_logits
from vrnn.runtime.onnx_meta import graph_operators, read_metadata
from vrnn.runtime.vocab import Vocabulary, first_outside

MAX_CELL_BYTES = 2 * 1024**3  # protobuf's own limit for one file

ORT_TYPES = {"int64": "tensor(int64)", "float32": "tensor(float)", "float64": "tensor(double)"}  # onnxruntime's names


@dataclass(frozen=True)
class CellInfo:
    """What a cell's metadata says about it: enough to drive it."""

    config: schema.ModelConfig
    vocab: Vocabulary
    start_char: str
    source: dict[str, Any]
    metadata: dict[str, str]
    weights: str = "float32"  # how the file stores its weight matrices (schema.WEIGHT_FORMATS)
    version: int = schema.CELL_SCHEMA_VERSION  # vrnn.schema_version: 3 takes each row's options, 2 one temperature


def read_file(path: str | os.PathLike[str], what: str) -> bytes:
    """Read a whole input file, at most MAX_CELL_BYTES of it, refusing anything but a regular file (a FIFO
    would block start-up until a writer came: see vrnn.runtime.inputs) with one line."""
    path = check_input_file(path, what)
    if path.stat().st_size > MAX_CELL_BYTES:
        raise VrnnError(f"{what} is too large to be a vrnn cell: {path}")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CELL_BYTES + 1)  # a file may grow between the stat and the read
    except PermissionError:
        raise VrnnError(f"{what} cannot be read (permission denied): {path}") from None
    if len(data) > MAX_CELL_BYTES:
        raise VrnnError(f"{what} is too large to be a vrnn cell: {path}")
    return data


def check_operators(operators: set[tuple[str, str]], name: str) -> None:
    """Refuse a graph with an operator that vrnn-export never writes (see schema.CELL_OPERATORS)."""
    foreign = sorted(f"{domain}.{op}" if domain not in ("", "ai.onnx") else op for domain, op in operators
                     if domain not in ("", "ai.onnx") or op not in schema.CELL_OPERATORS)  # fmt: skip
    if foreign:
        raise VrnnError(f"{name} uses operators a vrnn cell never has ({', '.join(foreign[:5])}): not a vrnn cell")


def parse_cell_metadata(meta: dict[str, str], name: str) -> CellInfo:
    """Check that metadata describes a vrnn cell this runtime understands, and decode it."""
    if meta.get(schema.META_FORMAT) != schema.CELL_FORMAT:
        raise VrnnError(f"{name} is an ONNX model but not a vrnn cell (no '{schema.META_FORMAT}' metadata)")
    missing = [k for k in schema.REQUIRED_META_KEYS if k not in meta]
    if missing:
        raise VrnnError(f"{name} lacks metadata: {', '.join(missing)}")
    text = meta[schema.META_SCHEMA_VERSION]
    # Exactly the decimal form every runtime accepts (docs/cell-spec.md): not int()'s spaces, signs, leading
    # zeros, underscores or other scripts' digits, which a JavaScript or C reader would each treat differently.
    if not re.fullmatch(r"[1-9][0-9]*", text):
        raise VrnnError(f"{name} has an unreadable schema version {text[:20]!r} (expected digits, such as '2')")
    version = int(text)
    if version > schema.CELL_SCHEMA_VERSION:
        raise VrnnError(
            f"{name} has cell schema version {version}; "
            f"this vrnn reads up to {schema.CELL_SCHEMA_VERSION}: upgrade vrnn"
        )
    if version < 1:
        raise VrnnError(f"{name} has an invalid schema version {version}")
    if version < schema.OLDEST_SCHEMA_VERSION:  # 1 generated one character per run(): a different interface
        raise VrnnError(
            f"{name} has cell schema version {version}, which this vrnn no longer runs: "
            f"re-export it from its checkpoint with vrnn-export"
        )
    try:
        vocab = Vocabulary(json.loads(meta[schema.META_VOCAB]))
        config = schema.ModelConfig.from_dict(json.loads(meta[schema.META_CONFIG]))
        source = json.loads(meta.get(schema.META_SOURCE, "{}"))
    except (json.JSONDecodeError, TypeError) as exc:
        raise VrnnError(f"{name} has malformed metadata: {exc}") from None
    except VrnnError as exc:
        raise VrnnError(f"{name}: {exc}") from None
    start_char = meta[schema.META_START_CHAR]
    weights = meta.get(schema.META_WEIGHTS, "float32")
    if weights not in schema.WEIGHT_FORMATS:
        raise VrnnError(
            f"{name} stores its weights as {weights[:40]!r}; this vrnn reads {', '.join(schema.WEIGHT_FORMATS)}: "
            "upgrade vrnn"
        )
    if len(vocab) != config.vocab_size:
        raise VrnnError(f"{name}: vocabulary has {len(vocab)} characters but the config says {config.vocab_size}")
    if start_char not in vocab:
        raise VrnnError(f"{name}: start character {start_char!r} is not in the vocabulary")
    return CellInfo(config, vocab, start_char, source if isinstance(source, dict) else {}, dict(meta), weights, version)


# Every core once a step's matrix products reach this many multiply-adds (all samples together), one
# thread below, where each node's thread hand-off costs more than the shared arithmetic saves.  The
# measurements behind the threshold: docs/results.md, "Thread defaults".
MULTI_THREAD_WORK = 500_000


def step_multiply_adds(config: schema.ModelConfig) -> int:
    """Multiply-adds of one step's matrix products for one sample: what more threads can share.
    phi_x's product with the first layer's input weights is a table lookup in the cell, not a product."""
    E, H, Z, V, L = config.embed_size, config.hidden_size, config.latent_size, config.vocab_size, config.layers
    gru = E * 3 * H + L * H * 3 * H + (L - 1) * H * 3 * H  # phi_z's input product, h W_hh, upper layers' x W_ih
    return gru + H * (2 * Z + V) + Z * E + E * V  # prior and decoder's h-part, phi_z, decoder's z-part


def default_threads(batch: int, config: schema.ModelConfig) -> int:
    """Intra-op threads for generating `batch` samples at once with a cell of `config`: one where thread
    hand-offs cost more than they save, every core where the matrix products dominate."""
    cores = max(1, os.cpu_count() or 1)
    return cores if batch * step_multiply_adds(config) >= MULTI_THREAD_WORK else 1


def read_cell_info(path: str | os.PathLike[str]) -> CellInfo:
    """A cell file's metadata, checked, without building a session."""
    return parse_cell_metadata(read_metadata(read_file(path, "ONNX cell"), str(path)), str(path))


def session_options(threads: int = 1, pack_weights: bool = True, spinning: bool = True) -> ort.SessionOptions:
    """Session settings for generation with `threads` intra-op threads (see default_threads).

    `pack_weights` False is for benchmarks only: the runtime always packs (see OnnxCell).  `spinning` False
    stops the intra-op threads from spinning while they wait for the next call: slower for a loop that only
    calls the cell, better for a process whose other threads need the cores between calls (vrnn-serve)."""
    options = ort.SessionOptions()
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not pack_weights:
        options.add_session_config_entry("session.disable_prepacking", "1")
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: warnings would interleave with generated text
    return options


class OnnxCell:
    """A validated vrnn cell in an onnxruntime session; `steps` is one run() call.

    One session runs every batch size, its weights packed for onnxruntime's matrix-matrix kernel.  With
    packed weights a sample's row is computed the same way whatever else is in the batch (bit for bit, at
    batch 1 too and at any thread count, tests/test_runtime.py), so one sample alone and the same sample
    as one row of a server's batch (vrnn-serve) give the same text.  Unpacked weights would let a batch
    of 1 take the faster matrix-vector kernel, whose sums round differently: measured in docs/results.md,
    "Weight packing"."""

    def __init__(
        self,
        path: str | os.PathLike[str] | bytes,
        threads: int | None = 1,
        providers: list[str] | None = None,
        batch: int = 1,
        spinning: bool = True,
    ) -> None:
        """`path` is the cell's file (or its bytes).  `batch` is the number of samples the caller means to
        generate at once: with `threads` None it picks the thread count (default_threads).  `spinning`: see
        session_options."""
        check_threads(threads)
        in_memory = isinstance(path, bytes)  # a cell being exported, before it is written
        self._path = "the exported cell" if in_memory else str(path)
        data = path if in_memory else read_file(path, "ONNX cell")
        self.info = parse_cell_metadata(read_metadata(data, self._path), self._path)
        check_operators(graph_operators(data, self._path), self._path)
        # onnxruntime reads the file itself once our copy is gone (peak RSS); a cell being exported has no file.
        model: str | bytes = data if in_memory else self._path
        del data
        self.threads = default_threads(batch, self.info.config) if threads is None else threads
        try:
            options = session_options(self.threads, spinning=spinning)
            providers = providers or ["CPUExecutionProvider"]
            self.session = ort.InferenceSession(model, sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            first_line = str(exc).splitlines()[0]
            raise VrnnError(f"{self._path} could not be loaded by onnxruntime: {first_line}") from None
        del model
        self._check_signature(self._path)
        self._probe(2)

    def _check_signature(self, name: str) -> None:
        found = {v.name: v.type for v in [*self.session.get_inputs(), *self.session.get_outputs()]}
        inputs = [v.name for v in self.session.get_inputs()]
        outputs = [v.name for v in self.session.get_outputs()]
        ports = (*schema.cell_inputs(self.info.version), *schema.CELL_OUTPUTS)
        if inputs != [p.name for p in schema.cell_inputs(self.info.version)] or outputs != list(schema.OUTPUT_NAMES):
            raise VrnnError(
                f"{name}: cell has inputs {inputs} and outputs {outputs}, expected the vrnn cell interface of "
                f"schema {self.info.version}"
            )
        wrong = [p.name for p in ports if found[p.name] != ORT_TYPES[p.dtype]]
        if wrong:
            raise VrnnError(f"{name}: unexpected types for {', '.join(wrong)}")
        # Shapes: every rank, and every fixed size, as the metadata's config says (symbolic sizes are the
        # batch and step counts; _probe checks what the graph really makes of them).
        expected = self._expected_shapes(batch=None, steps=None)
        for value in [*self.session.get_inputs(), *self.session.get_outputs()]:
            want, shape = expected[value.name], value.shape
            if len(shape) != len(want) or any(
                isinstance(have, int) and need is not None and have != need
                for have, need in zip(shape, want, strict=True)
            ):
                raise VrnnError(
                    f"{name}: {value.name} has shape {shape} but the cell's metadata implies {list(want)} "
                    "(None: any batch or step count)"
                )

    def _expected_shapes(self, batch: int | None, steps: int | None) -> dict[str, tuple[int | None, ...]]:
        """Each input's and output's shape as the metadata's config implies it (schema.cell_inputs, CELL_OUTPUTS)."""
        ports = (*schema.cell_inputs(self.info.version), *schema.CELL_OUTPUTS)
        return {p.name: p.dims(self.config, batch, steps) for p in ports}

    def _probe(self, batch: int) -> None:
        """Two steps of `batch` samples from the zero state: the outputs must have the shapes the metadata
        implies, the picks must be characters of the vocabulary and the logits finite.  A cell whose
        metadata lies about it fails here, in one line, rather than printing garbage later."""
        steps = 2
        state = self.initial_state(batch)
        prev = np.full(batch, self.vocab.chars.index(self.start_char), np.int64)
        eps = np.zeros((steps, batch, self.config.latent_size), np.float32)
        # A schema-3 cell's probe has a row with top-k and top-p, so that its sorted path runs too.
        rows = RowOptions.of([SamplingOptions(), *[SamplingOptions(top_k=2, top_p=0.9)] * (batch - 1)])
        chars, logits, new_state = self.steps(prev, state, eps, np.full((steps, batch), 0.5), rows)
        expected = self._expected_shapes(batch, steps)
        outputs = {schema.OUTPUT_CHARS: chars, schema.OUTPUT_LOGITS: logits}
        outputs |= {schema.OUTPUT_H: new_state[schema.INPUT_H], schema.OUTPUT_PHI_Z: new_state[schema.INPUT_PHI_Z]}
        for name, array in outputs.items():
            if array.shape != expected[name]:
                raise VrnnError(
                    f"{self._path}: {name} comes out as {list(array.shape)} but the cell's metadata implies "
                    f"{list(expected[name])}: the metadata does not describe this graph"
                )
        if first_outside(chars, len(self.vocab)) is not None:
            raise VrnnError(f"{self._path}: the cell picks characters outside its vocabulary")
        check_finite_logits(logits, self._path)

    @property
    def config(self) -> schema.ModelConfig:
        return self.info.config

    @property
    def vocab(self) -> Vocabulary:
        return self.info.vocab

    @property
    def start_char(self) -> str:
        return self.info.start_char

    @property
    def chooses_per_row(self) -> bool:
        """Whether the cell applies each row's own options in-graph (schema 3); a schema-2 cell takes one
        temperature, and top-k, top-p and greedy are chosen on the host from one step's logits."""
        return self.info.version >= 3

    def initial_state(self, batch: int) -> dict[str, np.ndarray]:
        """The state before any character: zeros, as the metadata's interface says."""
        return {k: np.zeros(s, np.float32) for k, s in self.config.initial_state_shapes(batch).items()}

    def steps(
        self,
        prev_char: np.ndarray,
        state: dict[str, np.ndarray],
        eps: np.ndarray,
        uniform: np.ndarray,
        rows: RowOptions | float,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Run len(eps) steps in one call: the characters picked, every step's logits, the final state.

        The contract is vrnn.runtime.loop.run_steps, which computes the same in numpy.  A schema-2 cell takes
        the first row's temperature for every row and no top-k or top-p: its caller chooses those itself.
        `rows` may be a temperature, for every row without top-k or top-p.
        """
        rows = RowOptions.given(rows, len(prev_char))
        feed = {
            schema.INPUT_PREV_CHAR: prev_char,
            schema.INPUT_H: state[schema.INPUT_H],
            schema.INPUT_PHI_Z: state[schema.INPUT_PHI_Z],
            schema.INPUT_EPS: eps,
            schema.INPUT_UNIFORM: uniform,
        }
        if self.chooses_per_row:
            feed[schema.INPUT_TEMPERATURE] = rows.temperature
            feed[schema.INPUT_TOP_K] = rows.top_k
            feed[schema.INPUT_TOP_P] = rows.top_p
        else:
            feed[schema.INPUT_TEMPERATURE] = np.array(rows.temperature[0], np.float64)
        try:
            chars, logits, h, phi_z = self.session.run(None, feed)
        except VrnnError:
            raise
        except Exception as exc:  # onnxruntime's own types: a failed allocation, a shape the graph cannot take
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise VrnnError(f"{self._path}: onnxruntime failed running the cell: {first_line[:300]}") from None
        return chars, logits, {schema.INPUT_H: h, schema.INPUT_PHI_Z: phi_z}
