"""Build the ONNX generation cell of a trained VRNN, node by node with onnx.helper.

The file's graph is one ONNX Scan over the noise: each iteration is `VRNN.step`
followed by inverse-CDF sampling of the next character, so one
InferenceSession.run generates as many characters as it is given noise for.
Why: at batch 1 a character used to cost one run() plus numpy sampling in
Python, several times the arithmetic; inside the graph an iteration costs only
its nodes.  Scan rather than Loop: the same body ran about twice as fast per
character at the write-up's size (no trip count, condition or Gather of the
step's noise, and onnxruntime slices the scanned inputs itself).

Why by hand rather than torch.onnx.export: onnxruntime's cost at batch 1 is
per node, so the step is written as the smallest graph that computes
`VRNN.step` exactly:

* phi_x is folded into a lookup table: ELU(Linear(Embedding)) has one row per
  character, so it becomes one Gather.
* each GRU layer is one ONNX GRU node (linear_before_reset=1 is PyTorch's GRU).
* the prior and the decoder's h-part read the same top state, so they share one
  Gemm whose output is split.
* the decoder's phi_z-part is a Gemm that adds the h-part as its bias input.

The sampling nodes repeat vrnn.runtime.sampling's unfiltered inverse-CDF choice
in float64, operation for operation.  Inputs, outputs and their meaning are in
vrnn.runtime.schema; vrnn.export.verify runs this graph against `VRNN.step` and
the numpy sampler.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

import vrnn
from vrnn.models.vrnn import VRNN
from vrnn.runtime import schema
from vrnn.runtime.vocab import Vocabulary

DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 14, 21  # GRU(14), Softplus, Elu, Gemm, Split/Squeeze with tensor inputs (13+)


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().double().numpy()


def _onnx_gate_order(weight: np.ndarray, hidden: int) -> np.ndarray:
    """PyTorch stacks GRU gates as (reset, update, new); ONNX as (update, reset, hidden)."""
    r, u, n = weight[:hidden], weight[hidden : 2 * hidden], weight[2 * hidden :]
    return np.concatenate([u, r, n], axis=0)


def interface(config: schema.ModelConfig) -> dict:
    """The JSON description of inputs, outputs and state stored in the cell's metadata."""
    L, H, E, Z, V = config.layers, config.hidden_size, config.embed_size, config.latent_size, config.vocab_size
    return {
        "inputs": [
            {"name": schema.INPUT_PREV_CHAR, "dtype": "int64", "shape": ["batch"]},
            {"name": schema.INPUT_H, "dtype": "float32", "shape": [L, "batch", H]},
            {"name": schema.INPUT_PHI_Z, "dtype": "float32", "shape": ["batch", E]},
            {"name": schema.INPUT_EPS, "dtype": "float32", "shape": ["steps", "batch", Z]},
            {"name": schema.INPUT_UNIFORM, "dtype": "float64", "shape": ["steps", "batch"]},
            {"name": schema.INPUT_TEMPERATURE, "dtype": "float64", "shape": []},
        ],
        "outputs": [
            {"name": schema.OUTPUT_CHARS, "dtype": "int64", "shape": ["steps", "batch"]},
            {"name": schema.OUTPUT_LOGITS, "dtype": "float32", "shape": ["steps", "batch", V]},
            {"name": schema.OUTPUT_H, "dtype": "float32", "shape": [L, "batch", H]},
            {"name": schema.OUTPUT_PHI_Z, "dtype": "float32", "shape": ["batch", E]},
        ],
        "state": [{"input": i, "output": o, "initial": "zeros"} for i, o in schema.STATE_PAIRS],
        "noise": {
            schema.INPUT_EPS: "standard normal, a fresh row per step",
            schema.INPUT_UNIFORM: "uniform in [0, 1), a fresh row per step",
        },
        "next_char": "inverse CDF of softmax(logits / temperature) at uniform, in float64; fed to the next step",
        "start": "prev_char = index of the start character, state = zeros",
    }


