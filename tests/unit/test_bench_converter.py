"""The converter bench's pure parts: which bundles it builds, how it pairs timings, what it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import bench_converter, report


def test_every_format_gets_batch_1_builds_and_only_batchable_formats_get_dynamic_ones() -> None:
    cells = set(bench_converter.CELLS)
    for fmt in bench_converter.FORMATS:
        for precision in ("fp32", "int8"):
            assert bench_converter.Cell(fmt, precision, static=True) in cells
            dynamic = bench_converter.Cell(fmt, precision, static=False)
            assert (dynamic in cells) == (fmt not in bench_converter.SINGLE_SAMPLE_FORMATS)
    assert len({cell.profile for cell in cells}) == len(cells), "profile names must be unique"


def test_the_speed_up_is_the_median_of_paired_round_ratios() -> None:
    # Round 2 ran while the host was twice as slow for both: the paired ratio is still 2.
    fp32 = [2.0, 4.0, 2.2]
    int8 = [1.0, 2.0, 1.0]

    assert bench_converter.paired_speedup(fp32, int8) == pytest.approx(2.0)
    # The ratio of the medians would have said 2.2 / 1.0 instead.
    assert bench_converter.paired_speedup(fp32, int8) != pytest.approx(2.2)


def test_results_carry_every_table_in_markdown_and_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path)
    sizes = ("sizes", ["runtime", "shrink"], [["ONNX Runtime", "3.57x"]])

    json_path, md_path = report.write_results(
        "demo", "speed", ["runtime", "speed-up"], [["ONNX Runtime", "1.86x"]], {}, more_tables=[sizes]
    )

    text = md_path.read_text()
    assert text.index("## speed") < text.index("## sizes")
    assert "| ONNX Runtime | 3.57x |" in text
    payload = json.loads(json_path.read_text())
    assert payload["rows"] == [["ONNX Runtime", "1.86x"]]
    assert payload["more_tables"] == [
        {"title": "sizes", "columns": ["runtime", "shrink"], "rows": [["ONNX Runtime", "3.57x"]]}
    ]
