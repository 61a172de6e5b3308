"""The tools beside the trainer on a full disk (from a hostile tester): `python -m data_recipes build`, `python -m
croc_testing tiny-model`, `python -m modeling_croc.convert to-llava` and `python -m trainer.merge_lora` printed a
traceback (OSError, safetensors' SafetensorError, tokenizers' plain Exception); `synth` and `tiny-model` left a
half-written folder that their own rerun refused as not theirs. Each is now one line naming what could not be written
and what is left, and the rerun of the same command (space freed) works. A merge from an adapter folder whose
processor a full disk cut short (tokenizer.json cut, no processor_config.json) wrote a model with no tokenizer, exit 0.

The full disk is faked by making the writer raise what it raises then."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import test_faults_merge_lora as merge_cases
import transformers
from publish_cases import snapshot
from safetensors import SafetensorError
from test_faults_merge_lora import _copy, _merge_error, _nothing_written
from transformers import PreTrainedModel

from croc_testing import __main__ as croc_testing_cli
from data_recipes import build as build_module
from data_recipes import synthetic_scenes
from data_recipes.cli import main as data_recipes_main
from modeling_croc.convert.__main__ import main as convert_main

lora_run = merge_cases.lora_run  # the adapter folder of a LoRA run, as the merge tests make it

FULL = "No space left on device"
# What each writer raises on a full disk, and the words of it the message keeps.
ERRORS = {
    "safetensors": (lambda: SafetensorError(f"Error while serializing: I/O error: {FULL} (os error 28)"),
                    f"Error while serializing: I/O error: {FULL} (os error 28)"),
    "tokenizers": (lambda: Exception(f"{FULL} (os error 28)"), f"{FULL} (os error 28)"),
    "oserror": (lambda: OSError(errno.ENOSPC, FULL), FULL),
}


def _fail_after_save(monkeypatch, cls, make) -> None:
    """`cls.save_pretrained` writes its files, then fails as a full disk does (`make()`)."""
    save = cls.save_pretrained

    def save_then_fail(self, folder, *args, **kwargs):
        save(self, folder, *args, **kwargs)
        raise make()

    monkeypatch.setattr(cls, "save_pretrained", save_then_fail)


def _entries(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def _last_line(capsys) -> str:
    """The line a command's failure ended with (the progress bars go to stderr before it)."""
    return capsys.readouterr().err.strip().splitlines()[-1]


def _one_line_exit(call) -> str:
    with pytest.raises(SystemExit) as stop:
        call()
    message = str(stop.value.code)
    assert "\n" not in message, message
    return message


# ---- merge_lora ------------------------------------------------------------------------------------------------