class _Graph:
    """Nodes and initializers under construction."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        # (np.ascontiguousarray would turn a scalar into shape [1]: CumSum's axis must be 0-d)
        self.inits.append(numpy_helper.from_array(value if value.ndim == 0 else np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], **attrs: object) -> None:
        self.nodes.append(helper.make_node(op, inputs, outputs, **attrs))


def _step_nodes(g: _Graph, model: VRNN, prev: str, h: str, phi_z: str, eps: str, out: dict[str, str]) -> None:
    """`VRNN.step` on the named values; writes out["logits"], out["h"], out["phi_z"]."""
    c = model.config
    V, E, H, Z, L = c.vocab_size, c.embed_size, c.hidden_size, c.latent_size, c.layers
    f32 = np.float32
    with torch.no_grad():
        # phi_x for every character: [V, E]
        table = _np(torch.nn.functional.elu(model.phi_x_proj(model.embedding.weight)))
    g.node("Gather", [g.const("phi_x_table", table.astype(f32)), prev], ["phi_x"])
    g.node("Concat", ["phi_x", phi_z], ["gru_in"], axis=1)
    g.node("Unsqueeze", ["gru_in", "axis0"], ["gru_in_seq"])
    if L > 1:
        g.node("Split", [h, g.const("layer_split", np.ones(L, np.int64))], [f"h_in_{i}" for i in range(L)])
    layer_input, layer_outputs = "gru_in_seq", []
    for i, cell in enumerate(model.rnn):
        w = _onnx_gate_order(_np(cell.weight_ih), H)[None]
        r = _onnx_gate_order(_np(cell.weight_hh), H)[None]
        b = np.concatenate([_onnx_gate_order(_np(cell.bias_ih), H), _onnx_gate_order(_np(cell.bias_hh), H)])[None]
        h_in = h if L == 1 else f"h_in_{i}"
        h_out = out["h"] if L == 1 else f"h_out_{i}"
        weights = [g.const(f"gru{i}_{k}", v.astype(f32)) for k, v in (("W", w), ("R", r), ("B", b))]
        g.node("GRU", [layer_input, *weights, "", h_in], ["", h_out], hidden_size=H, linear_before_reset=1)
        layer_input = h_out  # Y_h [1, B, H] doubles as the next layer's one-step sequence
        layer_outputs.append(h_out)
    if L > 1:
        g.node("Concat", layer_outputs, [out["h"]], axis=0)

    # prior (mu, pre-sigma) and the decoder's h-part in one Gemm: [H, 2Z + V]
    w_dec = _np(model.decoder.weight)  # [V, E + H], input [phi_z, h]
    w_top = np.concatenate([_np(model.prior.weight), w_dec[:, E:]], axis=0).T
    b_top = np.concatenate([_np(model.prior.bias), _np(model.decoder.bias)])
    g.node("Squeeze", [layer_outputs[-1], "axis0"], ["h_top"])
    g.node("Gemm", ["h_top", g.const("top_W", w_top.astype(f32)), g.const("top_B", b_top.astype(f32))], ["top"])
    split = g.const("top_split", np.array([Z, Z, V], np.int64))
    g.node("Split", ["top", split], ["prior_mu", "prior_pre_sigma", "logits_h"], axis=1)
    g.node("Softplus", ["prior_pre_sigma"], ["prior_softplus"])
    g.node("Add", ["prior_softplus", g.const("sigma_floor", np.array(schema.SIGMA_FLOOR, f32))], ["prior_sigma"])
    g.node("Mul", ["prior_sigma", eps], ["z_noise"])
    g.node("Add", ["prior_mu", "z_noise"], ["z"])
    phi_z_w = g.const("phi_z_W", _np(model.phi_z_proj.weight).T.astype(f32))
    g.node("Gemm", ["z", phi_z_w, g.const("phi_z_B", _np(model.phi_z_proj.bias).astype(f32))], ["phi_z_pre"])
    g.node("Elu", ["phi_z_pre"], [out["phi_z"]])
    g.node("Gemm", [out["phi_z"], g.const("dec_z_W", w_dec[:, :E].T.astype(f32)), "logits_h"], [out["logits"]])


def _sampling_nodes(g: _Graph, logits: str, uniform: str, temperature: str, out: str, opset: int) -> None:
    """The next character from `logits` [B, V] and `uniform` [B, 1], as sampling.choose_unfiltered does:
    w = exp((logits - max) / T) in float64, cdf = cumsum(w), pick = #{cdf <= u * total}, and where
    u * total rounds up to the total, the last character with non-zero weight, #{cdf < total}."""
    g.node("Cast", [logits], ["logits_f64"], to=TensorProto.DOUBLE)
    if opset >= 18:  # ReduceMax's axes moved from an attribute to an input
        g.node("ReduceMax", ["logits_f64", "axis1"], ["row_max"], keepdims=1)
    else:
        g.node("ReduceMax", ["logits_f64"], ["row_max"], axes=[1], keepdims=1)
    g.node("Sub", ["logits_f64", "row_max"], ["centred"])
    g.node("Div", ["centred", temperature], ["scaled"])
    g.node("Exp", ["scaled"], ["weights"])
    g.node("CumSum", ["weights", g.const("axis1_scalar", np.array(1, np.int64))], ["cdf"])
    last = [g.const("minus_one", np.array([-1], np.int64)), g.const("int_max", np.array([2**62], np.int64)), "axis1"]
    g.node("Slice", ["cdf", *last], ["total"])  # [B, 1]
    g.node("Mul", [uniform, "total"], ["threshold"])
    g.node("LessOrEqual", ["cdf", "threshold"], ["at_or_below"])
    g.node("Less", ["cdf", "total"], ["below_total"])
    g.node("Cast", ["at_or_below"], ["at_or_below_i"], to=TensorProto.INT64)
    g.node("Cast", ["below_total"], ["below_total_i"], to=TensorProto.INT64)
    g.node("ReduceSum", ["at_or_below_i", "axis1"], ["picked"], keepdims=0)
    g.node("ReduceSum", ["below_total_i", "axis1"], ["last_nonzero"], keepdims=0)
    g.node("Min", ["picked", "last_nonzero"], [out])


