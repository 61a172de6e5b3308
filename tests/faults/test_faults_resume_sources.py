"""Issue 20, resumes that are exact or refused, for what a resume reads besides its checkpoint: the model source's
tokenizer, image processor, processor settings and chat template (read from model.name_or_path again, so a file
edited since, or another folder named, went on unsaid on another loss curve: now refused in one line naming the
part, or accepted with --resume_accept_changes=[processor]; a copy of the source, a relative path to it, a Hub id's
cached snapshot of it or files only touched resume), and an output folder whose top-level run record a cleanup
deleted (its checkpoint carries the run's own: the same command resumes, instead of being told the run's files are
someone else's). The other resume refusals: test_faults_resume.py."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from run_cases import checkpointed_argv as _argv
from run_cases import cli_exit, curve, signal_during_step

from trainer import train as train_module
from trainer.fingerprints import PROCESSOR, describe_processor_change
from trainer.run_record import RUN_RECORD, record_differences, resume_refusal


@pytest.fixture(scope="module")
def source(tiny_model, tmp_path_factory) -> Path:
    """A model source of the tests' own (they edit copies of it; the session's tiny model stays as it is)."""
    return Path(shutil.copytree(tiny_model, tmp_path_factory.mktemp("source") / "src"))


@pytest.fixture(scope="module")
def reference(source, data, tmp_path_factory) -> Path:
    """The uninterrupted 2-step run on `source`, a checkpoint at each step."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train_module.main(_argv(out, source, data, "--max_steps=2"))
    return out


def _stopped_after_step_1(reference: Path, target: Path) -> Path:
    """As a run killed after step 1 leaves its output folder (without the top-level files: see the last tests)."""
    shutil.copytree(reference / "checkpoint-1", target / "checkpoint-1")
    return target


def _edit_image_mean(folder: Path) -> None:
    path = folder / "processor_config.json"
    path.write_text(path.read_text().replace("0.48145466", "0.9").replace("0.26862954", "0.05"))


def _swap_token_ids(folder: Path) -> None:
    """Two ordinary tokens' ids swapped in tokenizer.json (the hostile tester's edit)."""
    path = folder / "tokenizer.json"
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    vocab = tokenizer["model"]["vocab"]
    vocab["▁the"], vocab["▁a"] = vocab["▁a"], vocab["▁the"]
    path.write_text(json.dumps(tokenizer), encoding="utf-8")


def _edit_special_token(folder: Path) -> None:
    path = folder / "tokenizer_config.json"
    path.write_text(path.read_text().replace('"eos_token": "</s>"', '"eos_token": "<unk>"'))


def _edit_chat_template(folder: Path) -> None:
    with (folder / "chat_template.jinja").open("a", encoding="utf-8") as file:
        file.write("{{ '' }}")


class _ModelLoading(Exception):
    """Raised where the model would load: the resume was decided (not refused) and nothing was trained."""


def _stop_at_model_load(*args, **kwargs):
    raise _ModelLoading


# --- a model source changed since the checkpoint --------------------------------------------------------------


@pytest.mark.parametrize(("edit", "named"), [
    (_edit_image_mean, "the processor's settings (processor_config.json, preprocessor_config.json): "
                       "image_processor.image_mean [0.48145466, 0.4578275, 0.40821073] -> [0.9, 0.4578275, "
                       "0.40821073], image_processor.image_std [0.26862954"),
    (_swap_token_ids, "the tokenizer's vocabulary, merges, normaliser or token ids (tokenizer.json"),
    (_edit_special_token, "the tokenizer's added or special tokens (tokenizer_config.json"),
    (_edit_chat_template, "the tokenizer's chat template (chat_template.jinja"),
], ids=["image_processor", "token_ids", "special_tokens", "chat_template"])
def test_a_model_source_edited_since_the_checkpoint_is_refused_naming_what_changed(
        reference, source, data, tmp_path, monkeypatch, capsys, request, edit, named):
    """The resume reads the tokenizer and the image processor from model.name_or_path, not from its checkpoint: an
    image mean edited there went on, exit 0, on another loss curve; token ids swapped only made the length check
    refit every row (an INFO line). Refused before the rows are read (their length check takes minutes over a full
    mixture) and the model loads, the part and its files named."""
    edited = Path(shutil.copytree(source, tmp_path / "edited"))
    edit(edited)
    out = _stopped_after_step_1(reference, tmp_path / "run")
    request.getfixturevalue("nothing_loaded")  # from here on
    status, message = cli_exit(_argv(out, edited, data, "--max_steps=2"), monkeypatch, capsys)
    assert status == 1
    assert message.startswith("configuration error: checkpoint-1 was trained with other files of the model source "
                              f"than it holds now: processor: {named}"), message
    assert message.endswith("or pass '--resume_accept_changes=[processor]' to train with them from the resumed step on")


