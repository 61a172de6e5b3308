"""Smoke tests of the benchmarks: the attention benchmark end to end on a tiny model, and the runner's renderer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import bench_attention
from benchmarks.__main__ import Run, render_results_md
from benchmarks.rendering import format_cell, markdown_table, render_result


@pytest.fixture(scope="module")
def attention_result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "attention.json"
    threads = torch.get_num_threads()
    assert bench_attention.main(["--quick", "--tiny", "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads  # the benchmark restores the thread count it changed
    return json.loads(out.read_text())


def test_attention_json_structure(attention_result: dict) -> None:
    result = attention_result
    assert result["mask_equivalence"]["held"] is True
    assert {"image/sdpa", "image/eager", "prompt/sdpa", "prompt/eager", "prompt/loop_token"} <= set(
        result["mask_equivalence"]["compared_to_loop_element"]
    )
    assert isinstance(result["title"], str) and isinstance(result["goal"], str)
    assert all(isinstance(note, str) for note in result["notes"])

    rows = result["rows"]
    measured = [row for row in rows if row["mixed_ms"] is not None]
    assert {(row["backend"], row["tokens"]) for row in measured} == {
        (backend, length) for backend in ("eager", "sdpa", "croc_split") for length in (256, 512)
    }
    for row in measured:
        for key in ("mixed_ms", "causal_default_ms", "causal_materialised_ms"):
            assert row[key] > 0
        assert row["ratio_vs_default"] == pytest.approx(row["mixed_ms"] / row["causal_default_ms"])
        assert row["ratio_vs_materialised"] == pytest.approx(row["mixed_ms"] / row["causal_materialised_ms"])
        assert 0 <= row["mixed_build_ms"] < row["mixed_ms"]
        assert 0 <= row["materialised_build_ms"] < row["causal_materialised_ms"]
        assert row["ratio_vs_materialised_excl_build"] > 0
        assert row["reps"] == 2
        if row["mixed_peak_mb"] is not None:  # Linux with /proc: measured in forked children
            assert row["mixed_peak_mb"] > 0
    (flex,) = [row for row in rows if row["backend"] == "flex_attention"]
    assert flex["mixed_ms"] is None and "no CPU backward" in flex["note"]

    (mask_table,) = result["tables"]
    assert {(row["tokens"], row["span"]) for row in mask_table["rows"]} == {
        (length, span) for length in (256, 512) for span in ("image", "prompt")
    }
    for row in mask_table["rows"]:
        assert row["ours_sdpa_ms"] > 0 and row["ours_eager_ms"] > 0 and row["loop_element_ms"] > 0
        assert row["loop_element_iterations"] == row["block_tokens"] ** 2
    # Our Python work does not grow with the length: same call count at 256 and 512 tokens.
    for span in ("image", "prompt"):
        counts = {row["ours_python_calls"] for row in mask_table["rows"] if row["span"] == span}
        assert len(counts) == 1


def test_reference_loop_matches_ours_on_multi_image_padded_batch() -> None:
    summary = bench_attention.check_mask_equivalence(length=64)
    assert summary["held"] is True


def test_format_cell() -> None:
    assert format_cell(None) == "—"
    assert format_cell(True) == "yes"
    assert format_cell(1.23456) == "1.23"
    assert format_cell(0.000123456) == "0.000123"
    assert format_cell(12345.6) == "12,346"
    assert format_cell(7) == "7"
    assert format_cell("a|b\nc") == "a\\|b c"


def test_render_convention_json() -> None:
    fake = {
        "title": "Fake benchmark",
        "goal": "ratio <= 1.10",
        "rows": [{"backend": "sdpa", "tokens": 1024, "ratio": 1.0449}, {"backend": "eager", "extra": None}],
        "notes": ["a note", ""],
        "tables": [{"title": "Second table", "goal": None, "rows": [{"x": 2.5}], "notes": []}],
    }
    text = render_result(fake)
    lines = text.splitlines()
    assert "### Fake benchmark" in lines
    assert "Goal: ratio <= 1.10" in lines
    assert "| backend | tokens | ratio | extra |" in lines
    assert "| sdpa | 1024 | 1.04 | — |" in lines
    assert "| eager | — | — | — |" in lines
    assert "- a note" in lines and "- " not in lines  # empty notes dropped
    assert "### Second table" in lines and "| 2.5 |" in lines
    assert text.index("Fake benchmark") < text.index("Second table")


def test_render_generic_json() -> None:
    other = {
        "benchmark": "other",
        "quick": False,
        "machine": {"cpu": "x"},
        "results": [{"case": "a", "rows_per_s": 1234.5}, {"case": "b", "rows_per_s": 0.5}],
    }
    lines = render_result(other, "other").splitlines()
    assert "### other" in lines
    assert "- quick: no" in lines
    assert "| case | rows_per_s |" in lines
    assert "| a | 1,234 |" in lines or "| a | 1,235 |" in lines
    assert "| b | 0.5 |" in lines
    assert not any("cpu" in line for line in lines)  # machine info has its own section in RESULTS.md
    own = render_result({"benchmark": "mine", "markdown": "| a |\n|---|\n| 1 |\n", "results": []})
    assert "| a |" in own.splitlines()


def test_markdown_table_columns_in_first_seen_order() -> None:
    table = markdown_table([{"a": 1}, {"b": 2, "a": 3}])
    assert table.splitlines()[:2] == ["| a | b |", "|---|---|"]
    assert markdown_table([]) == "_(no rows)_\n"


def test_results_md(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"title": "Good", "goal": None, "rows": [{"v": 1}], "notes": []}))
    text = render_results_md(
        [Run("good", "ok (1 s)", good), Run("missing", "not present", tmp_path / "missing.json")],
        {"CPU": "test cpu", "cores available": 2},
    )
    assert "| CPU | test cpu |" in text
    assert "| good | ok (1 s) |" in text and "| missing | not present |" in text
    assert "## good" in text and "### Good" in text and "## missing" not in text
    assert "## GPU section" in text


def test_attention_options_the_gpu_check_uses(tmp_path: Path) -> None:
    # The GPU check's attention step: chosen lengths and backends, no mask-building table; flex's cross-backend
    # ratio (against sdpa's is_causal path) is filled from the sdpa row of the same length.
    out = tmp_path / "attention.json"
    assert bench_attention.main(["--tiny", "--lengths", "256", "--backends", "sdpa", "--reps", "1",
                                 "--no-mask-building", "--no-memory", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(row["backend"], row["tokens"], row["reps"]) for row in result["rows"]] == [("sdpa", 256, 1)]
    assert result["tables"] == []
    rows = [{"backend": "sdpa", "tokens": 2048, "causal_default_ms": 4.0, "mixed_ms": 6.0},
            {"backend": "flex_attention", "tokens": 2048, "causal_default_ms": 3.0, "mixed_ms": 5.0}]
    bench_attention.add_ratio_to_sdpa_is_causal(rows)
    assert rows[1]["ratio_vs_sdpa_is_causal"] == pytest.approx(1.25) and "ratio_vs_sdpa_is_causal" not in rows[0]


def test_packing_benchmark_accounts_padding_against_the_collator(tmp_path: Path) -> None:
    from benchmarks import bench_packing

    out = tmp_path / "packing.json"
    assert bench_packing.main(["--tiny", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    by_layout = {(row["stage"], row["layout"]): row for row in result["rows"]}
    for stage in ("1", "1.5", "2"):
        padded = by_layout[(stage, "padded")]
        one_row = by_layout[(stage, "packed, budget: one row")]
        # One row holds exactly the real tokens; packing never processes more tokens than padding.
        assert one_row["tokens / real token"] == pytest.approx(1.0) and one_row["rows / micro-batch"] == 1
        assert one_row["padding avoided"] == pytest.approx(padded["padding share"])
        assert by_layout[(stage, "packed, budget: longest sample")]["tokens / real token"] <= padded[
            "tokens / real token"]
    timing = result["tables"][0]["rows"]
    assert {row["layout"] for row in timing} == {"padded", "packed", "packed, fixed budget"}
    assert all(row["ms / 1K real tokens"] > 0 for row in timing)
    sources = result["tables"][1]["rows"]
    assert {row["stage"] for row in sources} == {"1", "1.5", "2"} and all(row["origin"] for row in sources)


def test_gpu_check_plan_is_consistent_without_a_gpu() -> None:
    """`bash benchmarks/gpu_check.sh --dry-run` on this CPU machine: the script parses, picks an interpreter without
    installing anything, and every option the GPU steps pass is one their scripts take; the CUDA tests exist."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    script = repo / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    result = subprocess.run(["bash", str(script), "--dry-run"], cwd=repo, capture_output=True, text=True,
                            env=dict(os.environ, CROC_PYTHON=sys.executable), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"python: {sys.executable} (ready)" in result.stderr
    assert "dry run: plan consistent" in result.stdout
    assert "test_flex_attention_matches_sdpa_on_cuda" in result.stdout
