"""vrnn.export: the ONNX generation cell (`vrnn-export`) and the PyTorch sampling path (`vrnn-sample`)."""