def test_an_accepted_processor_change_trains_on_with_the_new_files(reference, source, data, tmp_path, capsys):
    """The user may mean the change (a fixed tokenizer or image processor file): accepted, it trains with them from
    the resumed step on, said in a warning."""
    edited = Path(shutil.copytree(source, tmp_path / "edited"))
    _edit_image_mean(edited)
    out = _stopped_after_step_1(reference, tmp_path / "run")
    capsys.readouterr()
    train_module.main(_argv(out, edited, data, "--max_steps=2", "--resume_accept_changes=[processor]"))
    assert "resuming with a changed processor: the processor's settings" in capsys.readouterr().err
    assert sorted(curve(out)) == [1, 2]
    assert json.loads((out / RUN_RECORD).read_text())[PROCESSOR]["settings"]["image_processor"]["image_mean"][0] == 0.9


# --- the same model source, however it is named ---------------------------------------------------------------


def test_a_copy_of_the_source_elsewhere_resumes_onto_the_same_curve(reference, source, data, tmp_path):
    copy = Path(shutil.copytree(source, tmp_path / "elsewhere" / "copy"))
    out = _stopped_after_step_1(reference, tmp_path / "run")
    train_module.main(_argv(out, copy, data, "--max_steps=2"))
    assert curve(out)[2]["loss"] == curve(reference)[2]["loss"]


def test_a_relative_path_and_touched_files_are_the_same_source(reference, source, data, tmp_path, monkeypatch):
    out = _stopped_after_step_1(reference, tmp_path / "run")
    copy = Path(shutil.copytree(source, tmp_path / "copy"))
    for path in copy.iterdir():  # rewritten with the same bytes, as a sync or a `touch` leaves them
        os.utime(path, (1_000_000_000, 1_000_000_000))
    monkeypatch.setattr(train_module, "load_model_and_processor", _stop_at_model_load)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(_ModelLoading):
        train_module.main(_argv(out, Path("copy"), data, "--max_steps=2"))


