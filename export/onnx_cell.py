"""Build the ONNX generation cell of a trained VRNN, node by node with onnx.helper.

The file's graph is one ONNX Scan over the noise: each iteration is `VRNN.step`
followed by inverse-CDF sampling of the next character, so one
InferenceSession.run generates as many characters as it is given noise for.
Why: at batch 1, one run() plus numpy sampling in Python per character would
cost several times the arithmetic; inside the graph an iteration costs only
its nodes.  Scan rather than Loop: the same body ran about twice as fast per
character at the write-up's size (no trip count, condition or Gather of the
step's noise, and onnxruntime slices the scanned inputs itself).

Why by hand rather than torch.onnx.export: onnxruntime's cost at batch 1 is
per node, and at batch 256 it is the matrix products, so the step is written as
the smallest graph, with the fewest multiply-adds, that computes `VRNN.step`
exactly:

* phi_x and its product with the GRU's input weights depend on the character
  alone, so they are folded into one [V, 3H] table: a Gather.
* the GRU is written out (Gemm and elementwise nodes, PyTorch's gate order and
  linear_before_reset semantics) rather than an ONNX GRU node, so that its
  recurrent product h W_hh can share one Gemm with every other product of the
  new state: with the prior and the decoder's h-part for the top layer, with
  the next layer's input product below it.  That Gemm's W_hh part is the next
  step's, carried through the Scan as extra state (gh_ru, gh_n) and computed
  for the first step before the Scan.  Faster than the GRU-node graph at
  batch 1 and 256 (docs/results.md).
* the decoder's phi_z-part is a Gemm that adds the h-part as its bias input.

Two separate jobs: `fold_weights` turns the model's parameters into the graph's constant arrays
(arithmetic only), and `_step_nodes` / `_sampling_nodes` lay out the graph, one `op` per formula term.

The sampling nodes repeat vrnn.runtime.choice's unfiltered inverse-CDF choice
in float64, operation for operation.  Inputs, outputs and their meaning are in
vrnn.runtime.schema; vrnn.export.verify runs this graph against `VRNN.step` and
the numpy sampler.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

import vrnn
from vrnn.export.opsets import DEFAULT_OPSET
from vrnn.models.vrnn import VRNN
from vrnn.runtime import schema
from vrnn.runtime.vocab import Vocabulary


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().double().numpy()


ONNX_TYPES = {"int64": TensorProto.INT64, "float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}


def interface(config: schema.ModelConfig) -> dict:
    """The JSON description of inputs, outputs and state stored in the cell's metadata."""
    return {
        "inputs": [{"name": p.name, "dtype": p.dtype, "shape": list(p.dims(config))} for p in schema.CELL_INPUTS],
        "outputs": [{"name": p.name, "dtype": p.dtype, "shape": list(p.dims(config))} for p in schema.CELL_OUTPUTS],
        "state": [{"input": i, "output": o, "initial": "zeros"} for i, o in schema.STATE_PAIRS],
        "noise": {
            schema.INPUT_EPS: "standard normal, a fresh row per step",
            schema.INPUT_UNIFORM: "uniform in [0, 1), a fresh row per step",
        },
        "next_char": "each row's inverse CDF of softmax(logits / temperature) after its top-k and top-p, at uniform, "
        "in float64 (docs/cell-spec.md, section 4); fed to the next step",
        "start": "prev_char = index of the start character, state = zeros",
    }


