"""vrnn: a character-level Variational RNN (Chung et al. 2015).

Subpackages: vrnn.runtime (onnxruntime + numpy only), vrnn.models (the PyTorch
model and checkpoints), vrnn.training (vrnn-train) and vrnn.export (vrnn-export,
vrnn-sample).  Imports point one way: runtime <- models <- training, export.
"""

__version__ = "0.2.0"