def build_cell(
    model: VRNN, vocab: Vocabulary, start_char: str, source: dict, opset: int = DEFAULT_OPSET
) -> onnx.ModelProto:
    """Return the ONNX ModelProto that generates with `model`, with self-describing metadata."""
    c = model.config
    V, E, H, Z, L = c.vocab_size, c.embed_size, c.hidden_size, c.latent_size, c.layers
    g = _Graph()  # initializers live in the outer graph; the Scan body reads them from there
    g.const("axis0", np.array([0], np.int64))
    g.const("axis1", np.array([1], np.int64))

    # The Scan body: one step.  Its names must differ from the outer graph's (SSA across scopes).
    body = _Graph()
    step_out = {"logits": "logits_t", "h": "h_next", "phi_z": "phi_z_next"}
    _step_nodes(body, model, "prev_t", "h_t", "phi_z_t", "eps_t", step_out)
    _sampling_nodes(body, "logits_t", "uniform_t", schema.INPUT_TEMPERATURE, "char_t", opset)
    body.node("Identity", ["char_t"], ["char_scan"])  # a value cannot be both carried state and scan output
    g.inits += body.inits

    batch = "batch"
    info = helper.make_tensor_value_info
    body_graph = helper.make_graph(
        body.nodes,
        "vrnn_step",
        inputs=[  # carried state, then this step's slices of the scanned inputs
            info("prev_t", TensorProto.INT64, [batch]),
            info("h_t", TensorProto.FLOAT, [L, batch, H]),
            info("phi_z_t", TensorProto.FLOAT, [batch, E]),
            info("eps_t", TensorProto.FLOAT, [batch, Z]),
            info("uniform_t", TensorProto.DOUBLE, [batch, 1]),
        ],
        outputs=[  # carried state, then this step's rows of the scanned outputs
            info("char_t", TensorProto.INT64, [batch]),
            info("h_next", TensorProto.FLOAT, [L, batch, H]),
            info("phi_z_next", TensorProto.FLOAT, [batch, E]),
            info("char_scan", TensorProto.INT64, [batch]),
            info("logits_t", TensorProto.FLOAT, [batch, V]),
        ],
    )
    g.node("Unsqueeze", [schema.INPUT_UNIFORM, g.const("axis2", np.array([2], np.int64))], ["uniform_col"])
    g.node(
        "Scan",
        [schema.INPUT_PREV_CHAR, schema.INPUT_H, schema.INPUT_PHI_Z, schema.INPUT_EPS, "uniform_col"],
        ["last_char", schema.OUTPUT_H, schema.OUTPUT_PHI_Z, schema.OUTPUT_CHARS, schema.OUTPUT_LOGITS],
        body=body_graph,
        num_scan_inputs=2,
    )
    graph = helper.make_graph(
        g.nodes,
        "vrnn_cell",
        inputs=[
            info(schema.INPUT_PREV_CHAR, TensorProto.INT64, [batch]),
            info(schema.INPUT_H, TensorProto.FLOAT, [L, batch, H]),
            info(schema.INPUT_PHI_Z, TensorProto.FLOAT, [batch, E]),
            info(schema.INPUT_EPS, TensorProto.FLOAT, ["steps", batch, Z]),
            info(schema.INPUT_UNIFORM, TensorProto.DOUBLE, ["steps", batch]),
            info(schema.INPUT_TEMPERATURE, TensorProto.DOUBLE, []),
        ],
        outputs=[
            info(schema.OUTPUT_CHARS, TensorProto.INT64, ["steps", batch]),
            info(schema.OUTPUT_LOGITS, TensorProto.FLOAT, ["steps", batch, V]),
            info(schema.OUTPUT_H, TensorProto.FLOAT, [L, batch, H]),
            info(schema.OUTPUT_PHI_Z, TensorProto.FLOAT, [batch, E]),
        ],
        initializer=g.inits,
    )
    model_proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="vrnn",
        producer_version=vrnn.__version__,
        doc_string="VRNN generation cell: (prev_char, h, phi_z, eps [N], uniform [N], temperature) "
        "-> (chars [N], logits [N], h_out, phi_z_out), N steps per run.",
    )
    model_proto.ir_version = min(model_proto.ir_version, 9)  # readable by onnxruntime >= 1.16
    metadata = {
        schema.META_FORMAT: schema.CELL_FORMAT,
        schema.META_SCHEMA_VERSION: str(schema.CELL_SCHEMA_VERSION),
        schema.META_VOCAB: json.dumps(list(vocab.chars), ensure_ascii=False),
        schema.META_START_CHAR: start_char,
        schema.META_CONFIG: json.dumps(c.to_dict()),
        schema.META_INTERFACE: json.dumps(interface(c)),
        schema.META_SOURCE: json.dumps(source),
    }
    helper.set_model_props(model_proto, metadata)
    onnx.checker.check_model(model_proto, full_check=True)
    return model_proto
