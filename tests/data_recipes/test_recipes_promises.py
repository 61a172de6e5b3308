"""Broken promises of the recipe builder (from a hostile tester), each made to happen on purpose: a caption prompt
written as the text of a list that did not parse, hidden files read as rows, a whole source lost under status ok,
list answers trained as their Python repr, `~` in a path parameter, a Hub source offline (read from the cache, or one line), an extracted image cut
short by a full disk, and the CLI's own argument checks. Every one ends in one line (before any source is read where it can
be), in a counted reject, or in a one-line failed build."""

from __future__ import annotations

import errno
import io
import json
import pathlib
import shutil
from pathlib import Path

import datasets
import huggingface_hub
import pytest
from PIL import Image
from recipe_fakes import caption_row, write_image, write_json, write_parquet

from data_recipes import build_recipe, text_sources
from data_recipes import cli as cli_module
from data_recipes import parts as parts_module
from data_recipes.cli import main, parse_set_args
from data_recipes.io import read_records
from data_recipes.schema import PROBLEM_COLUMN

TEXT_ONLY_ALPACA = ["--set", "counts.mathinstruct=0", "--set", "counts.belle=0", "--set", "counts.open_platypus=0",
                    "--set", "counts.code_alpaca=0", "--set", "counts.firefly=0", "--set", "counts.webqa=0",
                    "--set", "counts.dolly=0"]
ALPACA = [{"instruction": f"Q{i}", "input": "", "output": f"A{i}"} for i in range(4)]


def _croc_root(root: Path, *, captions: int = 3, alpaca: list[dict] | None = None, images: bool = True) -> Path:
    """A croc1.5m data root holding ShareGPT4V captions and alpaca only (the other text sets left out by
    TEXT_ONLY_ALPACA)."""
    rows = []
    for i in range(captions):
        image = f"coco/train2017/{i:012d}.jpg"
        if images:
            write_image(root / image, (10 * i, 0, 0))
        rows.append(caption_row(f"c{i}", image, f"caption {i}"))
    write_json(root / "share-captioner_coco_lcs_sam_1246k_1107.json", rows)
    write_parquet(root / "text" / "alpaca" / "data" / "train-00000-of-00001.parquet", alpaca or ALPACA)
    return root


def _build(root: Path, out: Path, *more: str) -> int:
    return main(["build", "croc1.5m", "--data-root", str(root), "--out", str(out), *TEXT_ONLY_ALPACA, *more])


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err), err
    return err[-1]


def _no_source_read(monkeypatch) -> None:
    def read(*args, **kwargs):
        raise AssertionError("a source was read")

    monkeypatch.setattr(parts_module, "read_records", read)


# --- 1. the caption instruction -----------------------------------------------------------------------------------

@pytest.mark.parametrize("value,words", [
    ("[What is in the image?, Describe the image in detail.]", "does not parse as a YAML list"),
    ("[Describe: the image, Say what you see]", "non-empty list of non-empty texts"),  # an item read as a mapping
    ("42", "non-empty text"),
    ("true", "non-empty text"),
    ("[]", "non-empty text"),
    ("[Describe it., '']", "non-empty text"),
    ("<image>\nDescribe it.", "holds <image>"),
])
def test_an_instruction_that_is_no_prompt_is_one_line_before_any_source_is_read(tmp_path, monkeypatch, capsys,
                                                                                 value, words):
    _no_source_read(monkeypatch)
    assert _build(_croc_root(tmp_path / "root"), tmp_path / "out", "--set", f"instruction={value}") == 1
    line = _one_line(capsys)
    assert "instruction" in line and words in line
    assert not (tmp_path / "out").exists()


def test_a_quoted_instruction_pool_is_a_pool(tmp_path, capsys):
    assert parse_set_args(['instruction=["What is in the image?", Describe it.]']) == \
        {"instruction": ["What is in the image?", "Describe it."]}
    assert _build(_croc_root(tmp_path / "root", captions=6), tmp_path / "out", "--set", "counts.alpaca=0", "--set",
                  'instruction=["What is in the image?", Describe it.]') == 0
    prompts = {json.loads(line)["conversations"][0]["value"] for line in (tmp_path / "out" / "data.jsonl").open()}
    assert prompts <= {"<image>\nWhat is in the image?", "<image>\nDescribe it."} and prompts
    # Text that only opens with a bracket is a prompt, as before, not a list that did not parse.
    assert parse_set_args(["instruction=[Detailed] Describe the image."]) == {
        "instruction": "[Detailed] Describe the image."}


