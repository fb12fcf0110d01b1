"""The ONNX opsets a cell can be written in (no imports: `vrnn-export --help` needs them without onnx)."""

DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 14, 21  # Split/Unsqueeze/ReduceSum with tensor inputs need 13; 14 is the oldest tested
