"""vrnn.training: fit a VRNN to text (`vrnn-train`, `python -m vrnn.training`)."""