# --- 2. hidden files in a text-source folder ----------------------------------------------------------------------

def test_hidden_files_and_folders_of_a_source_folder_are_not_read(tmp_path):
    folder = tmp_path / "alpaca"
    write_parquet(folder / "data" / "train-00000-of-00001.parquet", ALPACA)
    write_json(folder / ".ipynb_checkpoints" / "alpaca-checkpoint.json", ALPACA)  # a copy of the rows
    (folder / "data" / "._train-00000-of-00001.parquet").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    assert read_records(folder) == ALPACA
    # The folder given may itself sit under a hidden one: only what is hidden inside it is left out.
    hidden_parent = tmp_path / ".cache" / "alpaca"
    write_parquet(hidden_parent / "train.parquet", ALPACA)
    assert read_records(hidden_parent) == ALPACA


# --- 3. a whole source lost -----------------------------------------------------------------------------------------

def test_a_source_that_keeps_none_of_its_rows_fails_the_build(tmp_path, capsys):
    """The caption images not unpacked: every ShareGPT4V row rejected as missing_image, the text rows kept. Status ok
    trained stage 1.5 on text only."""
    root = _croc_root(tmp_path / "root", images=False)
    out = tmp_path / "out"
    assert _build(root, out) == 2
    line = _one_line(capsys)
    assert "source sharegpt4v kept none of its 3 rows (missing_image: 3)" in line
    assert str(out / "rejects.jsonl") in line
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"
    assert not (out / "data.jsonl").exists()


def test_the_corrected_command_after_a_failed_build_replaces_it_without_overwrite(tmp_path, capsys):
    """The images not unpacked, then unpacked: the rerun was refused ("not empty; pass overwrite=True (--overwrite)")
    over a folder holding only the failed build's summary and rejects. A finished build still needs --overwrite."""
    root = _croc_root(tmp_path / "root", images=False)
    out = tmp_path / "out"
    assert _build(root, out) == 2
    capsys.readouterr()
    _croc_root(root)  # the images unpacked
    assert _build(root, out) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["rows"]["dropped"] == 0
    assert not (out / "rejects.jsonl").read_text().strip()
    capsys.readouterr()
    assert _build(root, out) == 1  # a usage error
    assert _one_line(capsys).endswith(f"{out} is not empty; pass --overwrite (overwrite=True from Python) to replace "
                                      "the build there")


def test_an_absolute_image_dir_is_refused_before_any_source_is_read(tmp_path, monkeypatch):
    _no_source_read(monkeypatch)
    with pytest.raises(ValueError, match="image_dirs.docvqa=/other/disk/docvqa: must be a folder relative to"):
        build_recipe("llava802k", tmp_path, tmp_path / "out", params={"image_dirs": {"docvqa": "/other/disk/docvqa"}})


# --- 4. list and mapping fields of text rows -------------------------------------------------------------------------

