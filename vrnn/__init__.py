"""vrnn: a character-level Variational RNN (Chung et al. 2015).

Subpackages: vrnn.runtime (onnxruntime + numpy only), vrnn.models (the PyTorch
model and checkpoints), vrnn.training (vrnn-train) and vrnn.export (vrnn-export,
vrnn-sample).  Imports point one way: runtime <- models <- training, export.
"""

# Python started in a source checkout finds this folder before the installed package, whose subpackages
# (installed from runtime/, models/, ...) are not in it: extend_path adds the installed copy's folder, so
# `import vrnn.runtime` works from the repository's root after a plain `pip install .` as well.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

__version__ = "0.3.0"
