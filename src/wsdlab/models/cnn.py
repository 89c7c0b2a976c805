"""Small CNN of the LM-vs-CNN universality study (paper 001, App. A, `CIFARCNN2`).

The paper's code, per stage: `x = self.pool(F.relu(self.conv_i(x)))` with
`self.pool = nn.MaxPool2d(2, 2)` and `nn.Conv2d(c_in, c_out, 3, padding = 1)`, four stages
3 -> 32 -> 128 -> 128 -> 128; then `x = x.mean(dim=[2,3])` and `nn.Linear(128, 10)`.
So a 2x2 max-pool follows EVERY convolution, the last one included (CIFAR-10: 32 -> 16 -> 8 -> 4 -> 2
before the global average pool). Widths are cfg.channels. 334,346 parameters for CIFAR-10
(3 channels, 10 classes), 333,770 for Fashion-MNIST (1 channel; 28 -> 14 -> 7 -> 3 -> 1); images
need a side >= 2^stages. Shapes: B batch, C channels, S image side.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from wsdlab.models.config import CNNConfig


class CNN(nn.Module):
    """Images (B, C, S, S) -> logits (B, num_classes). PyTorch default (Kaiming-uniform) init."""

    def __init__(self, cfg: CNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = [cfg.in_channels, *cfg.channels]
        self.convs = nn.ModuleList(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1) for c_in, c_out in zip(widths, widths[1:]))
        self.fc = nn.Linear(widths[-1], cfg.num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Pooled features (B, channels[-1]) before the classifier (linear probes start here)."""
        for conv in self.convs:
            x = F.max_pool2d(F.relu(conv(x)), 2)  # (B, C_i, S_i, S_i) -> (B, C_i, S_i // 2, S_i // 2)
        return x.mean(dim=(2, 3))  # global average pool -> (B, C_last)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))  # (B, num_classes)


def cnn_num_parameters(cfg: CNNConfig) -> int:
    """Analytic parameter count of `CNN(cfg)`: 3x3 kernels + biases, then the linear head."""
    widths = [cfg.in_channels, *cfg.channels]
    convs = sum(9 * c_in * c_out + c_out for c_in, c_out in zip(widths, widths[1:]))
    return convs + widths[-1] * cfg.num_classes + cfg.num_classes


def cnn_forward_macs(cfg: CNNConfig) -> int:
    """Multiply-accumulates of one forward pass on one image (convolutions at their resolution + head).

    Each convolution runs at the side its input has (halved by every earlier pool); pools add none."""
    widths, side, macs = [cfg.in_channels, *cfg.channels], cfg.image_size, 0
    for i, (c_in, c_out) in enumerate(zip(widths, widths[1:])):
        macs += side * side * c_out * c_in * 9
        side //= 2
    return macs + widths[-1] * cfg.num_classes