def test_a_merge_from_an_adapter_folder_whose_tokenizer_was_cut_and_processor_config_lost_is_refused(lora_run,
                                                                                                     tmp_path):
    """tokenizer_config.json there, tokenizer.json cut short, no processor_config.json: `load_processor` took the
    folder for a weights-only one and the merge wrote a model without tokenizer, exit 0."""
    run = _copy(lora_run, tmp_path)
    os.truncate(run / "tokenizer.json", (run / "tokenizer.json").stat().st_size // 2)
    (run / "processor_config.json").unlink()
    before = sorted((p.relative_to(run).as_posix(), p.stat().st_size) for p in run.rglob("*") if p.is_file())
    message = _merge_error([str(run), "--out", str(tmp_path / "merged")])
    assert message.startswith(f"merge error: {run}: its processor (tokenizer_config.json, tokenizer.json"), message
    assert "does not load: " in message and message.endswith("; not merged, nothing was written"), message
    _nothing_written(tmp_path, run, before)


@pytest.mark.parametrize("writer", ["model", "processor"])
def test_a_merge_on_a_full_disk_is_one_line_and_leaves_nothing(lora_run, tmp_path, monkeypatch, writer):
    """The merged weights (SafetensorError) or the tokenizer (tokenizers' plain Exception) failing to write was a
    traceback; the staging folder was removed, as it still is."""
    run = _copy(lora_run, tmp_path)
    before = sorted((p.relative_to(run).as_posix(), p.stat().st_size) for p in run.rglob("*") if p.is_file())
    make, words = ERRORS["safetensors" if writer == "model" else "tokenizers"]
    _fail_after_save(monkeypatch, PreTrainedModel if writer == "model" else transformers.ProcessorMixin, make)
    out = tmp_path / "merged"
    assert _merge_error([str(run), "--out", str(out)]) == (
        f"merge error: could not write the merged model to {out}: {words}; nothing was written to {out} (the partial "
        "copy beside it was removed): free space there and rerun the same command")
    _nothing_written(tmp_path, run, before)


# ---- convert to-llava ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("error", sorted(ERRORS))
def test_a_conversion_on_a_full_disk_is_one_line_and_leaves_no_out(tiny_model, tmp_path, monkeypatch, error):
    make, words = ERRORS[error]
    _fail_after_save(monkeypatch, transformers.ProcessorMixin if error == "tokenizers" else PreTrainedModel, make)
    out = tmp_path / "plain"
    message = _one_line_exit(lambda: convert_main(["to-llava", str(tiny_model), str(out)]))
    assert message == (f"convert error: could not write OUT {out}: {words}; nothing was written to OUT, which is as it "
                       "was (the partial copy beside it was removed): free space there and rerun the same command")
    assert list(tmp_path.iterdir()) == []


# ---- croc_testing tiny-model -----------------------------------------------------------------------------------


@pytest.mark.parametrize("error", ["safetensors", "tokenizers"])
def test_a_tiny_model_on_a_full_disk_is_one_line_and_its_rerun_writes_it(tmp_path, monkeypatch, error):
    """The weights written, the tokenizer not (or the weights cut short): a traceback, and the folder left, with
    files and without the command's marker, was refused by the rerun as not written by it."""
    make, words = ERRORS[error]
    save = croc_testing_cli.save_tiny_croc

    def save_then_fail(folder, **kwargs):
        save(folder, **kwargs)
        (Path(folder) / "tokenizer.json").write_text('{"cut')
        raise make()

    monkeypatch.setattr(croc_testing_cli, "save_tiny_croc", save_then_fail)
    folder = tmp_path / "stage0"
    message = _one_line_exit(lambda: croc_testing_cli.main(["tiny-model", str(folder)]))
    assert message == (f"croc_testing: could not write {folder}: {words}; nothing was written there (the partial copy "
                       "beside it was removed): free space there and rerun the same command")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    croc_testing_cli.main(["tiny-model", str(folder)])
    assert (folder / "model.safetensors").is_file() and (folder / croc_testing_cli.MARKER).is_file()
    assert _entries(tmp_path) == ["stage0"]


def test_a_tiny_model_rewriting_its_own_folder_on_a_full_disk_leaves_it_to_the_rerun(tmp_path, monkeypatch):
    folder = tmp_path / "stage0"
    croc_testing_cli.main(["tiny-model", str(folder)])
    save = croc_testing_cli.save_tiny_croc

    def cut_and_fail(target, **kwargs):
        os.truncate(Path(target) / "model.safetensors", 100)
        raise OSError(errno.ENOSPC, FULL, str(Path(target) / "model.safetensors"))

    monkeypatch.setattr(croc_testing_cli, "save_tiny_croc", cut_and_fail)
    message = _one_line_exit(lambda: croc_testing_cli.main(["tiny-model", str(folder)]))
    assert message == (f"croc_testing: could not write {folder}: {FULL} ({folder / 'model.safetensors'}); its files "
                       "are partly rewritten (rerunning the same command writes it again): free space there and rerun "
                       "the same command")
    monkeypatch.setattr(croc_testing_cli, "save_tiny_croc", save)
    croc_testing_cli.main(["tiny-model", str(folder)])
    assert (folder / "model.safetensors").stat().st_size > 100


# ---- data_recipes synth ----------------------------------------------------------------------------------------


class _FullAt:
    """A stand-in for the `json` module of `data_recipes.synthetic_scenes` whose `dump` into `name` fails as a full
    disk does: the file opened (so emptied), nothing written."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loads = json.loads

    def dump(self, obj, file, **kwargs):
        if Path(file.name).name == self.name:
            raise OSError(errno.ENOSPC, FULL)
        json.dump(obj, file, **kwargs)


SYNTH = ["--num-images", "4", "--image-size", "32"]


def test_synth_on_a_full_disk_leaves_no_folder_and_its_rerun_writes_it(tmp_path, monkeypatch, capsys):
    """The images and rows written, scenes.json not: the folder left was refused by the rerun ("no earlier synth
    wrote it (no scenes.json)")."""
    out = tmp_path / "scenes"
    monkeypatch.setattr(synthetic_scenes, "json", _FullAt("scenes.json"))
    assert data_recipes_main(["synth", "--out", str(out), *SYNTH]) == 1
    err = _last_line(capsys)
    assert err == (f"error: could not write the synthetic scenes to --out {out}: {FULL}; nothing was written there (the "
                   "partial copy beside it was removed): free space there (or make it writable) and rerun the same "
                   "command")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert data_recipes_main(["synth", "--out", str(out), *SYNTH]) == 0
    assert json.loads((out / "scenes.json").read_text())["config"]["num_images"] == 4
    assert not (out / synthetic_scenes.UNFINISHED).exists()


def test_synth_rewriting_its_own_folder_on_a_full_disk_leaves_it_to_the_rerun(tmp_path, monkeypatch, capsys):
    """A rerun into its earlier folder stopped while writing scenes.json left it empty: every later rerun refused the
    folder as not the generator's. A folder of the user's files is still refused."""
    out = tmp_path / "scenes"
    assert data_recipes_main(["synth", "--out", str(out), *SYNTH]) == 0
    (out / "notes.txt").write_text("the user's")
    monkeypatch.setattr(synthetic_scenes, "json", _FullAt("scenes.json"))
    assert data_recipes_main(["synth", "--out", str(out), *SYNTH]) == 1
    assert _last_line(capsys).endswith("its files are partly rewritten (rerunning the same command "
                                                    "writes it again): free space there (or make it writable) and "
                                                    "rerun the same command")
    assert (out / "scenes.json").read_text() == ""
    monkeypatch.undo()
    assert data_recipes_main(["synth", "--out", str(out), *SYNTH]) == 0
    assert json.loads((out / "scenes.json").read_text())["config"]["num_images"] == 4
    assert (out / "notes.txt").read_text() == "the user's"
    assert not (out / synthetic_scenes.UNFINISHED).exists()

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "qa_train.json").write_text("[]")
    assert data_recipes_main(["synth", "--out", str(mine), *SYNTH]) == 1
    assert snapshot(mine) == {"qa_train.json": b"[]"}


# ---- data_recipes build ----------------------------------------------------------------------------------------


@pytest.fixture
def text_rows(tmp_path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    rows = [{"id": str(i), "conversations": [{"from": "human", "value": f"Q{i}?"}, {"from": "gpt", "value": "A."}]}
            for i in range(3)]
    (root / "train.json").write_text(json.dumps(rows))
    return root


def _build(root: Path, out: Path, *more: str) -> list[str]:
    return ["build", "llava_json", "--data-root", str(root), "--out", str(out), "--set", "annotation=train.json",
            "--skip-image-check", *more]


@pytest.mark.parametrize("writer", ["save_to_disk", "write_jsonl"])
def test_a_build_on_a_full_disk_is_one_line_and_its_rerun_with_overwrite_replaces_it(text_rows, tmp_path, monkeypatch,
                                                                                    capsys, writer):
    """The Arrow files or data.jsonl not written whole: an OSError traceback (two for the Arrow files: `datasets`'
    close failed as well). The folder stays marked unfinished, which the trainer refuses."""
    out = tmp_path / "out"
    if writer == "save_to_disk":
        def fail(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, FULL)

        monkeypatch.setattr(build_module.Dataset, "save_to_disk", fail)
    else:
        def fail(path, rows):
            Path(path).write_text('{"id": "0"')
            raise OSError(errno.ENOSPC, FULL)

        monkeypatch.setattr(build_module, "write_jsonl", fail)
    assert data_recipes_main(_build(text_rows, out)) == 1
    assert _last_line(capsys) == (
        f"error: could not write the build into {out}: {FULL}; the folder is marked as an unfinished build "
        "(summary.json status \"building\"), which the trainer refuses: free space there and rerun the same command "
        "with --overwrite")
    assert json.loads((out / "summary.json").read_text())["status"] == "building"
    monkeypatch.undo()
    assert data_recipes_main(_build(text_rows, out, "--overwrite")) == 0
    assert json.loads((out / "summary.json").read_text())["status"] == "ok"


def test_a_build_whose_first_summary_does_not_fit_leaves_a_folder_its_rerun_takes(text_rows, tmp_path, monkeypatch,
                                                                                  capsys):
    """summary.json's temporary file, left when it could not be written, made a folder the rerun refused as not a
    build ("holds no summary.json of a build"), even with --overwrite."""
    out = tmp_path / "out"

    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, FULL)

    monkeypatch.setattr(build_module.os, "replace", fail)
    assert data_recipes_main(_build(text_rows, out)) == 1
    assert _last_line(capsys) == (f"error: could not write the build into {out}: {FULL}; nothing in it "
                                               "was changed: free space there and rerun the same command")
    assert list(out.iterdir()) == []
    monkeypatch.undo()
    assert data_recipes_main(_build(text_rows, out)) == 0
    shutil.rmtree(out)
