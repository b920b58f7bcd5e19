"""The reference model zoo: small models built only from data that ships inside packages.

``digits-cnn`` (PyTorch) and ``digits-keras`` (Keras 3) are trained on scikit-learn's digits and
cached; ``mobilenet-mini`` is a MobileNetV2-style network with seeded weights, for size and latency.
Importing this package is light: torch, keras and scikit-learn load only when a model or its
data is asked for.

    from models.zoo import get_reference
    ref = get_reference("digits-cnn")
    model = ref.load()
    calib_npz, eval_npz = ref.write_data(out_dir)
"""

from models.zoo.cache import CACHE_DIR_ENV, CacheError, WeightCache, default_cache_dir
from models.zoo.data import ReferenceData, SplitIndices, stratified_split
from models.zoo.evaluation import accuracy, predict
from models.zoo.reference import (
    CALIB_FILE,
    EVAL_FILE,
    LABELS_KEY,
    REFERENCE_NAMES,
    ReferenceModel,
    UnknownReferenceError,
    get_reference,
    resolve_source,
)

__all__ = [
    "CACHE_DIR_ENV",
    "CALIB_FILE",
    "EVAL_FILE",
    "LABELS_KEY",
    "REFERENCE_NAMES",
    "CacheError",
    "ReferenceData",
    "ReferenceModel",
    "SplitIndices",
    "UnknownReferenceError",
    "WeightCache",
    "accuracy",
    "default_cache_dir",
    "get_reference",
    "predict",
    "resolve_source",
    "stratified_split",
]