class _Graph:
    """Nodes and initializers under construction, in one of schema.WEIGHT_FORMATS.

    `root` is the outermost graph: a Scan body keeps its constants and the nodes that decode stored
    weights there, so that they run once per session (constant folding) rather than once per step."""

    def __init__(self, weights: str = "float32", root: _Graph | None = None) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.weights = weights
        self.root = root or self
        self.stored: set[str] = set()  # names already given a value (the body and the first step share them)

    def const(self, name: str, value: np.ndarray) -> str:
        # (np.ascontiguousarray would turn a scalar into shape [1]: CumSum's axis must be 0-d)
        self.inits.append(numpy_helper.from_array(value if value.ndim == 0 else np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], **attrs: object) -> None:
        self.nodes.append(helper.make_node(op, inputs, outputs, **attrs))

    def op(self, op_type: str, *inputs: str, out: str | list[str], **attrs: object) -> str | list[str]:
        """Append a node and return its output name(s), so that the graph reads like the formula:
        g.op("Tanh", g.op("Add", a, b, out="s"), out="t") is tanh(a + b)."""
        self.node(op_type, list(inputs), [out] if isinstance(out, str) else out, **attrs)
        return out

    def const_once(self, name: str, value: np.ndarray) -> str:
        """`const` in the root graph, unless `name` has a value there already (the Scan body and the first
        step before it read the same products)."""
        root = self.root
        if name not in root.stored:
            root.const(name, value)
            root.stored.add(name)
        return name

    def matrix(self, name: str, value: np.ndarray) -> str:
        """A float32 weight matrix [K, N] (x @ value, or rows gathered) stored in the cell's weight format;
        returns the name of its float32 value.  float16 and int8 are decoded by a node of the root graph,
        which onnxruntime folds into a float32 constant when the session loads (a matrix that is only read
        this way costs its float32 size in memory, and its stored size on disk)."""
        root = self.root
        if self.weights == "float32":
            return self.const_once(name, value)
        if name in root.stored:
            return name
        root.stored.add(name)
        if self.weights == "float16":
            root.op("Cast", root.const(f"{name}_f16", value.astype(np.float16)), out=name, to=TensorProto.FLOAT)
        else:
            # Cast and Mul rather than DequantizeLinear: onnxruntime keeps DequantizeLinear nodes (for its QDQ
            # fusions) and would run them at every run(), which is every character with --top-k or --top-p.
            quantized, scale = quantize_columns(value)
            as_float = root.op("Cast", root.const(f"{name}_q", quantized), out=f"{name}_q_f32", to=TensorProto.FLOAT)
            root.op("Mul", as_float, root.const(f"{name}_scale", scale), out=name)
        return name

    def state_product(self, h: str, name: str, weight: np.ndarray, bias: np.ndarray, out: str) -> str:
        """h @ weight + bias for a GRU state h [B, K], whose entries lie inside (-1, 1).

        float32 and float16 cells: one Gemm.  int8 cells: the state is quantized with the fixed scale 1/127
        (uint8, zero point 128: no data-dependent scale, so a row's result does not depend on the other rows
        of the batch) and multiplied by the 8-bit weights in exact integer arithmetic, then scaled back per
        column."""
        bias_name = self.const_once(f"{name}_B", bias)
        if self.weights != "int8":
            return self.op("Gemm", h, self.matrix(name, weight), bias_name, out=out)
        quantized, scale = quantize_columns(weight)  # (a repeat for the first step: cheap, and the same arrays)
        # Stored as uint8 with zero point 128: onnxruntime's uint8 x int8 kernel on CPUs without VNNI sums pairs
        # of products in saturating int16 (wrong by up to 1e5 in a 512-term sum), its uint8 x uint8 one is exact
        # everywhere, so every CPU and runtime computes the same integers.
        weight_q = self.const_once(f"{name}_q", (quantized.astype(np.int16) + 128).astype(np.uint8))
        weight_zero = self.const_once("weight_zero", np.array(128, np.uint8))
        rescale = self.const_once(f"{name}_rescale", (scale.astype(np.float64) / STATE_QUANT_LEVELS).astype(np.float32))
        state_scale = self.const_once("state_scale", np.array(1 / STATE_QUANT_LEVELS, np.float32))
        state_zero = self.const_once("state_zero", np.array(128, np.uint8))
        h_q = self.op("QuantizeLinear", h, state_scale, state_zero, out=f"{out}_h_q")
        acc = self.op("MatMulInteger", h_q, weight_q, state_zero, weight_zero, out=f"{out}_i32")
        acc_f = self.op("Cast", acc, out=f"{out}_acc", to=TensorProto.FLOAT)
        scaled = self.op("Mul", acc_f, rescale, out=f"{out}_scaled")
        return self.op("Add", scaled, bias_name, out=out)


# int8: weights in [-127, 127] (symmetric, so no zero point); the state's 1/127 steps cover (-1, 1).
WEIGHT_QUANT_LEVELS = 127
STATE_QUANT_LEVELS = 127


