"""``mobilenet-mini``: a MobileNetV2-style network with seeded random weights, for size and latency.

Input ``input`` float32 NCHW ``[N, 3, 96, 96]``, output ``logits`` ``[N, 10]``, about 1.3M parameters.
Inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 linear projection, skip when shapes
allow) with ReLU6, as in MobileNetV2: the depthwise convolutions, the residual adds and the
global pooling are what an edge runtime has to get right and fast, so they are worth measuring.

Its weights are not trained (there is no packaged data set of this shape), so its accuracy means
nothing; BatchNorm running statistics are set from a few passes over seeded images so that
activations stay in a sane range and quantization ranges look like a real network's.
``build_model`` is the converter's import-path source ``models.zoo.mobilenet_mini:build_model``.
"""

from __future__ import annotations

import torch
from torch import nn

from models.zoo.data import random_images

NAME = "mobilenet-mini"
NUM_CLASSES = 10
INPUT_SHAPE = (3, 96, 96)

STEM_CHANNELS = 32
HEAD_CHANNELS = 1024
# MobileNetV2's table: (expansion factor, output channels, repeats, stride of the first repeat).
# 96x96 input: the stem and four stride-2 stages bring it to 3x3 before the head.
INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 3, 2),
    (6, 96, 2, 1),
    (6, 160, 2, 2),
    (6, 192, 1, 1),
)
BN_CALIBRATION_BATCHES = 4
BN_CALIBRATION_BATCH_SIZE = 16
# Far from the seeds of the zoo's calibration and evaluation images, so none of them is reused here.
_BN_SEED_BASE = 10_000


def _conv_bn(
    in_channels: int, out_channels: int, *, kernel: int, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expand (1x1) → depthwise (3x3) → project (1x1, linear); adds the input when the shapes match."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn(in_channels, hidden, kernel=1))
        layers.append(_conv_bn(hidden, hidden, kernel=3, stride=stride, groups=hidden))
        # No activation after the projection: MobileNetV2's "linear bottleneck".
        layers.append(_conv_bn(hidden, out_channels, kernel=1, act=False))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.block(x)
        return x + out if self.use_residual else out


class MobileNetMini(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, STEM_CHANNELS, kernel=3, stride=2)]
        channels = STEM_CHANNELS
        for expansion, out_channels, repeats, first_stride in INVERTED_RESIDUAL_SETTING:
            for repeat in range(repeats):
                stride = first_stride if repeat == 0 else 1
                layers.append(InvertedResidual(channels, out_channels, stride=stride, expansion=expansion))
                channels = out_channels
        layers.append(_conv_bn(channels, HEAD_CHANNELS, kernel=1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(HEAD_CHANNELS, num_classes))

    # Named ``input`` so exporters that take names from the signature name the graph input ``input``.
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.pool(self.features(input)))
        return logits


def _init_weights(model: nn.Module) -> None:
    """torchvision's MobileNetV2 initialisation (drawn from torch's global RNG, seeded by the caller)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)


@torch.no_grad()
def _set_batchnorm_statistics(model: nn.Module, seed: int) -> None:
    """Replace BatchNorm running stats with the exact average over a few batches of seeded images."""
    batchnorms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in batchnorms:
        bn.reset_running_stats()
        bn.momentum = None  # None: a cumulative average over the batches, independent of their number
    model.train()
    # One thread, as for digits-cnn training: on a shared 2-core machine a 2-thread team stalls
    # whenever the other core is busy, and these few batches gain little from a second thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for batch in range(BN_CALIBRATION_BATCHES):
            images = random_images(
                BN_CALIBRATION_BATCH_SIZE, INPUT_SHAPE, seed=_BN_SEED_BASE + seed * 100 + batch
            )
            model(torch.from_numpy(images))
    finally:
        torch.set_num_threads(threads)
    for bn in batchnorms:
        bn.momentum = 0.1
    model.eval()


def build_model(seed: int = 0) -> MobileNetMini:
    """The network in eval mode: deterministic weights from ``seed``, BatchNorm statistics set.

    The caller's global torch RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MobileNetMini()
        _init_weights(model)
    _set_batchnorm_statistics(model, seed)
    return model


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
