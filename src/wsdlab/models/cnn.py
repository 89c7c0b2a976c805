"""Small CNN of the LM-vs-CNN universality study: 3x3 conv + ReLU stages, 2x2 max-pool between them.

Default widths in -> 32 -> 128 -> 128 -> 128 (cfg.channels); a max-pool follows every convolution
but the last, then global average pooling and a linear classifier. 334,346 parameters for CIFAR-10
(3 channels, 10 classes), 333,770 for Fashion-MNIST (1 channel); any image size >= 2^(stages-1) works.
Shapes: B batch, C channels, S image side.
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
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))  # (B, C_i, S_i, S_i)
            if i < last:
                x = F.max_pool2d(x, 2)  # (B, C_i, S_i / 2, S_i / 2)
        return x.mean(dim=(2, 3))  # global average pool -> (B, C_last)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))  # (B, num_classes)


def cnn_num_parameters(cfg: CNNConfig) -> int:
    """Analytic parameter count of `CNN(cfg)`: 3x3 kernels + biases, then the linear head."""
    widths = [cfg.in_channels, *cfg.channels]
    convs = sum(9 * c_in * c_out + c_out for c_in, c_out in zip(widths, widths[1:]))
    return convs + widths[-1] * cfg.num_classes + cfg.num_classes


def cnn_forward_macs(cfg: CNNConfig) -> int:
    """Multiply-accumulates of one forward pass on one image (convolutions at their resolution + head)."""
    widths, side, macs = [cfg.in_channels, *cfg.channels], cfg.image_size, 0
    for i, (c_in, c_out) in enumerate(zip(widths, widths[1:])):
        macs += side * side * c_out * c_in * 9
        if i < len(widths) - 2:
            side //= 2
    return macs + widths[-1] * cfg.num_classes