def test_text_rows_with_a_list_or_mapping_field_are_rejected_as_malformed(tmp_path, capsys):
    root = tmp_path / "root"
    write_json(root / "text" / "alpaca" / "rows.json",
               [*ALPACA, {"instruction": "Colours?", "input": "", "output": ["red", "blue"]},
                {"instruction": "Keys?", "input": {"k": 1}, "output": "k"}])
    out = tmp_path / "out"
    assert main(["build", "croc1.5m", "--data-root", str(root), "--out", str(out), *TEXT_ONLY_ALPACA,
                 "--set", "counts.sharegpt4v=0", "--set", "paths.alpaca=text/alpaca/rows.json"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == {"read": 6, "kept": 4, "dropped": 2}
    assert summary["dropped_by_reason"]["malformed_row"] == 2
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").open()]
    assert sorted(r["reason"] for r in rejects) == ["malformed_row", "malformed_row"]
    assert "['red', 'blue']" not in (out / "data.jsonl").read_text()


def test_a_registered_converter_may_read_a_list_field_itself(monkeypatch):
    """The malformed_row rule is the built-in converters' own: a source registered with a converter that takes the
    first of several accepted answers keeps its rows (checking every record's fields rejected them all)."""
    monkeypatch.setitem(text_sources.TEXT_CONVERTERS, "answers", lambda record: [
        {"from": "human", "value": record["question"]}, {"from": "gpt", "value": record["output"][0]}])
    row = text_sources.text_record_to_row({"question": "Who?", "output": ["Author 0", "A. 0"]}, source="answers",
                                          index=0)
    assert PROBLEM_COLUMN not in row and row["conversations"][1]["value"] == "Author 0"
    row = text_sources.text_record_to_row({"instruction": "Colours?", "input": "", "output": ["red", "blue"]},
                                          source="alpaca", index=1)
    assert row[PROBLEM_COLUMN].startswith("malformed_row: 'output' is list ['red', 'blue']")


# --- 5. `~` in path parameters -------------------------------------------------------------------------------------

def test_home_in_path_parameters_is_the_home_folder(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    write_image(home / "imgs" / "a.jpg")
    write_json(home / "rows.json", [caption_row("a", "a.jpg", "a caption")])
    root = tmp_path / "root"
    root.mkdir()
    result = build_recipe("llava_json", root, tmp_path / "out",
                          params={"annotation": "~/rows.json", "image_root": "~/imgs"})
    assert result.summary["rows"]["kept"] == 1
    assert result.summary["image_root"] == str(home / "imgs")
    write_parquet(home / "alpaca" / "train.parquet", ALPACA)
    result = build_recipe("croc1.5m", root, tmp_path / "out2", params={
        "counts": {name: 0 for name in ("sharegpt4v", "mathinstruct", "belle", "open_platypus", "code_alpaca",
                                        "firefly", "webqa", "dolly")}, "paths": {"alpaca": "~/alpaca"}})
    assert result.summary["sources"]["alpaca"]["origin"] == str(home / "alpaca")


# --- 6. a Hub source offline ---------------------------------------------------------------------------------------

def _offline_with_a_cache(monkeypatch, cache: Path) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache / "datasets")


@pytest.mark.parametrize("setting,source", [("hub.alpaca=true", "tatsu-lab/alpaca"),
                                            ("hub.sharegpt4v=someone/copy", "someone/copy/share-captioner")])
def test_a_hub_source_offline_and_not_in_the_cache_is_one_line(tmp_path, monkeypatch, capsys, setting, source):
    """A traceback from huggingface_hub or datasets, after the other sources had been read."""
    _offline_with_a_cache(monkeypatch, tmp_path / "cache")
    assert _build(_croc_root(tmp_path / "root"), tmp_path / "out", "--set", setting) == 1
    line = _one_line(capsys)
    assert line.startswith(f"error: Hub source {source}") and "is not in the Hugging Face cache" in line, line


def test_a_hub_file_in_the_cache_builds_offline(tmp_path, monkeypatch, capsys):
    """Downloaded on a login node, built on an offline compute node: the cached file is read, as huggingface_hub
    reads it offline (refusing every Hub source offline refused this build)."""
    cache = tmp_path / "cache"
    _offline_with_a_cache(monkeypatch, cache)
    repo = cache / "datasets--someone--copy"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    root = _croc_root(tmp_path / "root")
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    shutil.copy(root / "share-captioner_coco_lcs_sam_1246k_1107.json", snapshot)
    (root / "share-captioner_coco_lcs_sam_1246k_1107.json").unlink()  # only the cache holds it
    assert _build(root, tmp_path / "out", "--set", "hub.sharegpt4v=someone/copy") == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["sources"]["sharegpt4v"]["kept"] == 3


# --- 7. an extracted image on a full disk --------------------------------------------------------------------------

def _recap_root(root: Path) -> Path:
    rows = []
    for i in range(2):
        buffer = io.BytesIO()
        Image.new("RGB", (6, 4), (90 * i, 90, 200)).save(buffer, format="JPEG")
        rows.append({"id": f"GCC_{i}", "image": {"bytes": buffer.getvalue(), "path": f"{i}.jpg"},
                     "conversations": [{"from": "human", "value": "<image>\nWhat is this?"},
                                       {"from": "gpt", "value": f"caption {i}"}]})
    write_parquet(root / "data" / "train-00000-of-00001.parquet", rows)
    return root


def test_an_image_cut_short_by_a_full_disk_is_one_line_and_left_to_the_rerun(tmp_path, monkeypatch, capsys):
    root = _recap_root(tmp_path / "root")
    write_bytes = pathlib.Path.write_bytes

    def half_then_full(self, data):
        write_bytes(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    argv = ["build", "recap_cc3m", "--data-root", str(root), "--out", str(tmp_path / "out")]
    monkeypatch.setattr(pathlib.Path, "write_bytes", half_then_full)
    assert main(argv) == 1
    line = _one_line(capsys)
    assert "could not write the image" in line and "No space left on device" in line
    assert list((root / "images").iterdir()) == []  # nothing half-written, under its name or a temporary one
    monkeypatch.undo()
    assert main(argv) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rows"]["kept"] == 2


# --- 8. the CLI's own arguments ------------------------------------------------------------------------------------

@pytest.mark.parametrize("option,value", [("--num-proc", "0"), ("--num-proc", "-2"), ("--seed", "-1")])
def test_a_bad_number_option_is_refused_by_the_parser_naming_it(tmp_path, monkeypatch, capsys, option, value):
    _no_source_read(monkeypatch)
    with pytest.raises(SystemExit) as stopped:
        _build(_croc_root(tmp_path / "root"), tmp_path / "out", option, value)
    assert stopped.value.code == 2
    assert f"argument {option}: expected a whole number" in capsys.readouterr().err


def test_an_out_name_too_long_is_one_line(tmp_path, capsys):
    assert _build(_croc_root(tmp_path / "root"), tmp_path / ("x" * 300)) == 1
    assert "longer than a file system takes" in _one_line(capsys)


def test_ctrl_c_during_a_build_is_one_line_with_status_130(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_module, "build_recipe", interrupted)
    try:
        status = _build(_croc_root(tmp_path / "root"), tmp_path / "out")
    except KeyboardInterrupt:  # escaping, it would stop the whole test session
        pytest.fail("Ctrl-C left the command as a traceback")
    assert status == 130
    assert _one_line(capsys).startswith("error: interrupted; --out ")


# --- 9. a failed rebuild over a good build -------------------------------------------------------------------------

def test_a_failed_overwrite_leaves_the_previous_build_as_it_was(tmp_path, capsys):
    """`--overwrite --strict` with one bad row, then with the image mount missing: the good build stays whole (the
    trainer found only rejects.jsonl and summary.json there); the attempt's rejects are named and kept beside it."""
    root = _croc_root(tmp_path / "root")
    out = tmp_path / "out"
    assert _build(root, out) == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    capsys.readouterr()
    write_json(root / "share-captioner_coco_lcs_sam_1246k_1107.json",
               [caption_row("c0", "coco/train2017/000000000000.jpg", "caption 0"), caption_row("bad", None, "x")])
    for more in (["--strict"], []):
        assert _build(root, out, "--overwrite", *more) == 2
        line = _one_line(capsys)
        assert f"the previous build in {out} is unchanged" in line
        staging = Path(line.split("rejected rows with their reasons: ")[1].split()[0])
        assert staging.parent.parent == out
        assert "bad" in [json.loads(row)["id"] for row in staging.read_text().splitlines()]
        assert {path.name: path.read_bytes() for path in out.iterdir() if path != staging.parent} == before
        if more:  # the second round: every caption row missing_image
            shutil.rmtree(root / "coco")
    write_image(root / "coco" / "train2017" / "000000000000.jpg")
    write_json(root / "share-captioner_coco_lcs_sam_1246k_1107.json",
               [caption_row("c0", "coco/train2017/000000000000.jpg", "caption 0")])
    assert _build(root, out, "--overwrite") == 0
    assert sorted(path.name for path in out.iterdir() if path.name.startswith(".")) == []
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["rows"]["kept"] == 1 + len(ALPACA)
    assert len(datasets.load_from_disk(str(out))) == 1 + len(ALPACA)
