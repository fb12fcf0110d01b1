"""vrnn.runtime: sample text from an exported vrnn cell with onnxruntime and numpy.

This package never imports torch (nor vrnn.models, vrnn.training, vrnn.export):
it is the part that services and programs without PyTorch embed.
"""

from vrnn.runtime.bundled import BUNDLED_CELL
from vrnn.runtime.choice import SamplingOptions
from vrnn.runtime.errors import UsageError, VrnnError
from vrnn.runtime.sampler import Sampler
from vrnn.runtime.schema import ModelConfig
from vrnn.runtime.vocab import Vocabulary

__all__ = [
    "BUNDLED_CELL",
    "ModelConfig",
    "Sampler",
    "SamplingOptions",
    "UsageError",
    "Vocabulary",
    "VrnnError",
]