def test_a_hub_ids_cached_snapshot_of_the_same_files_is_the_same_source(reference, source, data, tmp_path,
                                                                        monkeypatch):
    """A run started from a local folder (a `--local-dir` download) and resumed from the Hub id, read from the cache
    offline, or back: the same processor."""
    import huggingface_hub.constants

    cache = tmp_path / "cache"
    repo = cache / "models--croc-tests--tiny"
    shutil.copytree(source, repo / "snapshots" / ("a" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    out = _stopped_after_step_1(reference, tmp_path / "run")
    monkeypatch.setattr(train_module, "load_model_and_processor", _stop_at_model_load)
    with pytest.raises(_ModelLoading):
        train_module.main(_argv(out, "croc-tests/tiny", data, "--max_steps=2"))


def test_a_processor_change_is_said_with_the_schedule_values_and_an_older_record_is_not_compared():
    """One line for both kinds of accept-able change, with the one option that accepts them; a checkpoint written
    before the processor was recorded resumes as it did (the keys it has are compared)."""
    before = {"tokenizer": "a", "tokenizer_vocabulary": "v", "tokenizer_special_tokens": "s",
              "tokenizer_chat_template": "t", "chat_template": "c", "class": "CrocProcessor",
              "settings": {"patch_size": 14, "image_processor": {"size": {"shortest_edge": 56}}}}
    now = {**before, "settings": {"patch_size": 14, "image_processor": {"size": {"shortest_edge": 64}}}}
    message = resume_refusal({"max_steps": 2, PROCESSOR: before}, {"max_steps": 4, PROCESSOR: now}, [], "checkpoint-2")
    assert message is not None and "\n" not in message
    assert message.startswith("checkpoint-2 was saved with other optimiser / schedule values: max_steps 2 -> 4; and "
                              "it was trained with other files of the model source, processor: the processor's "
                              "settings (processor_config.json, preprocessor_config.json): "
                              "image_processor.size.shortest_edge 56 -> 64, which this run would read instead"), message
    assert "'--resume_accept_changes=[max_steps,processor]'" in message
    assert resume_refusal({"max_steps": 2, PROCESSOR: before}, {"max_steps": 4, PROCESSOR: now},
                          ["max_steps", PROCESSOR], "checkpoint-2") is None
    assert record_differences({"max_steps": 2}, {"max_steps": 2, PROCESSOR: now}) == []
    # A tokenizer whose class or settings alone changed is still named as the tokenizer.
    assert describe_processor_change(before, {**before, "tokenizer": "b"}) == \
        "processor: the tokenizer's class or settings (tokenizer_config.json)"


# --- an output folder whose run record a cleanup deleted ------------------------------------------------------



@pytest.fixture(scope="module")
def stopped(source, data, tmp_path_factory) -> Path:
    """A run preempted in step 1 (checkpoint-1, its data report and rejects at the top), whose top-level
    croc_run.json a cleanup job then deleted; tests copy it."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    with pytest.MonkeyPatch.context() as patch:
        signal_during_step(patch, 1)
        with pytest.raises(Exception) as stop:
            train_module.main(_argv(out, source, data, "--max_steps=2"))
    assert type(stop.value).__name__ == "RunPreempted"
    assert (out / "checkpoint-1" / RUN_RECORD).is_file() and (out / "data_report.json").is_file()
    (out / RUN_RECORD).unlink()
    return out


def test_a_stopped_run_whose_record_a_cleanup_deleted_resumes_from_its_checkpoints_own(stopped, reference, source,
                                                                                       data, tmp_path, capsys):
    """It was refused as an output_dir holding "rejects.jsonl, data_report.json, which this trainer's run did not
    write ... choose another output_dir": the run did write them, and its checkpoint carries its record, compared
    with this run as any resume's. The same command resumes onto the uninterrupted curve and writes the record
    again."""
    out = Path(shutil.copytree(stopped, tmp_path / "run"))
    capsys.readouterr()
    train_module.main(_argv(out, source, data, "--max_steps=2"))
    assert f"output_dir {out} has no run record (croc_run.json), yet its checkpoint-1 holds this run's: resuming " \
           "from it" in capsys.readouterr().err
    assert curve(out)[2]["loss"] == curve(reference)[2]["loss"]
    assert json.loads((out / RUN_RECORD).read_text())["status"] == "finished"


def test_a_lost_record_is_no_licence_for_another_run(stopped, source, data, tmp_path, monkeypatch, capsys,
                                                      no_model_load):
    """Another configuration is refused by the checkpoint's record, as any resume; a run that resumes none of the
    checkpoints (auto_resume=false) is told the real cause, not that the files are someone else's."""
    out = Path(shutil.copytree(stopped, tmp_path / "run"))
    status, message = cli_exit(_argv(out, source, data, "--max_steps=2", "--seed=1"), monkeypatch, capsys)
    assert status == 1 and message.startswith("configuration error: checkpoint-1 cannot continue with this "
                                              "configuration: seed 0 -> 1"), message
    status, message = cli_exit(_argv(out, source, data, "--max_steps=2", "--auto_resume=false"), monkeypatch, capsys)
    assert status == 1 and message.startswith(f"configuration error: output_dir {out} has lost its run record "
                                              "(croc_run.json) while checkpoint-1 holds the record of the run that "
                                              "wrote it"), message
    assert f"--resume_from_checkpoint={out / 'checkpoint-1'}" in message
    assert not (out / RUN_RECORD).exists()  # nothing written


def test_processes_compare_their_records_but_not_what_one_node_could_not_know():
    """The processes of a run compare their records before the model loads (`check_every_process_runs_this_run`):
    a Hub model's weights cached on one node only are fingerprinted there alone, and the other node downloads them
    as the model loads, so `lora_base_weights` known on one side only is no difference (a multi-node LoRA run from a
    Hub id was refused on every node; from a hostile tester of today's changes); other rows are."""
    from trainer.run_record import keys_differing_between_processes, record_digests

    main = {"data_rows": {"count": 8, "sha256": "a"}, "lora_base_weights": "f" * 16, "seed": 0}
    cached_elsewhere = record_digests({**main, "lora_base_weights": None})
    assert keys_differing_between_processes(record_digests(main), cached_elsewhere) == []
    edited = record_digests({**main, "data_rows": {"count": 8, "sha256": "b"}, "lora_base_weights": None})
    assert keys_differing_between_processes(record_digests(main), edited) == ["data_rows"]
    assert keys_differing_between_processes(record_digests(main), record_digests({**main, "seed": None})) == ["seed"]


def test_another_parent_folder_is_another_run_neither_finished_nor_resumed(reference, source, data, tmp_path,
                                                                           monkeypatch, capsys):
    """Stage 2 first started from the wrong parent (stage 1, skipping 1.5), rerun with the right one into the same
    output_dir: the finished run's folder said it held this run (nothing to train) and kept the model of the wrong
    parent; a stopped one resumed that lineage (from a hostile tester of chained stages). The record names the
    weights a run started from: another parent is refused as another run."""
    from safetensors.torch import load_file, save_file

    other = Path(shutil.copytree(source, tmp_path / "other_parent"))
    weights = load_file(str(other / "model.safetensors"))
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1
    save_file(weights, str(other / "model.safetensors"), metadata={"format": "pt"})
    finished = Path(shutil.copytree(reference, tmp_path / "finished"))
    stopped = _stopped_after_step_1(reference, tmp_path / "stopped")
    for out in (finished, stopped):
        status, message = cli_exit(_argv(out, other, data, "--max_steps=2"), monkeypatch, capsys)
        assert status == 1 and "start_weights" in message, message
