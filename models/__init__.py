"""vrnn.models: the PyTorch VRNN and its checkpoint format."""

from vrnn.models.vrnn import VRNN, ElboTerms, ModelConfig, gaussian_kl

__all__ = ["VRNN", "ElboTerms", "ModelConfig", "gaussian_kl"]
