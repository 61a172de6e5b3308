"""`python -m data_recipes ...`: argument parsing, exit codes, outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from recipe_fakes import caption_row, write_json

from data_recipes.cli import main, parse_set_args, parse_value

REPO = Path(__file__).resolve().parents[2]


def test_parse_set_args_types_and_nesting():
    params = parse_set_args(["count=100_000", "counts.alpaca=10", "counts.webqa=null", "hub.sharegpt4v=true",
                             "instruction=Describe: the image #1.", "pool=[a, b]", "name=None", "ratio=0.5"])
    assert params == {"count": 100_000, "counts": {"alpaca": 10, "webqa": None}, "hub": {"sharegpt4v": True},
                      "instruction": "Describe: the image #1.", "pool": ["a", "b"], "name": None, "ratio": 0.5}
    assert parse_value("Please generate detailed descriptions of the given image.") == \
        "Please generate detailed descriptions of the given image."
    assert parse_value("/abs/path.json") == "/abs/path.json"
    with pytest.raises(ValueError, match="key=value"):
        parse_set_args(["novalue"])
    with pytest.raises(ValueError, match="already given a value"):
        parse_set_args(["counts=3", "counts.alpaca=1"])


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("croc1.5m", "lcs558k", "llava665k", "llava802k", "llava_json", "synthetic_scenes"):
        assert f"\n{name}: " in f"\n{out}"
    assert "instruction='Please generate detailed descriptions of the given image.'" in out
    assert main(["list", "-v"]) == 0
    assert "ROOT/share-captioner_coco_lcs_sam_1246k_1107.json" in capsys.readouterr().out


def test_build_with_sets_seed_and_report(lcs_root, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["build", "lcs558k", "--data-root", str(lcs_root), "--out", str(out), "--seed", "5", "--set", "count=3",
            "--num-proc", "2", "--no-jsonl"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "lcs558k: kept 3 of 3 rows (0 rejected)" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 5 and summary["params"]["count"] == 3 and summary["num_proc"] == 2
    assert summary["command"] == "python -m data_recipes " + " ".join(argv)
    assert summary["command"] in (out / "README.md").read_text()
    assert not (out / "data.jsonl").exists()
    # Re-running needs --overwrite; a different seed then draws other rows.
    assert main(argv) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv[:6], "--seed", "6", "--set", "count=3", "--overwrite"]) == 0
    assert json.loads((out / "summary.json").read_text())["seed"] == 6


def test_build_strict_exit_code_and_message(tmp_path, capsys):
    root = tmp_path / "data"
    write_json(root / "a.json", [caption_row(1, "missing.jpg", "x")])
    argv = ["build", "llava_json", "--data-root", str(root), "--out", str(tmp_path / "o"), "--set", "annotation=a.json"]
    assert main([*argv, "--strict"]) == 2
    err = capsys.readouterr().err
    assert "strict mode: 1 row(s) rejected (missing_image=1)" in err and err.count("\n") == 1  # one line
    assert main([*argv, "--strict", "--skip-image-check", "--overwrite"]) == 0


def test_a_build_that_reads_no_row_fails_as_one_that_keeps_none(tmp_path, capsys):
    """DATA.md: "a build that keeps no row fails (status 2)". An empty annotation file (`[]`, or an empty .jsonl)
    keeps no row too: status 2 and one line, not "wrote OUT" with status 0 and a build the trainer then cannot read
    (`IndexError: list index out of range`)."""
    root = tmp_path / "data"
    write_json(root / "a.json", [])
    (root / "b.jsonl").write_text("")
    for name in ("a.json", "b.jsonl"):
        out = tmp_path / name
        assert main(["build", "llava_json", "--data-root", str(root), "--out", str(out), "--set", f"annotation={name}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: no rows were read") and err.count("\n") == 1, err
        assert json.loads((out / "summary.json").read_text())["status"] == "failed"
        assert not (out / "dataset_info.json").exists()


def test_build_usage_errors(lcs_root, tmp_path, capsys):
    assert main(["build", "nope", "--data-root", str(lcs_root), "--out", str(tmp_path / "a")]) == 1
    assert "unknown recipe 'nope'" in capsys.readouterr().err
    assert main(["build", "lcs558k", "--data-root", str(lcs_root), "--out", str(tmp_path / "b"),
                 "--set", "annotation=missing.json"]) == 1
    assert "missing.json: no such file" in capsys.readouterr().err
    assert main(["build", "lcs558k", "--data-root", str(lcs_root), "--out", str(tmp_path / "c"),
                 "--set", "cuont=3"]) == 1
    assert "recipe 'lcs558k' has no parameter(s) ['cuont']; it takes: annotation, image_root, count, hub" in \
        capsys.readouterr().err


@pytest.mark.parametrize(("recipe", "setting", "message"), [
    ("lcs558k", "count=1e6", "lcs558k: count must be a whole number >= 0 or null (all rows), got '1e6'"),
    ("lcs558k", "count=3.0", "lcs558k: count must be a whole number >= 0 or null (all rows), got 3.0"),
    ("lcs558k", "count=true", "got True"),
    ("croc1.5m", "counts.alpaca=2.5", "croc1.5m: counts.alpaca: count must be a whole number >= 0"),
    ("croc1.5m", "counts=5", "counts: expected one value per source (--set counts.NAME=VALUE), got 5"),
    ("croc1.5m", "hub=true", "hub: expected one value per source (--set hub.NAME=VALUE), got True"),
    ("llava802k", "paths=x.json", "paths: expected one value per source (--set paths.NAME=VALUE), got 'x.json'"),
])
def test_bad_counts_and_per_source_values_fail_in_one_line_before_any_source_is_read(recipe, setting, message,
                                                                                      tmp_path, capsys):
    # The data root is empty: a check after reading would say "no such file" instead.
    assert main(["build", recipe, "--data-root", str(tmp_path), "--out", str(tmp_path / "out"), "--set", setting]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_synth_command(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "s"), "--num-images", "5", "--seed", "2", "--image-size", "32"]) == 0
    assert "images=5" in capsys.readouterr().out
    assert len(list((tmp_path / "s" / "images").glob("*.png"))) == 5


def test_synth_takes_the_home_folder_and_fails_in_one_line(tmp_path, monkeypatch, capsys):
    """RELIABILITY.md: `~` in a folder option means the home folder everywhere, and a mistake is one line. Before:
    `synth --out '~/s'` wrote ./~/s, and --num-images 0, a --test-fraction of 2 or an --out that is a file ended in
    a traceback."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert main(["synth", "--out", "~/s", "--num-images", "2", "--image-size", "16"]) == 0
    assert len(list((tmp_path / "home" / "s" / "images").glob("*.png"))) == 2 and not (tmp_path / "~").exists()
    capsys.readouterr()
    (tmp_path / "a_file").write_text("mine")
    for argv, message in ((["--num-images", "0"], "num_images must be >= 1"),
                          (["--test-fraction", "2"], "test_fraction must be in [0, 1), got 2.0"),
                          (["--out", "a_file"], "Not a directory")):
        assert main(["synth", "--out", "bad", "--image-size", "16", *argv]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert (tmp_path / "a_file").read_text() == "mine"


def test_a_home_folder_of_no_user_is_one_line(tmp_path, capsys):
    """As convert and merge_lora: before, `synth --out '~nosuchuser/s'` (and build's --data-root, --out) ended in
    pathlib's RuntimeError traceback."""
    for argv in (["synth", "--out", "~no-such-user-croc/s", "--num-images", "2", "--image-size", "16"],
                 ["build", "llava_json", "--data-root", "~no-such-user-croc/d", "--out", str(tmp_path / "o")],
                 ["build", "llava_json", "--data-root", str(tmp_path), "--out", "~no-such-user-croc/o"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ~no-such-user-croc/") and "home folder of no user" in err \
            and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_module_entry_point_runs_in_a_subprocess():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "data_recipes", "list"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "croc1.5m: Stage 1.5" in proc.stdout


def test_a_mixture_names_every_missing_source_at_once_before_reading_any(croc_root, tmp_path, capsys):
    """croc1.5m stopped at its first missing source after reading those before it; a user downloading nine sets
    learnt of each missing one a build at a time."""
    root = tmp_path / "root"
    (root / "text").mkdir(parents=True)
    for kept in ("MathInstruct", "alpaca", "databricks-dolly-15k"):
        os.symlink(croc_root / "text" / kept, root / "text" / kept)
    assert main(["build", "croc1.5m", "--data-root", str(root), "--out", str(tmp_path / "out"),
                 "--set", "counts.belle=0"]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: 5 of 8 sources are not under {root}: sharegpt4v (share-captioner_coco_lcs_sam_1246k_1107."
                   "json), open_platypus (text/Open-Platypus), code_alpaca (text/CodeAlpaca-20k/code_alpaca_20k.json), "
                   "firefly (text/firefly-train-1.1M/firefly-train-1.1M.jsonl), webqa (text/webqa/train.json); "
                   "download them (docs/DATA.md), point at them with --set paths.NAME=PATH, or leave one out with "
                   "--set counts.NAME=0\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["build", "synth"])
def test_help_states_the_default_of_every_option_that_has_one(command, capsys):
    """`build --help` said `--num-proc NUM_PROC  processes for the image checks`, not how many it runs without it."""
    import argparse

    from data_recipes.cli import _parser

    sub = next(action for action in _parser()._actions if isinstance(action, argparse._SubParsersAction))
    parser = sub.choices[command]
    missing = [action.option_strings[0] for action in parser._actions if action.option_strings
               and action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in (action.help or "")]
    assert not missing, f"{command} options whose help states no default: {missing}"
    with pytest.raises(SystemExit):
        main([command, "--help"])
    if command == "build":
        assert "processes for the image checks (default 1)" in " ".join(capsys.readouterr().out.split())
