"""``digits-keras``: the Keras 3 twin of ``digits-cnn``, channels-last.

Same layers and split as the PyTorch model, input ``input`` float32 NHWC ``[N, 8, 8, 1]``
(pixels / 16), output ``logits`` ``[N, 10]``. Saved and cached as a ``.keras`` file, which loads
back with ``keras.models.load_model`` and converts with ``tf.lite.TFLiteConverter.from_keras_model``.

Training seeds every initializer, the dropout layer and the shuffling explicitly, instead of
calling ``keras.utils.set_random_seed``, which would reset the caller's global Python, NumPy and
TensorFlow random state as a side effect.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import keras
import numpy as np

from models.zoo import data as zoo_data
from models.zoo.cache import WeightCache, fingerprint, source_digests

NAME = "digits-keras"
NUM_CLASSES = 10
INPUT_SHAPE = (8, 8, 1)
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class TrainConfig:
    """Everything besides the code that decides the trained weights (part of the cache key)."""

    epochs: int = 12
    batch_size: int = 32
    max_lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0


def build_model(seed: int = 0) -> keras.Model:
    """The untrained network, its weights initialised from ``seed``."""
    seeds = iter(range(seed * 1000, seed * 1000 + 100))

    def conv_block(x: keras.KerasTensor, filters: int) -> keras.KerasTensor:
        x = keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=False,
            kernel_initializer=keras.initializers.HeNormal(seed=next(seeds)),
        )(x)
        x = keras.layers.BatchNormalization()(x)
        return keras.layers.ReLU()(x)

    inputs = keras.Input(shape=INPUT_SHAPE, name=INPUT_NAME)
    x = conv_block(inputs, 16)
    x = conv_block(x, 32)
    x = keras.layers.MaxPooling2D(2)(x)
    x = conv_block(x, 64)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.2, seed=next(seeds))(x)
    logits = keras.layers.Dense(
        NUM_CLASSES, name=OUTPUT_NAME, kernel_initializer=keras.initializers.GlorotUniform(seed=next(seeds))
    )(x)
    return keras.Model(inputs, logits, name="digits_keras")


def train(config: TrainConfig = TrainConfig()) -> keras.Model:
    """Train from scratch on the zoo's training split, the same rows ``digits-cnn`` trains on."""
    digits = zoo_data.load_digits_nchw()
    # The zoo's fixed split, whatever the training seed: evaluation rows must never be trained on.
    split = zoo_data.stratified_split(digits.labels)
    inputs = zoo_data.nchw_to_nhwc(digits.images[split.train])
    labels = digits.labels[split.train]

    model = build_model(config.seed)
    steps = config.epochs * -(-len(labels) // config.batch_size)
    # Warm up for a quarter of the steps, then cosine down to zero: the one-cycle shape digits-cnn uses.
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps - steps // 4, warmup_target=config.max_lr, warmup_steps=steps // 4
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # XLA brings nothing on CPU for a model this small but compile time and run-to-run variance.
        jit_compile=False,
    )
    shuffle = np.random.default_rng(config.seed)
    for _ in range(config.epochs):
        order = shuffle.permutation(len(labels))
        model.fit(
            inputs[order], labels[order], batch_size=config.batch_size, epochs=1, shuffle=False, verbose=0
        )
    return model


def cache_key(config: TrainConfig = TrainConfig()) -> str:
    """Changes whenever the code, the data split, the hyper-parameters or a framework version changes."""
    import tensorflow as tf

    return fingerprint(
        {
            "model": NAME,
            "sources": source_digests(zoo_data, sys.modules[__name__]),
            "config": asdict(config),
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
            "sklearn": package_version("scikit-learn"),
        }
    )


def trained_model(cache: WeightCache | None = None, config: TrainConfig = TrainConfig()) -> keras.Model:
    """The trained model, from the cache (trained and cached on first use)."""
    store = cache if cache is not None else WeightCache()

    def produce(path: Path) -> None:
        train(config).save(path)

    def read(path: Path) -> keras.Model:
        model: keras.Model = keras.models.load_model(path, compile=False)
        return model

    return store.load(NAME, cache_key(config), ".keras", produce, read)