def quantize_columns(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization with one scale per column (output channel) of `matrix` [K, N]:
    matrix ~= quantized * scale, |quantized| <= 127, scale [N] float32 (1 for an all-zero column).
    A matrix without rows (K = 0: the latent's weights of a plain GRU, `--latent-size 0`) is all-zero columns."""
    # initial=0: the peak of no entries is 0 (a plain max has no identity and refuses a zero-size reduction)
    peak = np.max(np.abs(matrix.astype(np.float64)), axis=0, initial=0.0)
    scale = np.where(peak > 0, peak / WEIGHT_QUANT_LEVELS, 1.0).astype(np.float32)
    quantized = np.clip(np.rint(matrix / scale.astype(np.float64)), -WEIGHT_QUANT_LEVELS, WEIGHT_QUANT_LEVELS)
    return quantized.astype(np.int8), scale


class _State:
    """Names of one step's carried values: the character, then per layer h [B, H] and the parts of
    h W_hh + b_hh (gh_ru [B, 2H]: reset and update gates, gh_n [B, H]: new gate), then phi_z [B, E]."""

    def __init__(self, suffix: str, layers: int) -> None:
        self.char = f"char{suffix}"
        self.h = [f"h{i}{suffix}" for i in range(layers)]
        self.gh_ru = [f"gh_ru{i}{suffix}" for i in range(layers)]
        self.gh_n = [f"gh_n{i}{suffix}" for i in range(layers)]
        self.phi_z = f"phi_z{suffix}"

    def names(self) -> list[str]:
        """In the Scan's order of carried state."""
        return [self.char, *self.h, *self.gh_ru, *self.gh_n, self.phi_z]


@dataclass
class LayerProducts:
    """The one Gemm that reads a layer's new state h [B, H]: h @ weight + bias, split into parts of `sizes`.
    Top layer: prior (mu, pre-sigma), the decoder's h-part, then the layer's next gh_ru and gh_n; below
    it: the next layer's gx_ru and gx_n, then gh_ru and gh_n."""

    weight: np.ndarray  # [H, N] float32
    bias: np.ndarray  # [N] float32
    sizes: np.ndarray  # int64, summing to N


@dataclass
class CellWeights:
    """The model's parameters folded into the arrays the graph uses (float32, in the graph's layouts)."""

    gx_table: np.ndarray  # [V, 3H]: phi_x(c) W_ih[:, :E]^T + b_ih for every character c (computed in float64)
    gx_phi_z: np.ndarray  # [E, 3H]: the first layer's input weight for phi_z
    layers: list[LayerProducts]
    phi_z_weight: np.ndarray  # [Z, E]
    phi_z_bias: np.ndarray  # [E]
    decoder_z: np.ndarray  # [E, V]: the decoder's phi_z part (its h-part is in the top layer's products)


def fold_weights(model: VRNN) -> CellWeights:
    """Fold a model's parameters into the cell's constant arrays: no graph, only arithmetic on weights."""
    c = model.config
    E, H, Z, V, L = c.embed_size, c.hidden_size, c.latent_size, c.vocab_size, c.layers
    f32 = np.float32
    first = model.rnn[0]
    with torch.no_grad():
        phi_x = torch.nn.functional.elu(model.phi_x_proj(model.embedding.weight)).double()
        table = _np(phi_x @ first.weight_ih[:, :E].double().T + first.bias_ih.double())
    layers = []
    for i, cell in enumerate(model.rnn):
        if i == L - 1:  # decoder input is [phi_z, h]: its h-part reads the top layer's state
            w = np.concatenate([_np(model.prior.weight), _np(model.decoder.weight)[:, E:], _np(cell.weight_hh)])
            b = np.concatenate([_np(model.prior.bias), _np(model.decoder.bias), _np(cell.bias_hh)])
            sizes = [Z, Z, V, 2 * H, H]
        else:
            above = model.rnn[i + 1]
            w = np.concatenate([_np(above.weight_ih), _np(cell.weight_hh)])
            b = np.concatenate([_np(above.bias_ih), _np(cell.bias_hh)])
            sizes = [2 * H, H, 2 * H, H]
        layers.append(LayerProducts(w.T.astype(f32), b.astype(f32), np.array(sizes, np.int64)))
    return CellWeights(
        gx_table=table.astype(f32),
        gx_phi_z=_np(first.weight_ih)[:, E:].T.astype(f32),
        layers=layers,
        phi_z_weight=_np(model.phi_z_proj.weight).T.astype(f32),
        phi_z_bias=_np(model.phi_z_proj.bias).astype(f32),
        decoder_z=_np(model.decoder.weight)[:, :E].T.astype(f32),
    )


def _step_nodes(
    g: _Graph, weights: CellWeights, state: _State, eps: str, nxt: _State, logits: str
) -> list[tuple[LayerProducts, str]]:
    """`VRNN.step` on the named values: from `state` and `eps` to `nxt` (all but its character) and
    `logits`; returns each layer's products and the name of their split, for the first step's gh.
    PyTorch's GRU cell, gates (r, u, n):
        r, u = sigmoid(gx_ru + gh_ru);  n = tanh(gx_n + r * gh_n);  h' = n + u * (h - n)
    with gx = x W_ih + b_ih and gh = h W_hh + b_hh, gh carried from the previous step."""
    H = weights.gx_phi_z.shape[1] // 3
    f32 = np.float32
    gx_char = g.op("Gather", g.matrix("gx_table", weights.gx_table), state.char, out="gx_char")
    gx0 = g.op("Gemm", state.phi_z, g.matrix("gx_phi_z_W", weights.gx_phi_z), gx_char, out="gx0")
    g.op("Split", gx0, g.const("ru_n_split", np.array([2 * H, H], np.int64)), out=["gx_ru0", "gx_n0"], axis=1)
    gate_split = g.const("r_u_split", np.array([H, H], np.int64))
    products = []
    for i, layer in enumerate(weights.layers):
        ru = g.op("Sigmoid", g.op("Add", f"gx_ru{i}", state.gh_ru[i], out=f"ru_pre{i}"), out=f"ru{i}")
        r, u = g.op("Split", ru, gate_split, out=[f"r{i}", f"u{i}"], axis=1)
        r_gh_n = g.op("Mul", r, state.gh_n[i], out=f"r_gh_n{i}")
        n = g.op("Tanh", g.op("Add", f"gx_n{i}", r_gh_n, out=f"n_pre{i}"), out=f"n{i}")
        h_minus_n = g.op("Sub", state.h[i], n, out=f"h_minus_n{i}")
        h = g.op("Add", n, g.op("Mul", u, h_minus_n, out=f"u_h_minus_n{i}"), out=nxt.h[i])  # n + u (h - n)
        new_h = g.state_product(h, f"new_h{i}_W", layer.weight, layer.bias, out=f"new_h{i}")
        products.append((layer, g.const(f"new_h{i}_split", layer.sizes)))
        if i < len(weights.layers) - 1:
            parts = [f"gx_ru{i + 1}", f"gx_n{i + 1}", nxt.gh_ru[i], nxt.gh_n[i]]
        else:
            parts = ["prior_mu", "prior_pre_sigma", "logits_h", nxt.gh_ru[i], nxt.gh_n[i]]
        g.op("Split", new_h, products[-1][1], out=parts, axis=1)

    # z = mu_p + (softplus(pre_sigma) + floor) * eps;  phi_z = ELU(z W + b);  logits = phi_z W_dz + logits_h
    softplus = g.op("Softplus", "prior_pre_sigma", out="prior_softplus")
    sigma = g.op("Add", softplus, g.const("sigma_floor", np.array(schema.SIGMA_FLOOR, f32)), out="prior_sigma")
    z = g.op("Add", "prior_mu", g.op("Mul", sigma, eps, out="z_noise"), out="z")
    phi_z_w = g.matrix("phi_z_W", weights.phi_z_weight)
    phi_z_pre = g.op("Gemm", z, phi_z_w, g.const("phi_z_B", weights.phi_z_bias), out="phi_z_pre")
    phi_z = g.op("Elu", phi_z_pre, out=nxt.phi_z)
    g.op("Gemm", phi_z, g.matrix("dec_z_W", weights.decoder_z), "logits_h", out=logits)
    return products


def _row_option_nodes(g: _Graph, vocab_size: int) -> None:
    """Before the Scan, once per call: each row's options as the sampling nodes read them.  temperature_col,
    k_col (top_k, or V for none) and p_col (top_p, or +inf for none) are [B, 1]; `filtered` [B] says which
    rows take the sorted path of docs/cell-spec.md 4.2, `any_filtered` whether any does, `filtered_rows` [F]
    their indices, and k_col_f and p_col_f [F, 1] their options: the sorted path runs on those rows alone."""
    g.node("Unsqueeze", [schema.INPUT_TEMPERATURE, "axis1"], ["temperature_col"])
    g.node("Greater", [schema.INPUT_TOP_K, g.const("zero_i64", np.array(0, np.int64))], ["k_filters"])
    g.node("Where", ["k_filters", schema.INPUT_TOP_K, g.const("vocab_i64", np.array(vocab_size, np.int64))], ["k_eff"])
    g.node("Unsqueeze", ["k_eff", "axis1"], ["k_col"])
    g.node("Less", [schema.INPUT_TOP_P, g.const("one_f64", np.array(1.0))], ["p_filters"])
    g.node("Where", ["p_filters", schema.INPUT_TOP_P, g.const("inf_f64", np.array(np.inf))], ["p_eff"])
    g.node("Unsqueeze", ["p_eff", "axis1"], ["p_col"])
    g.node("Or", ["k_filters", "p_filters"], ["filtered"])
    g.node("Cast", ["filtered"], ["filtered_i64"], to=TensorProto.INT64)
    g.node("ReduceMax", ["filtered_i64"], ["any_filtered_i64"], keepdims=0)  # no axes: over every row
    g.node("Cast", ["any_filtered_i64"], ["any_filtered"], to=TensorProto.BOOL)
    g.node("NonZero", ["filtered"], ["filtered_nz"])  # [1, F]
    g.node("Squeeze", ["filtered_nz", g.root.const_once("axis0_once", np.array([0], np.int64))], ["filtered_rows"])
    g.node("Gather", ["k_col", "filtered_rows"], ["k_col_f"], axis=0)
    g.node("Gather", ["p_col", "filtered_rows"], ["p_col_f"], axis=0)


def _filtered_nodes(g: _Graph, scaled: str, uniform: str, unfiltered: str, out: str, vocab_size: int,
                    opset: int) -> None:  # fmt: skip
    """docs/cell-spec.md 4.2 for the filtered rows (`filtered_rows`), as vrnn.runtime.choice.choose computes
    it, their picks scattered over the unfiltered ones.  Reads the constants the unfiltered nodes made.  Rows
    are gathered and scattered whole, so each row's arithmetic is the same whoever else is sorted with it."""
    root = g.root
    g.node("Gather", [scaled, "filtered_rows"], ["scaled_f"], axis=0)
    g.node("Gather", [uniform, "filtered_rows"], ["uniform_f"], axis=0)
    scaled, uniform = "scaled_f", "uniform_f"
    positions = root.const_once("positions", np.arange(vocab_size, dtype=np.int64)[None, :])  # [1, V]
    last, axis = ["minus_one", "int_max", "axis1"], "axis1_scalar"
    # 1. Sort by descending scaled logit, ties in ascending index (TopK's order for equal values).
    g.node("TopK", [scaled, root.const_once("vocab_k", np.array([vocab_size], np.int64))],
           ["sorted", "order"], axis=1, largest=1, sorted=1)  # fmt: skip
    # 2. Top-k: positions k, k+1, ... get -inf.
    g.node("GreaterOrEqual", [positions, "k_col_f"], ["beyond_k"])
    g.node("Where", ["beyond_k", root.const_once("minus_inf", np.array(-np.inf)), "sorted"], ["kept_k"])
    # 3. p = exp(s) / S, S the running sum's last term.
    g.node("Exp", ["kept_k"], ["sorted_w"])
    g.node("CumSum", ["sorted_w", axis], ["sorted_w_cum"])
    g.node("Slice", ["sorted_w_cum", *last], ["sorted_w_total"])
    g.node("Div", ["sorted_w", "sorted_w_total"], ["probs"])
    # 4. Top-p: keep p_j where the mass before it, (p_0 + ... + p_j) - p_j, is below P (+inf for none).
    g.node("CumSum", ["probs", axis], ["probs_cum"])
    g.node("Sub", ["probs_cum", "probs"], ["before"])
    g.node("Less", ["before", "p_col_f"], ["keep_p"])
    g.node("Where", ["keep_p", "probs", root.const_once("zero_f64", np.array(0.0))], ["kept"])
    # 5. Renormalised running sum; the pick is #{c_j <= u}, capped at the last kept position.
    g.node("CumSum", ["kept", axis], ["kept_cum"])
    g.node("Slice", ["kept_cum", *last], ["kept_total"])
    g.node("Div", ["kept_cum", "kept_total"], ["sorted_cdf"])
    g.node("LessOrEqual", ["sorted_cdf", uniform], ["sorted_at_or_below"])
    g.node("Cast", ["sorted_at_or_below"], ["sorted_at_or_below_i"], to=TensorProto.INT64)
    g.node("ReduceSum", ["sorted_at_or_below_i", "axis1"], ["sorted_picked"], keepdims=0)
    g.node("Greater", ["kept", "zero_f64"], ["nonzero"])
    g.node("Where", ["nonzero", positions, root.const_once("minus_one_scalar", np.array(-1, np.int64))],
           ["nonzero_at"])  # fmt: skip
    if opset >= 18:  # ReduceMax's axes moved from an attribute to an input
        g.node("ReduceMax", ["nonzero_at", "axis1"], ["last_kept"], keepdims=0)
    else:
        g.node("ReduceMax", ["nonzero_at"], ["last_kept"], axes=[1], keepdims=0)
    g.node("Min", ["sorted_picked", "last_kept"], ["sorted_position"])
    g.node("Unsqueeze", ["sorted_position", "axis1"], ["sorted_position_col"])
    g.node("GatherElements", ["order", "sorted_position_col"], ["filtered_pick_col"], axis=1)
    g.node("Squeeze", ["filtered_pick_col", "axis1"], ["filtered_pick"])
    g.node("ScatterElements", [unfiltered, "filtered_rows", "filtered_pick"], [out], axis=0)


def _sampling_nodes(g: _Graph, logits: str, uniform: str, temperature: str, out: str, opset: int,
                    vocab_size: int, filtering: bool) -> None:  # fmt: skip
    """The next character of each row from `logits` [B, V] and `uniform` [B, 1].  Rows without top-k or top-p
    as sampling.choose_unfiltered does: w = exp((logits - max) / T) in float64, cdf = cumsum(w), pick =
    #{cdf <= u * total}, and where u * total rounds up to the total, the last character with non-zero
    weight, #{cdf < total}.  With `filtering`, the other rows through the sorted path (_filtered_nodes)."""
    root = g.root
    g.node("Cast", [logits], ["logits_f64"], to=TensorProto.DOUBLE)
    if opset >= 18:  # ReduceMax's axes moved from an attribute to an input
        g.node("ReduceMax", ["logits_f64", "axis1"], ["row_max"], keepdims=1)
    else:
        g.node("ReduceMax", ["logits_f64"], ["row_max"], axes=[1], keepdims=1)
    g.node("Sub", ["logits_f64", "row_max"], ["centred"])
    g.node("Div", ["centred", temperature], ["scaled"])
    g.node("Exp", ["scaled"], ["weights"])
    g.node("CumSum", ["weights", root.const_once("axis1_scalar", np.array(1, np.int64))], ["cdf"])
    last = [root.const_once("minus_one", np.array([-1], np.int64)),
            root.const_once("int_max", np.array([2**62], np.int64)), "axis1"]  # fmt: skip
    g.node("Slice", ["cdf", *last], ["total"])  # [B, 1]
    g.node("Mul", [uniform, "total"], ["threshold"])
    g.node("LessOrEqual", ["cdf", "threshold"], ["at_or_below"])
    g.node("Less", ["cdf", "total"], ["below_total"])
    g.node("Cast", ["at_or_below"], ["at_or_below_i"], to=TensorProto.INT64)
    g.node("Cast", ["below_total"], ["below_total_i"], to=TensorProto.INT64)
    g.node("ReduceSum", ["at_or_below_i", "axis1"], ["picked"], keepdims=0)
    g.node("ReduceSum", ["below_total_i", "axis1"], ["last_nonzero"], keepdims=0)
    if not filtering:
        g.node("Min", ["picked", "last_nonzero"], [out])
        return
    g.node("Min", ["picked", "last_nonzero"], ["unfiltered_pick"])
    # The sorted path only when some row needs it: an If, so that a batch of unfiltered rows never sorts.
    info = helper.make_tensor_value_info
    sorting = _Graph(g.weights, root=root)
    _filtered_nodes(sorting, "scaled", uniform, "unfiltered_pick", "picked_sorting", vocab_size, opset)
    g.inits += sorting.inits
    then_branch = helper.make_graph(sorting.nodes, "sorting", [], [info("picked_sorting", TensorProto.INT64,
                                                                        ["batch"])])  # fmt: skip
    else_branch = helper.make_graph([helper.make_node("Identity", ["unfiltered_pick"], ["picked_plain"])], "plain",
                                    [], [info("picked_plain", TensorProto.INT64, ["batch"])])  # fmt: skip
    g.node("If", ["any_filtered"], [out], then_branch=then_branch, else_branch=else_branch)


def sampling_graph(vocab_size: int, opset: int = DEFAULT_OPSET, filtering: bool = True) -> onnx.ModelProto:
    """The cell's sampling nodes alone, as a model: (logits float32 [B, V], uniform float64 [B, 1], temperature,
    top_k, top_p [B]) -> chars int64 [B].  The same builders as the cell's Scan body, so that vrnn-export can
    check the arithmetic on logits made to sit on its edges (ties, boundaries), which a model's never do."""
    g = _Graph()
    g.const("axis1", np.array([1], np.int64))
    _row_option_nodes(g, vocab_size)
    _sampling_nodes(g, "logits", "uniform", "temperature_col", "chars", opset, vocab_size, filtering)
    info = helper.make_tensor_value_info
    graph = helper.make_graph(
        g.nodes,
        "vrnn_sampling",
        inputs=[info("logits", TensorProto.FLOAT, ["batch", vocab_size]), info("uniform", TensorProto.DOUBLE,
                ["batch", 1]), *(info(p.name, ONNX_TYPES[p.dtype], ["batch"]) for p in schema.CELL_INPUTS[5:])],
        outputs=[info("chars", TensorProto.INT64, ["batch"])],
        initializer=g.inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 9)
    return model


def build_cell(
    model: VRNN,
    vocab: Vocabulary,
    start_char: str,
    source: dict,
    opset: int = DEFAULT_OPSET,
    weights: str = "float32",
) -> onnx.ModelProto:
    """Return the ONNX ModelProto that generates with `model`, with self-describing metadata; `weights`
    (schema.WEIGHT_FORMATS) says how the file stores its weight matrices."""
    if weights not in schema.WEIGHT_FORMATS:
        raise ValueError(f"weights must be one of {schema.WEIGHT_FORMATS}, got {weights!r}")
    c = model.config
    V, E, H, Z, L = c.vocab_size, c.embed_size, c.hidden_size, c.latent_size, c.layers
    g = _Graph(weights)  # initializers live in the outer graph; the Scan body reads them from there
    g.const("axis0", np.array([0], np.int64))
    g.const("axis1", np.array([1], np.int64))

    batch = "batch"
    info = helper.make_tensor_value_info
    folded = fold_weights(model)

    def state_info(names: _State) -> list[onnx.ValueInfoProto]:
        return [
            info(names.char, TensorProto.INT64, [batch]),
            *(info(n, TensorProto.FLOAT, [batch, H]) for n in names.h),
            *(info(n, TensorProto.FLOAT, [batch, 2 * H]) for n in names.gh_ru),
            *(info(n, TensorProto.FLOAT, [batch, H]) for n in names.gh_n),
            info(names.phi_z, TensorProto.FLOAT, [batch, E]),
        ]

    # The Scan body: one step.  Its names must differ from the outer graph's (SSA across scopes).  The weights'
    # products must sit directly in it, one level below the initializers: onnxruntime prepacks weights for a
    # subgraph's nodes (which keeps a row's arithmetic the same at every batch size, see OnnxCell), but not
    # for those of a subgraph's subgraph, so the choice between sorting and not is an If inside the step.
    body = _Graph(weights, root=g)
    state, nxt = _State("_t", L), _State("_next", L)
    products = _step_nodes(body, folded, state, "eps_t", nxt, "logits_t")
    _sampling_nodes(body, "logits_t", "uniform_t", "temperature_col", nxt.char, opset, V, filtering=True)
    body.node("Identity", [nxt.char], ["char_scan"])  # a value cannot be both carried state and scan output
    g.inits += body.inits
    body_graph = helper.make_graph(
        body.nodes,
        "vrnn_step",
        inputs=[  # carried state, then this step's slices of the scanned inputs
            *state_info(state),
            info("eps_t", TensorProto.FLOAT, [batch, Z]),
            info("uniform_t", TensorProto.DOUBLE, [batch, 1]),
        ],
        outputs=[  # carried state, then this step's rows of the scanned outputs
            *state_info(nxt),
            info("char_scan", TensorProto.INT64, [batch]),
            info("logits_t", TensorProto.FLOAT, [batch, V]),
        ],
    )

    # Before the Scan: each layer's h [B, H] and its gh for the first step, from the same Gemm and
    # Split the body uses (the parts other than gh are not needed here).
    initial, final = _State("_in", L), _State("_out", L)
    initial.char, initial.phi_z = schema.INPUT_PREV_CHAR, schema.INPUT_PHI_Z
    final.char, final.phi_z = "last_char", schema.OUTPUT_PHI_Z
    _row_option_nodes(g, V)
    g.node("Unsqueeze", [schema.INPUT_UNIFORM, g.const("axis2", np.array([2], np.int64))], ["uniform_col"])
    for i, (layer, split) in enumerate(products):
        g.node("Gather", [schema.INPUT_H, g.const(f"layer{i}", np.array(i, np.int64))], [initial.h[i]], axis=0)
        g.state_product(initial.h[i], f"new_h{i}_W", layer.weight, layer.bias, out=f"new_h{i}_in")
        unused = [f"new_h{i}_in_{k}" for k in range(3 if i == L - 1 else 2)]
        g.node("Split", [f"new_h{i}_in", split], [*unused, initial.gh_ru[i], initial.gh_n[i]], axis=1)
    g.node(
        "Scan",
        [*initial.names(), schema.INPUT_EPS, "uniform_col"],
        [*final.names(), schema.OUTPUT_CHARS, schema.OUTPUT_LOGITS],
        body=body_graph,
        num_scan_inputs=2,
    )
    layers_out = [f"{name}_3d" for name in final.h]
    for name, name_3d in zip(final.h, layers_out, strict=True):
        g.node("Unsqueeze", [name, "axis0"], [name_3d if L > 1 else schema.OUTPUT_H])
    if L > 1:
        g.node("Concat", layers_out, [schema.OUTPUT_H], axis=0)
    graph = helper.make_graph(
        g.nodes,
        "vrnn_cell",
        inputs=[info(p.name, ONNX_TYPES[p.dtype], list(p.dims(c, batch))) for p in schema.CELL_INPUTS],
        outputs=[info(p.name, ONNX_TYPES[p.dtype], list(p.dims(c, batch))) for p in schema.CELL_OUTPUTS],
        initializer=g.inits,
    )
    model_proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="vrnn",
        producer_version=vrnn.__version__,
        doc_string="VRNN generation cell: (prev_char, h, phi_z, eps [N], uniform [N], temperature, top_k, top_p) "
        "-> (chars [N], logits [N], h_out, phi_z_out), N steps per run.",
    )
    model_proto.ir_version = min(model_proto.ir_version, 9)  # readable by onnxruntime >= 1.16
    metadata = {
        schema.META_FORMAT: schema.CELL_FORMAT,
        schema.META_SCHEMA_VERSION: str(schema.CELL_SCHEMA_VERSION),
        schema.META_VOCAB: json.dumps(list(vocab.chars), ensure_ascii=False),
        schema.META_START_CHAR: start_char,
        schema.META_CONFIG: json.dumps(c.cell_dict()),
        schema.META_INTERFACE: json.dumps(interface(c)),
        schema.META_SOURCE: json.dumps(source),
        schema.META_WEIGHTS: weights,
    }
    helper.set_model_props(model_proto, metadata)
    onnx.checker.check_model(model_proto, full_check=True)
    return model_proto
