"""wsdlab.models: a compact Llama, a GPT-NeoX (Pythia) model and a small CNN, named presets, the loss.

LMs map token ids (B, T) to logits (B, T, V) and expose `hidden_states(idx)` and `head(h)`;
the CNN maps images (B, C, H, W) to logits (B, num_classes).
"""

from wsdlab.models.build import build_model, flops_per_token, num_parameters
from wsdlab.models.cnn import CNN
from wsdlab.models.config import CNNConfig, LlamaConfig, LMConfig, ModelConfig, NeoXConfig
from wsdlab.models.llama import Llama
from wsdlab.models.neox import NeoX
from wsdlab.models.objective import batch_loss, batch_loss_and_accuracy
from wsdlab.models.presets import PRESETS, model_config

__all__ = [
    "CNN",
    "CNNConfig",
    "LMConfig",
    "PRESETS",
    "Llama",
    "LlamaConfig",
    "ModelConfig",
    "NeoX",
    "NeoXConfig",
    "batch_loss",
    "batch_loss_and_accuracy",
    "build_model",
    "flops_per_token",
    "model_config",
    "num_parameters",
]
