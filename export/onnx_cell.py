"""Build the ONNX generation cell of a trained VRNN, node by node with onnx.helper.

Why by hand rather than torch.onnx.export: onnxruntime's cost at batch 1 is
per node, so the cell is written as the smallest graph that computes
`VRNN.step` exactly:

* phi_x is folded into a lookup table: ELU(Linear(Embedding)) has one row per
  character, so it becomes one Gather.
* each GRU layer is one ONNX GRU node (linear_before_reset=1 is PyTorch's GRU).
* the prior and the decoder's h-part read the same top state, so they share one
  Gemm whose output is split.
* the decoder's phi_z-part is a Gemm that adds the h-part as its bias input.

Inputs, outputs and their meaning are in vrnn.runtime.schema; the parity check
in vrnn.export.verify runs this graph against `VRNN.step`.
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
            {"name": schema.INPUT_EPS, "dtype": "float32", "shape": ["batch", Z]},
        ],
        "outputs": [
            {"name": schema.OUTPUT_LOGITS, "dtype": "float32", "shape": ["batch", V]},
            {"name": schema.OUTPUT_H, "dtype": "float32", "shape": [L, "batch", H]},
            {"name": schema.OUTPUT_PHI_Z, "dtype": "float32", "shape": ["batch", E]},
        ],
        "state": [{"input": i, "output": o, "initial": "zeros"} for i, o in schema.STATE_PAIRS],
        "noise": {"input": schema.INPUT_EPS, "distribution": "standard normal, fresh every call"},
        "next_char": "chosen outside the graph from softmax(logits / temperature); fed back as prev_char",
        "start": "first call: prev_char = index of the start character, state = zeros",
    }


def build_cell(
    model: VRNN, vocab: Vocabulary, start_char: str, source: dict, opset: int = DEFAULT_OPSET
) -> onnx.ModelProto:
    """Return the ONNX ModelProto of `model.step`, with self-describing metadata."""
    c = model.config
    V, E, H, Z, L = c.vocab_size, c.embed_size, c.hidden_size, c.latent_size, c.layers
    f32 = np.float32
    with torch.no_grad():
        # phi_x for every character: [V, E]
        table = _np(torch.nn.functional.elu(model.phi_x_proj(model.embedding.weight)))
    inits: list[onnx.TensorProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    nodes = [
        helper.make_node("Gather", [const("phi_x_table", table.astype(f32)), schema.INPUT_PREV_CHAR], ["phi_x"]),
        helper.make_node("Concat", ["phi_x", schema.INPUT_PHI_Z], ["gru_in"], axis=1),
        helper.make_node("Unsqueeze", ["gru_in", const("axis0", np.array([0], np.int64))], ["gru_in_seq"]),
    ]
    if L > 1:
        nodes.append(
            helper.make_node(
                "Split", [schema.INPUT_H, const("layer_split", np.ones(L, np.int64))], [f"h_in_{i}" for i in range(L)]
            )
        )
    layer_input, layer_outputs = "gru_in_seq", []
    for i, cell in enumerate(model.rnn):
        w = _onnx_gate_order(_np(cell.weight_ih), H)[None]
        r = _onnx_gate_order(_np(cell.weight_hh), H)[None]
        b = np.concatenate([_onnx_gate_order(_np(cell.bias_ih), H), _onnx_gate_order(_np(cell.bias_hh), H)])[None]
        h_in = schema.INPUT_H if L == 1 else f"h_in_{i}"
        h_out = schema.OUTPUT_H if L == 1 else f"h_out_{i}"
        nodes.append(
            helper.make_node(
                "GRU",
                [
                    layer_input,
                    const(f"gru{i}_W", w.astype(f32)),
                    const(f"gru{i}_R", r.astype(f32)),
                    const(f"gru{i}_B", b.astype(f32)),
                    "",
                    h_in,
                ],
                ["", h_out],
                hidden_size=H,
                linear_before_reset=1,
                name=f"gru{i}",
            )
        )
        layer_input = h_out  # Y_h [1, B, H] doubles as the next layer's one-step sequence
        layer_outputs.append(h_out)
    if L > 1:
        nodes.append(helper.make_node("Concat", layer_outputs, [schema.OUTPUT_H], axis=0))

    # prior (mu, pre-sigma) and the decoder's h-part in one Gemm: [H, 2Z + V]
    w_dec = _np(model.decoder.weight)  # [V, E + H], input [phi_z, h]
    w_top = np.concatenate([_np(model.prior.weight), w_dec[:, E:]], axis=0).T
    b_top = np.concatenate([_np(model.prior.bias), _np(model.decoder.bias)])
    nodes += [
        helper.make_node("Squeeze", [layer_outputs[-1], "axis0"], ["h_top"]),
        helper.make_node(
            "Gemm", ["h_top", const("top_W", w_top.astype(f32)), const("top_B", b_top.astype(f32))], ["top"]
        ),
        helper.make_node(
            "Split",
            ["top", const("top_split", np.array([Z, Z, V], np.int64))],
            ["prior_mu", "prior_pre_sigma", "logits_h"],
            axis=1,
        ),
        helper.make_node("Softplus", ["prior_pre_sigma"], ["prior_softplus"]),
        helper.make_node(
            "Add", ["prior_softplus", const("sigma_floor", np.array(schema.SIGMA_FLOOR, f32))], ["prior_sigma"]
        ),
        helper.make_node("Mul", ["prior_sigma", schema.INPUT_EPS], ["z_noise"]),
        helper.make_node("Add", ["prior_mu", "z_noise"], ["z"]),
        helper.make_node(
            "Gemm",
            [
                "z",
                const("phi_z_W", _np(model.phi_z_proj.weight).T.astype(f32)),
                const("phi_z_B", _np(model.phi_z_proj.bias).astype(f32)),
            ],
            ["phi_z_pre"],
        ),
        helper.make_node("Elu", ["phi_z_pre"], [schema.OUTPUT_PHI_Z]),
        helper.make_node(
            "Gemm",
            [schema.OUTPUT_PHI_Z, const("dec_z_W", w_dec[:, :E].T.astype(f32)), "logits_h"],
            [schema.OUTPUT_LOGITS],
        ),
    ]

    batch = "batch"
    graph = helper.make_graph(
        nodes,
        "vrnn_cell",
        inputs=[
            helper.make_tensor_value_info(schema.INPUT_PREV_CHAR, TensorProto.INT64, [batch]),
            helper.make_tensor_value_info(schema.INPUT_H, TensorProto.FLOAT, [L, batch, H]),
            helper.make_tensor_value_info(schema.INPUT_PHI_Z, TensorProto.FLOAT, [batch, E]),
            helper.make_tensor_value_info(schema.INPUT_EPS, TensorProto.FLOAT, [batch, Z]),
        ],
        outputs=[
            helper.make_tensor_value_info(schema.OUTPUT_LOGITS, TensorProto.FLOAT, [batch, V]),
            helper.make_tensor_value_info(schema.OUTPUT_H, TensorProto.FLOAT, [L, batch, H]),
            helper.make_tensor_value_info(schema.OUTPUT_PHI_Z, TensorProto.FLOAT, [batch, E]),
        ],
        initializer=inits,
    )
    model_proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="vrnn",
        producer_version=vrnn.__version__,
        doc_string="VRNN single-step generation cell: (prev_char, h, phi_z, eps) -> (logits, h_out, phi_z_out).",
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
