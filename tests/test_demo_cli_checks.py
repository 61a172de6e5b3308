"""A bad option of `python -m demo` fails before any work, in one line naming the option, with no traceback: the
cases a hostile tester found ending in a traceback after the scenes were built (`--threads -1`, `--run-seeds` outside
the seeds), or as a traceback carrying a good message (`--report-only` on a folder holding no run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from demo.__main__ import parse_args


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one-line message of an argparse usage error (exit status 2) for `argv`."""
    with pytest.raises(SystemExit) as stopped:
        parse_args(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("threads", ["-1", "0"])
def test_threads_below_one_is_a_usage_error(threads: str, tmp_path: Path, capsys) -> None:
    """torch.set_num_threads refused them with a traceback 18 s in; 0 means no "all cores" here (the thread count is
    fixed for reproducible numbers)."""
    message = _usage_error(["--threads", threads, "--out", str(tmp_path / "out"), "--quick"], capsys)
    assert message.endswith(f"error: --threads must be >= 1, got {threads}")
    assert not (tmp_path / "out").exists()


def test_run_seeds_outside_the_seeds_is_a_usage_error(tmp_path: Path, capsys) -> None:
    message = _usage_error(["--seeds", "1", "--run-seeds", "5", "--out", str(tmp_path / "out"), "--quick"], capsys)
    assert message.endswith("error: --run-seeds 5 is not one of the seeds 0..0 (--seed 0 --seeds 1)")
    # The seeds run from --seed: with --seed 3 --seeds 2 they are 3 and 4.
    assert parse_args(["--seed", "3", "--seeds", "2", "--run-seeds", "4", "3"]).run_seeds == [4, 3]
    message = _usage_error(["--seed", "3", "--seeds", "2", "--run-seeds", "3", "1"], capsys)
    assert message.endswith("error: --run-seeds 1 is not one of the seeds 3..4 (--seed 3 --seeds 2)")


def test_report_only_on_a_missing_folder_is_a_usage_error(tmp_path: Path, capsys) -> None:
    """The run made the folder, then found it empty."""
    message = _usage_error(["--report-only", "--out", str(tmp_path / "typo"), "--quick"], capsys)
    assert "--report-only: --out" in message and "is not a folder" in message
    assert not (tmp_path / "typo").exists()


def test_report_only_on_a_folder_without_demo_data_is_one_line(tmp_path: Path, capsys) -> None:
    """`FileNotFoundError: --report-only: no demo data in .../scenes` was a traceback."""
    pytest.importorskip("matplotlib", reason="the demo's figures need the `demo` extra")
    from demo.__main__ import main

    assert main(["--report-only", "--out", str(tmp_path), "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m demo: error: --report-only: no demo data in "), err
    assert not (tmp_path / "report").exists()


def test_report_only_without_the_trained_seeds_is_one_line(tmp_path: Path, capsys) -> None:
    """The demo data is there, but no process trained seed 0: the read of its stage-0 summary was a traceback."""
    pytest.importorskip("matplotlib", reason="the demo's figures need the `demo` extra")
    from demo import pipeline
    from demo.__main__ import main
    from demo.settings import QUICK

    scenes = tmp_path / pipeline.SCENES_DIR
    scenes.mkdir()
    for name in ("qa_train.json", *pipeline.SPLIT_FILES.values()):
        (scenes / name).write_text("[]\n", encoding="utf-8")
    (scenes / "demo_data.json").write_text(
        json.dumps({"made_by": {"settings": QUICK.name, "seed": 0}, "counts": {}}), encoding="utf-8")
    assert main(["--report-only", "--out", str(tmp_path), "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m demo: error: seed 0 has not been trained"), err
    assert "--run-seeds 0" in err and not (tmp_path / "report").exists()
