"""``digits-cnn``: a small PyTorch CNN for scikit-learn's 8x8 digits.

Input ``input`` float32 NCHW ``[N, 1, 8, 8]`` (pixels / 16), output ``logits`` ``[N, 10]``.
Only Conv2d, BatchNorm2d, ReLU, MaxPool2d, Flatten and Linear: every exporter (torch.export, ONNX,
litert-torch, OpenVINO) and every int8 quantizer handles these. Dropout is an identity in eval mode.

``trained_model`` is the converter's import-path source ``models.zoo.digits_cnn:trained_model``;
the weights come from the zoo cache, trained here (a few seconds) on first use.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.zoo import data as zoo_data
from models.zoo.cache import WeightCache, fingerprint, source_digests

NAME = "digits-cnn"
NUM_CLASSES = 10
INPUT_SHAPE = (1, 8, 8)


@dataclass(frozen=True)
class TrainConfig:
    """Everything besides the code that decides the trained weights (part of the cache key)."""

    epochs: int = 12
    batch_size: int = 32
    max_lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0


def _conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    # No conv bias: the BatchNorm that follows has its own shift, and folding it stays exact.
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


class DigitsCNN(nn.Module):
    """Three 3x3 conv blocks, two 2x2 max-pools, one linear classifier (about 26k parameters)."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_block(1, 16),
            *_conv_block(16, 32),
            nn.MaxPool2d(2),
            *_conv_block(32, 64),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(64 * 2 * 2, num_classes))

    # The argument is named ``input`` so exporters that take names from the signature
    # (torch.onnx.export with dynamo=True, torch.export) name the graph input ``input``.
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(input))
        return logits


@contextlib.contextmanager
def _training_determinism(seed: int) -> Iterator[None]:
    """Seed torch, force deterministic kernels and one thread, and restore the caller's settings after.

    One thread: the model is tiny, so thread hand-offs cost more than they save, and on a busy
    2-core machine a 2-thread OpenMP team stalls whenever one core is taken (measured: ~150 ms
    per step with 2 threads under load against ~8 ms with 1). It also makes float sums reproducible.
    """
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def train(config: TrainConfig = TrainConfig()) -> DigitsCNN:
    """Train from scratch on the zoo's training split (deterministic for a given config and torch)."""
    digits = zoo_data.load_digits_nchw()
    # The zoo's fixed split, whatever the training seed: evaluation rows must never be trained on.
    split = zoo_data.stratified_split(digits.labels)
    inputs = torch.from_numpy(digits.images[split.train])
    labels = torch.from_numpy(digits.labels[split.train])

    with _training_determinism(config.seed):
        model = DigitsCNN()
        steps_per_epoch = -(-len(labels) // config.batch_size)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.max_lr, weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.max_lr, total_steps=config.epochs * steps_per_epoch
        )
        shuffle = torch.Generator().manual_seed(config.seed)
        model.train()
        for _ in range(config.epochs):
            order = torch.randperm(len(labels), generator=shuffle)
            for start in range(0, len(labels), config.batch_size):
                batch = order[start : start + config.batch_size]
                loss = nn.functional.cross_entropy(model(inputs[batch]), labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    return model.eval()


def cache_key(config: TrainConfig = TrainConfig()) -> str:
    """Changes whenever the code, the data split, the hyper-parameters or a framework version changes."""
    return fingerprint(
        {
            "model": NAME,
            "sources": source_digests(zoo_data, sys.modules[__name__]),
            "config": asdict(config),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "sklearn": package_version("scikit-learn"),
        }
    )


def trained_model(cache: WeightCache | None = None, config: TrainConfig = TrainConfig()) -> DigitsCNN:
    """The trained model in eval mode, from the cache (trained and cached on first use)."""
    store = cache if cache is not None else WeightCache()

    def produce(path: Path) -> None:
        torch.save(train(config).state_dict(), path)

    def read(path: Path) -> DigitsCNN:
        model = DigitsCNN()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()

    return store.load(NAME, cache_key(config), ".pt", produce, read)
