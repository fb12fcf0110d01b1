"""The bounds an exported cell must meet before it is written (no imports: `vrnn-export --help` states them
without PyTorch or onnx).  export/verify.py applies them."""

# Maximum absolute difference allowed between onnxruntime and PyTorch on any output.
# Both compute in float32 but in different orders (folded phi_x table, fused Gemms,
# the GRU written out as n + u(h - n)), so results differ by a few float32 ulps of the largest
# intermediate values; 1e-5 is optimum's bar and holds with margin for trained models.
TOLERANCE = 1e-5
VERIFY_BATCHES = (1, 7)  # batch sizes checked: one sample (its own session) and several
VERIFY_STEPS = 3  # steps per call: the loop's carried state is checked, not only one step

# A cell in a lossy weight format cannot match PyTorch to TOLERANCE; it is checked against the float32 cell
# of the same model instead, along a text that cell writes, on the same noise: the mean KL divergence of
# the two next-character distributions must stay below these bounds (nats per character).  Measured on the
# bundled model (docs/results.md, "Weight formats"): float16 1.1e-7, int8 1.7e-4; the bounds leave
# room for other trained models, and refuse a cell whose format broke the model.
MAX_MEAN_KL = {"float16": 1e-5, "int8": 5e-3}
AGREEMENT_BATCH, AGREEMENT_STEPS = 8, 256  # texts and characters per text of that comparison
