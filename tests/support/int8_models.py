"""Small digits models with the layers that decide which TFLite int8 route works, trained here.

- ``hardswish_block``: a MobileNetV3-style network (hardswish stem, depthwise conv with swish
  ``x * sigmoid(x)``, a squeeze-and-excite gate with PaddlePaddle's hardsigmoid, a residual add). Its
  elementwise ``aten.mul.Tensor`` has no quantized lowering in litert-torch, so PT2E fails on it;
  ai-edge-quantizer quantizes the whole of it.
- ``leaky_relu_net``: convolutions with LeakyReLU, which litert-torch lowers to TFLite's
  ``LEAKY_RELU``, an op ai-edge-quantizer leaves in float (with Q/DQ around it).

Both take ``input`` ``[N, 1, 8, 8]`` (scikit-learn's digits / 16) and return ``logits`` ``[N, 10]``;
they train in a second or two on the zoo's digits split, with a fixed seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's own convention

from models.zoo.data import digits_reference_data

TRAIN_EPOCHS = 10
TRAIN_SEED = 0


class HardSwishBlock(nn.Module):
    """Stem (conv + hardswish) → depthwise conv + swish → squeeze-and-excite → residual → pool → linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.squeeze = nn.Conv2d(16, 8, 1)
        self.excite = nn.Conv2d(8, 16, 1)
        self.project = nn.Conv2d(16, 16, 1)
        self.classifier = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.hardswish(self.stem(x))
        y = self.depthwise(x)
        y = y * torch.sigmoid(y)  # swish, written as MobileNetV3/EfficientNet code does: aten.mul.Tensor
        squeezed = self.excite(F.relu(self.squeeze(y.mean((2, 3), keepdim=True))))
        # HardSigmoid as PaddlePaddle exports it (ONNX alpha 0.2, beta 0.5): clamp(x, 0, 1), which
        # litert-torch lowers to RELU_0_TO_1 unless the exporter rewrites it.
        gate = torch.clamp(squeezed * 0.2 + 0.5, 0.0, 1.0)
        y = self.project(y * gate) + x
        logits: torch.Tensor = self.classifier(F.avg_pool2d(F.hardswish(y), 2).flatten(1))
        return logits


class LeakyReluNet(nn.Module):
    """Two convolutions with LeakyReLU (TFLite ``LEAKY_RELU``), 2x2 average pooling, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.classifier = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv1(x), 0.1)
        x = F.leaky_relu(self.conv2(x), 0.1)
        logits: torch.Tensor = self.classifier(F.avg_pool2d(x, 2).flatten(1))
        return logits


def _trained(model: nn.Module) -> nn.Module:
    data = digits_reference_data("NCHW")
    assert data.train is not None and data.train_labels is not None
    images, labels = torch.from_numpy(data.train), torch.from_numpy(data.train_labels)
    generator = torch.Generator().manual_seed(TRAIN_SEED)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(TRAIN_EPOCHS):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), 32):
            batch = order[start : start + 32]
            optimizer.zero_grad()
            F.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimizer.step()
    return model.eval()


def hardswish_block() -> nn.Module:
    torch.manual_seed(TRAIN_SEED)
    return _trained(HardSwishBlock())


def leaky_relu_net() -> nn.Module:
    torch.manual_seed(TRAIN_SEED)
    return _trained(LeakyReluNet())


def accuracy(model: nn.Module) -> float:
    data = digits_reference_data("NCHW")
    with torch.no_grad():
        predicted = model(torch.from_numpy(data.eval_inputs)).argmax(1).numpy()
    return float(np.mean(predicted == data.eval_labels))


def write_digits_data(directory: Path) -> tuple[Path, Path]:
    """``calib.npz`` (``input``) and ``eval.npz`` (``input``, ``labels``) from the zoo's digits split."""
    data = digits_reference_data("NCHW")
    directory.mkdir(parents=True, exist_ok=True)
    calib, evaluation = directory / "calib.npz", directory / "eval.npz"
    np.savez(calib, input=data.calib)
    assert data.eval_labels is not None
    np.savez(evaluation, input=data.eval_inputs, labels=data.eval_labels)
    return calib, evaluation
