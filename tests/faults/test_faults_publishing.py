"""Issue 20, item 7: the trainer's publishing never deletes and never leaks. A dry-run folder (`--hub_dry_run DIR`)
is written only when new, empty or an earlier publish's own (only its files are replaced), and never inside, around
or equal to the run's folders: every other folder is refused with one line, before the model loads, and every byte
under the test's folder is compared before and after. What goes up (dry or real) holds no token, absolute local path
or user name, checked here by an independent byte search of every file; a real push (HfApi methods replaced by
recorders) uploads exactly the scanned file list, and nothing when a leak is planted; local paths in the uploaded
files' path fields go up as names; the card states what the run did. (The recipes' `--hub-folder` and
`--push-to-hub`: test_faults_publishing_recipes.py; the scanner itself: test_faults_publishing_scanner.py;
what the upload takes from output_dir and the model source: test_faults_publishing_output_dir.py.)"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import ModelCard
from publish_cases import TOKEN, HubRecorder
from publish_cases import file_names as _files
from publish_cases import leaks as _leaks
from publish_cases import run_argv as _argv
from publish_cases import snapshot as _snapshot
from publish_cases import write_data as _data
from run_cases import cli_error as _cli_error
from run_cases import cli_exit

from modeling_croc import upload_scan
from modeling_croc.publish_folder import PUBLISH_MARKER, prepare_publish_folder
from trainer import croc_trainer
from trainer import hub as trainer_hub
from trainer import train as train_module
from trainer.cli import ConfigError

LOCAL_RECORDS = ("training_args.bin", "data_report.json", "rejects.jsonl", "croc_run.json")


# --- helpers ----------------------------------------------------------------------------------------------------


def _refuse_model_load(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(train_module, "load_model_and_processor", refuse)


# --- the trainer: --hub_dry_run ---------------------------------------------------------------------------------

FOREIGN_FOLDERS = {
    # case: (the dry-run folder relative to tmp_path, the message's words)
    "non-empty": ("elsewhere", "is not empty and no earlier publish wrote it (it holds notes.txt, sub/)"),
    "output_dir": ("runs/out", "is the output_dir"),
    "parent": ("runs", "contains the output_dir"),
    "inside": ("runs/out/dry", "is inside the output_dir"),
}


@pytest.mark.parametrize("case", FOREIGN_FOLDERS)
def test_dry_run_into_a_foreign_folder_is_refused_before_the_model_loads(case, tiny_model, tmp_path, monkeypatch,
                                                                         no_model_load):
    data = _data(tmp_path / "data")
    out = tmp_path / "runs" / "out"
    (out / "logs").mkdir(parents=True)
    (out / "model.safetensors").write_bytes(b"weights of an earlier run")
    (out / "logs" / "train.log").write_text("step 1: loss 2.0")
    (tmp_path / "elsewhere" / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere" / "notes.txt").write_text("keep me")
    (tmp_path / "elsewhere" / "sub" / "model.bin").write_bytes(b"\x00\x01")
    before = _snapshot(tmp_path)
    folder, words = FOREIGN_FOLDERS[case]
    message = _cli_error(_argv(out, tiny_model, data, f"--hub_dry_run={tmp_path / folder}"), monkeypatch)
    assert message.startswith(f"configuration error: --hub_dry_run {tmp_path / folder} {words}"), message
    assert "nothing was written or deleted" in message
    assert _snapshot(tmp_path) == before


def test_a_lora_runs_dry_run_into_its_merge_folder_is_refused_before_the_model_loads(tiny_model, tmp_path,
                                                                                      monkeypatch, no_model_load):
    """A LoRA run writes its merged model into `<output_dir>-merged` after training: a dry run there would collide
    with it at the very end of the run."""
    data = _data(tmp_path / "data")
    out = tmp_path / "runs" / "out"
    merged = tmp_path / "runs" / "out-merged"
    message = _cli_error(_argv(out, tiny_model, data, "--model.use_peft=true", f"--hub_dry_run={merged}"),
                         monkeypatch)
    assert message.startswith(f"configuration error: --hub_dry_run {merged} is the LoRA merge folder {merged}"), \
        message
    assert not (tmp_path / "runs").exists()


def _mark_as_published(folder: Path) -> None:
    """Make `folder` look like an earlier dry run's: its marker lists every file it holds (a user who trains from
    the folder a dry run wrote, or publishes a build folder and reads it back)."""
    files = _files(folder)
    held = folder.with_name(folder.name + "-held")
    folder.rename(held)
    prepare_publish_folder(folder, files, option="--hub_dry_run", keep_clear_of={})  # as a publish does: mark, write
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (held / name).rename(folder / name)
    shutil.rmtree(held)


@pytest.mark.parametrize("source", ["data", "model", "image_root"])
def test_a_dry_run_into_what_the_run_reads_is_refused_before_the_model_loads(source, tiny_model, tmp_path,
                                                                             monkeypatch, no_model_load):
    """The folder rule keeps a dry run clear of the run's data and model sources too, not only of output_dir: a dry
    run into the run's own data folder, written by an earlier publish, replaced it as a whole (the rows and images
    deleted), and one into the base model's folder overwrote the base weights."""
    data = _data(tmp_path / "data")
    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    extra = []
    if source == "data":
        _mark_as_published(tmp_path / "data")
        dry, words = tmp_path / "data", f"contains the data.path {data}"
    elif source == "model":
        _mark_as_published(base)
        dry, words = base, f"is the model.name_or_path {base}"
    else:
        extra = [f"--data.image_root={tmp_path / 'data'}"]
        dry, words = tmp_path / "data" / "images" / "pub", f"is inside the data.image_root {tmp_path / 'data'}"
    before = _snapshot(tmp_path)
    message = _cli_error(_argv(tmp_path / "out", base, data, f"--hub_dry_run={dry}", *extra), monkeypatch)
    assert message.startswith(f"configuration error: --hub_dry_run {dry} {words}"), message
    assert _snapshot(tmp_path) == before


def test_dry_run_writes_a_clean_upload_set_and_replaces_only_its_own_folder(tiny_model, tmp_path, monkeypatch):
    data = _data(tmp_path / "data")
    out, dry = tmp_path / "out", tmp_path / "dry"
    argv = _argv(out, tiny_model, data, f"--hub_dry_run={dry}", f"--hub_token={TOKEN}")
    train_module.main(argv)

    # The local records stay in output_dir; every other file goes up byte for byte, and the marker lists them.
    assert all((out / name).is_file() for name in LOCAL_RECORDS)
    assert TOKEN.encode() in (out / "training_args.bin").read_bytes()  # what must not go up
    uploaded = [name for name in _files(dry) if name != PUBLISH_MARKER]
    for name in ("config.json", "model.safetensors", "README.md", "tokenizer.json", "processor_config.json",
                 "trainer_state.json", "modeling_croc.py"):
        assert name in uploaded, name
    assert not set(LOCAL_RECORDS) & set(uploaded)
    assert uploaded == [name for name in _files(out) if not name.startswith(("checkpoint-", "."))
                        and name not in LOCAL_RECORDS]
    assert all((dry / name).read_bytes() == (out / name).read_bytes() for name in uploaded)
    assert json.loads((dry / PUBLISH_MARKER).read_text())["files"] == uploaded
    assert _leaks(_snapshot(dry), tmp_path, TOKEN) == []

    # A second dry run replaces the earlier one's files, one it no longer writes included, and nothing else.
    marker = json.loads((dry / PUBLISH_MARKER).read_text())
    (dry / "old" / "shard.bin").parent.mkdir()
    (dry / "old" / "shard.bin").write_bytes(b"from an earlier dry run")
    (dry / PUBLISH_MARKER).write_text(json.dumps({**marker, "files": [*marker["files"], "old/shard.bin"]}))
    train_module.main(_argv(tmp_path / "out2", tiny_model, data, f"--hub_dry_run={dry}"))
    assert [name for name in _files(dry) if name != PUBLISH_MARKER] == uploaded  # old/shard.bin and old/ gone
    assert not (dry / "old").exists()
    assert (dry / "model.safetensors").read_bytes() == (tmp_path / "out2" / "model.safetensors").read_bytes()

    # A file the user put there since makes it a foreign folder again: refused before the model loads.
    (dry / "notes.txt").write_text("mine")
    before = _snapshot(tmp_path)
    _refuse_model_load(monkeypatch)
    message = _cli_error(_argv(tmp_path / "out3", tiny_model, data, f"--hub_dry_run={dry}"), monkeypatch)
    assert f"--hub_dry_run {dry} was written by an earlier publish but now also holds notes.txt" in message
    assert _snapshot(tmp_path) == before


def test_a_dry_run_killed_before_its_scan_ends_leaves_no_unscanned_file_to_upload(tiny_model, tmp_path, monkeypatch):
    """The upload set was copied into the dry run's folder and scanned there: a run killed during the copy or the
    scan (a node lost, SIGKILL after Slurm's grace period) left every file, a leaked token included, ready to upload
    by hand. It is staged in output_dir now, and only a scanned set reaches the folder."""
    data = _data(tmp_path / "data")
    out, dry = tmp_path / "out", tmp_path / "dry"
    argv = _argv(out, tiny_model, data, f"--hub_dry_run={dry}")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # what SIGKILL leaves: the files written so far, nothing after

    with monkeypatch.context() as patch:
        patch.setattr(trainer_hub, "check_upload_set", killed)
        with pytest.raises(KeyboardInterrupt):
            train_module.main(argv)
    assert [name for name in _files(dry) if name != PUBLISH_MARKER] == []
    train_module.main(argv)  # the same command: the dry run is written whole, scanned
    uploaded = [name for name in _files(dry) if name != PUBLISH_MARKER]
    assert "model.safetensors" in uploaded and uploaded == json.loads((dry / PUBLISH_MARKER).read_text())["files"]
    assert not list(out.glob(f"{trainer_hub.STAGING_PREFIX}*"))


@pytest.mark.parametrize("stop", ["full disk", "interrupt"])
def test_a_dry_run_folder_on_a_full_disk_is_left_without_part_of_the_set(tiny_model, tmp_path, monkeypatch, capsys,
                                                                         stop):
    """The dry run's folder on another, full disk: the copy of model.safetensors stopped at 3 of its 8 MB, and the
    folder kept it, the other files and a marker listing all 25, a set that looks whole, ready to upload by hand.
    The set is now copied into a hidden folder there and renamed into place: a stop leaves none of it."""
    import errno

    import modeling_croc.publish_folder as publish_folder

    data = _data(tmp_path / "data")
    out, dry = tmp_path / "out", tmp_path / "dry"
    argv = _argv(out, tiny_model, data, f"--hub_dry_run={dry}")
    copy = publish_folder.copy_file

    def copy_until_the_weights(source, destination, **kwargs):
        if Path(destination).name == "model.safetensors":
            Path(destination).parent.mkdir(parents=True, exist_ok=True)
            Path(destination).write_bytes(Path(source).read_bytes()[:1000])  # what the disk took
            if stop == "interrupt":
                raise KeyboardInterrupt
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(destination))
        return copy(source, destination, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(publish_folder, "copy_file", copy_until_the_weights)
        if stop == "interrupt":
            with pytest.raises(KeyboardInterrupt):
                train_module.main(argv)
        else:
            status, message = cli_exit(argv, monkeypatch, capsys)
            assert status == 1 and message.startswith(f"run stopped: could not write the dry run's folder {dry}: "
                                                      "[Errno 28] No space left on device"), message
    assert _files(dry) == [PUBLISH_MARKER]  # no file of the set, no hidden folder
    train_module.main(argv)  # room again: the same command fills it
    uploaded = [name for name in _files(dry) if name != PUBLISH_MARKER]
    assert "model.safetensors" in uploaded and uploaded == json.loads((dry / PUBLISH_MARKER).read_text())["files"]
    assert (dry / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


def test_a_dry_run_stages_its_upload_set_without_a_second_copy_of_the_weights(tiny_model, tmp_path, monkeypatch):
    """The dry run's staging folder sits inside output_dir: copied there, the weights needed their size again on
    output_dir's disk (a 7B run on a nearly full scratch disk stopped at its dry run, which wrote into a folder on
    another disk before). They are hard links there, as the push's are; the dry run's folder gets its own copy."""
    data = _data(tmp_path / "data")
    out, dry = tmp_path / "out", tmp_path / "dry"
    staged: dict[str, bool] = {}
    scan = trainer_hub.check_upload_set

    def check(folder, files, **kwargs):
        staged.update({name: os.path.samefile(Path(folder) / name, out / name) for name in files
                       if name.endswith(".safetensors")})
        return scan(folder, files, **kwargs)

    monkeypatch.setattr(trainer_hub, "check_upload_set", check)
    train_module.main(_argv(out, tiny_model, data, f"--hub_dry_run={dry}"))
    assert staged and all(staged.values()), staged  # no second copy of the weights in output_dir
    for name in staged:  # the dry run's folder shares no file with output_dir (editing one never changes the other)
        assert not os.path.samefile(dry / name, out / name)
        assert (dry / name).read_bytes() == (out / name).read_bytes()


def test_dry_run_folder_created_during_the_run_is_not_replaced(tiny_model, tmp_path, monkeypatch):
    """The rule is checked again right before writing: a folder that appeared while the model trained is refused
    (one line, the run's own output kept), not replaced."""
    data = _data(tmp_path / "data")
    out, dry = tmp_path / "out", tmp_path / "dry"
    original = trainer_hub._save_final_folder

    def save_then_someone_writes(trainer):
        original(trainer)
        dry.mkdir()
        (dry / "report.pdf").write_bytes(b"%PDF")

    monkeypatch.setattr(trainer_hub, "_save_final_folder", save_then_someone_writes)
    message = _cli_error(_argv(out, tiny_model, data, f"--hub_dry_run={dry}"), monkeypatch)
    assert message == (f"configuration error: --hub_dry_run {dry} is not empty and no earlier publish wrote it (it "
                       "holds report.pdf): choose a new or empty folder (nothing was written or deleted)")
    assert _files(dry) == ["report.pdf"] and (out / "model.safetensors").is_file()


# --- the trainer: --push_to_hub ---------------------------------------------------------------------------------


def test_push_without_a_token_is_refused_before_the_model_loads(tiny_model, tmp_path, monkeypatch, no_model_load,
                                                                hub_online):
    for name in upload_scan.TOKEN_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
    message = _cli_error(_argv(tmp_path / "out", tiny_model, _data(tmp_path / "data"), "--push_to_hub",
                               "--hub_strategy=end"), monkeypatch)
    assert message == ("configuration error: push_to_hub needs a Hugging Face token with write access, and none is "
                       "available: run `hf auth login`, set HF_TOKEN or pass --hub_token before training")


@pytest.mark.parametrize("strategy", ["every_save", "checkpoint", "all_checkpoints"])
def test_push_strategies_that_upload_during_training_are_refused(strategy, tiny_model, tmp_path, monkeypatch,
                                                                 no_model_load, hub_online):
    message = _cli_error(_argv(tmp_path / "out", tiny_model, _data(tmp_path / "data"), "--push_to_hub",
                               f"--hub_token={TOKEN}", f"--hub_strategy={strategy}"), monkeypatch)
    assert message.startswith(f"configuration error: hub_strategy={strategy} uploads output_dir or checkpoints "
                              "during training"), message
    assert message.endswith("use --hub_strategy=end (the final folder is checked and pushed once)")


def test_push_uploads_exactly_the_scanned_files_and_nothing_when_a_leak_is_planted(tiny_model, tmp_path,
                                                                                    monkeypatch, scanned, hub_online):
    hub = HubRecorder(monkeypatch)
    out = tmp_path / "out"
    trainer = train_module.main(_argv(out, tiny_model, _data(tmp_path / "data"), "--push_to_hub",
                                      "--hub_strategy=end", f"--hub_token={TOKEN}", "--hub_model_id=me/croc-tiny",
                                      "--save_strategy=steps", "--save_steps=1"))
    assert len(hub.commits) == 1, "one push, at the end: none from save_model or the checkpoint"
    repos = len(hub.repos)  # the Trainer's own create_repo, then the push's
    commit = hub.commits[0]
    assert commit["repo_id"] == "me/croc-tiny" and commit["token"] == TOKEN and commit["deleted"] == []
    uploads = [files for folder, files in scanned if folder.parent == out]  # before the load: the model source's
    assert len(uploads) == 1 and sorted(commit["added"]) == uploads[0]
    expected = [name for name in _files(out) if not name.startswith(("checkpoint-", "."))
                and name not in LOCAL_RECORDS]
    assert sorted(commit["added"]) == expected
    assert all(data == (out / name).read_bytes() for name, data in commit["added"].items())
    assert _leaks(commit["added"], tmp_path, TOKEN) == []
    assert not any(p.name.startswith(trainer_hub.STAGING_PREFIX) for p in out.iterdir())  # staging removed

    (out / "notes.md").write_text(f"trained from {tmp_path / 'data'}\n")
    with pytest.raises(ConfigError) as refused:
        trainer_hub.push(trainer)
    assert str(refused.value).startswith(f"refusing to publish {out}: ")  # where the file is, not the staging folder
    assert f"an absolute local path in notes.md (byte 13): '{tmp_path / 'data'}'" in str(refused.value)
    assert len(hub.commits) == 1 and len(hub.repos) == repos  # nothing created or uploaded


def test_a_push_deletes_the_weights_an_earlier_push_left_and_nothing_else(tiny_model, tmp_path, monkeypatch,
                                                                         hub_online):
    """A repository an earlier push filled with shards and a LoRA adapter: transformers would read a stale single
    `model.safetensors` before a new shard index, and a stale `adapter_config.json` makes the repo an adapter. The
    push deletes the weight and adapter files it does not rewrite, in its one commit, and no other remote file."""
    remote = ["README.md", "adapter_config.json", "adapter_model.safetensors", "eval/pope_results.json",
              "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
              "notes.md"]
    hub = HubRecorder(monkeypatch, remote_files=remote)
    train_module.main(_argv(tmp_path / "out", tiny_model, _data(tmp_path / "data"), "--push_to_hub",
                            f"--hub_token={TOKEN}", "--hub_model_id=me/croc-tiny"))
    [commit] = hub.commits
    assert "model.safetensors" in commit["added"]
    assert sorted(commit["deleted"]) == ["adapter_config.json", "adapter_model.safetensors",
                                         "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                         "model.safetensors.index.json"]


def test_a_refused_push_says_nothing_was_uploaded_and_never_advises_uploading_by_hand(tiny_model, tmp_path,
                                                                                      monkeypatch, hub_online):
    """A push the leak check refuses stopped with "the push failed ...: push it later with `hf upload`", which would
    have sent the very file the scan found, with training_args.bin and the checkpoints. It now says the push was
    refused, and what a rerun does."""
    hub = HubRecorder(monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.md").write_text(f"trained from {tmp_path / 'data'}\n")
    argv = _argv(out, tiny_model, _data(tmp_path / "data"), "--push_to_hub", f"--hub_token={TOKEN}",
                 "--hub_model_id=me/croc-tiny", "--save_strategy=steps", "--save_steps=1", "--max_steps=1")
    with pytest.raises(train_module.RunStopped) as stopped:
        train_module.main(argv)
    message = str(stopped.value)
    assert message.startswith("the push to me/croc-tiny was refused, nothing was uploaded: refusing to publish "), message
    assert "an absolute local path in notes.md" in message and "hf upload" not in message
    assert message.endswith("rerun the same command: it resumes from the last checkpoint, trains nothing more and "
                            "pushes"), message
    assert hub.commits == []


def test_a_push_rerun_after_a_failed_push_publishes_the_runs_mean_loss(tiny_model, tmp_path, monkeypatch, hub_online):
    """The documented recovery of a failed push, rerunning the same command, resumes from the last step's checkpoint
    and trains nothing: the Trainer's `train_loss` of that call is 0.0 (no step), and the card pushed said so (the
    hostile tester found `train_loss: 0.0` on the Hub). The card states the whole run's mean, as the first run's."""
    hub = HubRecorder(monkeypatch)
    recorded = huggingface_hub.HfApi.create_commit

    def fail_once(self, *args, **kwargs):
        monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", recorded)
        raise OSError("network down")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", fail_once)
    out = tmp_path / "out"
    argv = _argv(out, tiny_model, _data(tmp_path / "data"), "--push_to_hub", "--hub_strategy=end",
                 f"--hub_token={TOKEN}", "--hub_model_id=me/croc-tiny", "--save_strategy=steps", "--save_steps=1",
                 "--max_steps=2")
    with pytest.raises(train_module.RunStopped, match="rerun the same command"):
        train_module.main(argv)
    first = ModelCard.load(out / "README.md").data.to_dict()["final_losses"]
    steps = [entry["loss"] for entry in json.loads((out / "trainer_state.json").read_text())["log_history"]
             if "loss" in entry]
    assert len(steps) == 2 and first["train_loss"] == pytest.approx(sum(steps) / 2, rel=1e-5)

    train_module.main(argv)  # resumes from checkpoint-2, trains nothing, pushes
    assert len(hub.commits) == 1
    pushed = ModelCard(hub.commits[0]["added"]["README.md"].decode()).data.to_dict()["final_losses"]
    assert pushed == first


# --- the card ---------------------------------------------------------------------------------------------------


def test_a_card_of_a_run_that_skipped_a_nonfinite_step_says_so_and_states_measured_losses(tiny_model, tmp_path,
                                                                                         monkeypatch):
    """With `max_nonfinite_steps`, a skipped step's loss is logged as the Trainer's stand-in (0.0 when it is alone in
    its logging window): the card published `loss: 0.0`, a `train_loss` halved by it, and no word of the skip."""
    compute_loss = croc_trainer.CrocTrainer.compute_loss

    def nan_at_step_2(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = compute_loss(self, model, inputs, num_items_in_batch=num_items_in_batch)
        return loss * float("nan") if self.state.global_step + 1 == 2 else loss

    monkeypatch.setattr(croc_trainer.CrocTrainer, "compute_loss", nan_at_step_2)
    out, dry = tmp_path / "out", tmp_path / "dry"
    train_module.main(_argv(out, tiny_model, _data(tmp_path / "data"), f"--hub_dry_run={dry}", "--max_steps=2",
                            "--max_nonfinite_steps=1"))
    card = ModelCard.load(dry / "README.md")
    data = card.data.to_dict()
    step_1 = next(entry for entry in json.loads((out / "trainer_state.json").read_text())["log_history"]
                  if entry.get("step") == 1 and "loss" in entry)
    assert data["final_losses"]["loss"] == pytest.approx(step_1["loss"], rel=1e-5)
    assert data["final_losses"]["train_loss"] == pytest.approx(step_1["loss"], rel=1e-5)  # the applied step only
    assert data["nonfinite_steps_skipped"] == [2]
    assert "Non-finite steps skipped (no update, `max_nonfinite_steps`): 1 of 2 (steps 2)" in card.text


def test_a_skipped_step_first_in_a_longer_logging_window_is_left_out_of_the_cards_losses(tiny_model, tmp_path,
                                                                                          monkeypatch):
    """With logging_steps=2, a skipped step that opens its logging window gets the Trainer's stand-in 0.0 (the mean
    of the window so far), and the window's entry, logged at the next step, averages it in: the card published
    half the measured loss of step 4 as its final `loss`, though the skipped step's losses are said to be left out."""
    compute_loss = croc_trainer.CrocTrainer.compute_loss

    def nan_at_step_3(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = compute_loss(self, model, inputs, num_items_in_batch=num_items_in_batch)
        return loss * float("nan") if self.state.global_step + 1 == 3 else loss

    monkeypatch.setattr(croc_trainer.CrocTrainer, "compute_loss", nan_at_step_3)
    out = tmp_path / "out"
    train_module.main(_argv(out, tiny_model, _data(tmp_path / "data"), "--max_steps=4", "--logging_steps=2",
                            "--max_nonfinite_steps=1"))
    card = ModelCard.load(out / "README.md").data.to_dict()
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    step_2 = next(entry for entry in history if entry.get("step") == 2 and "loss" in entry)
    assert card["nonfinite_steps_skipped"] == [3]
    assert card["final_losses"]["loss"] == pytest.approx(step_2["loss"], rel=1e-5)  # the last window all measured


def test_a_lora_runs_card_says_its_upload_holds_adapters_not_a_model(tiny_model, tmp_path):
    """A LoRA run uploads its adapters (no config.json, no modelling code); its card told readers that
    `AutoModelForImageTextToText.from_pretrained(REPO, trust_remote_code=True)` loads it, which fails."""
    out, dry = tmp_path / "out", tmp_path / "dry"
    train_module.main(_argv(out, tiny_model, _data(tmp_path / "data"), f"--hub_dry_run={dry}",
                            "--model.use_peft=true"))
    assert (dry / "adapter_config.json").is_file() and not (dry / "config.json").exists()
    card = ModelCard.load(dry / "README.md").text
    assert "This folder holds LoRA adapters" in card and f"the Croc base folder `{tiny_model.name}`" in card
    # A downloaded adapter names its base by folder name only: the command says how to give the base.
    assert "does not load it" in card and "python -m trainer.merge_lora FOLDER --out MERGED --base BASE" in card
    assert "whether or not the Croc package is installed" not in card  # the model folder's instructions


def test_a_lora_runs_merged_folder_carries_the_runs_card_as_a_model_folder(tiny_model, tmp_path):
    """`<output_dir>-merged` had no card: a stage trained from it inherited no base models or licences, and its
    upload said nothing of them (found in review). It carries the run's metadata and the model folder's
    instructions, and `trainer.merge_lora` on its own writes the same."""
    from modeling_croc.provenance import Provenance
    from trainer.merge_lora import main as merge_main

    out = tmp_path / "out"
    train_module.main(_argv(out, tiny_model, _data(tmp_path / "data"), "--model.use_peft=true",
                            "--hub_license=apache-2.0", "--model.base_models=[org/base-lm]"))
    run_card = ModelCard.load(out / "README.md")
    for merged in (tmp_path / "out-merged", tmp_path / "by-cli"):
        if merged.name == "by-cli":
            merge_main([str(out), "--out", str(merged)])
        card = ModelCard.load(merged / "README.md")
        assert card.data.to_dict() == run_card.data.to_dict()
        assert card.text.lstrip().startswith(f"# {merged.name}\n")
        assert "whether or not the Croc package is installed" in card.text
        assert "This folder holds LoRA adapters" not in card.text and "does not load it" not in card.text
        assert f"Merged from the LoRA adapters of `{out.name}`" in card.text
        inherited = Provenance.of_model_folder(merged)
        assert inherited.base_models == ["org/base-lm"] and inherited.licenses == ["apache-2.0"]


def test_a_card_of_a_max_steps_run_states_the_steps_and_epochs_it_ran(tiny_model, tmp_path):
    """`max_steps` overrides `num_train_epochs`: one step over 4 rows at batch 2 is half an epoch, and the card said
    `epochs: 1.0` (found by a hostile tester)."""
    out, dry = tmp_path / "out", tmp_path / "dry"
    train_module.main(_argv(out, tiny_model, _data(tmp_path / "data"), f"--hub_dry_run={dry}"))  # max_steps=1
    card = ModelCard.load(dry / "README.md")
    hyper = card.data.to_dict()["training_hyperparameters"]
    assert hyper["max_steps"] == 1 and hyper["epochs"] == 0.5
    assert "| max_steps | 1 |" in card.text and "| epochs | 0.5 |" in card.text


def test_eval_results_named_under_home_reach_the_card(tiny_model, tmp_path, monkeypatch):
    """`--hub_eval_results=[~/...]` (the shell leaves `~` after `=` alone): the check before anything loads read the
    file with `~` expanded, but the card, written after training, opened the path as given, and the finished run
    stopped with "could not write the final model folder: No such file or directory: '~/...'"."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "pope_results.json").write_text(json.dumps({"results": {"pope": {"pope_accuracy": 0.5}}}))
    out = tmp_path / "out"
    train_module.main(_argv(out, tiny_model, _data(tmp_path / "data"), "--hub_eval_results=[~/pope_results.json]"))
    results = ModelCard.load(out / "README.md").data.eval_results
    assert [(result.dataset_type, result.metric_value) for result in results] == [("pope", 0.5)]


# --- what a push uploads from output_dir ------------------------------------------------------------------------


def test_upload_set_leaves_local_records_out_and_writes_path_fields_as_names(tmp_path):
    out, target = tmp_path / "out", tmp_path / "target"
    files = {"config.json": {"model_type": "croc"}, "model.safetensors": None, "README.md": None,
             "training_args.bin": None, "data_report.json": {}, "rejects.jsonl": None, ".croc-run.lock": None,
             "runs/Dec05_host/events.out.tfevents.1.host": None, "checkpoint-2/config.json": {},
             # TensorBoard (TENSORBOARD_LOGGING_DIR / logging_dir inside output_dir) and W&B (WANDB_DIR) logs
             "logs/events.out.tfevents.1700000000.gpu-node-17.1234.0": None, "wandb/run-1/files/config.yaml": None,
             "logs/wandb/run-1/files/wandb-metadata.json": {"host": "gpu-node-17"},  # WANDB_DIR=<output_dir>/logs
             "_staging/x": None, "base_config/config.json": {"_name_or_path": str(tmp_path / "stage1"), "a": 1},
             "adapter_config.json": {"base_model_name_or_path": "C:\\Users\\me\\base", "r": 4,
                                     "nested": {"name_or_path": "someone/hub-model"}},
             "sub/.hidden": None, "tokenizer.json": {"model": {"vocab": {"/home": 1}}},
             "emissions.csv": None}  # report_to=codecarbon: the machine's region and coordinates
    for name, content in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(json.dumps(content) if content is not None else name)
    selected = trainer_hub.files_to_upload(out)
    assert selected == ["README.md", "adapter_config.json", "base_config/config.json", "config.json",
                        "model.safetensors", "tokenizer.json"]
    trainer_hub.write_upload_set(out, selected, target)
    assert json.loads((target / "base_config/config.json").read_text()) == {"_name_or_path": "stage1", "a": 1}
    assert json.loads((target / "adapter_config.json").read_text()) == {
        "base_model_name_or_path": None, "r": 4, "nested": {"name_or_path": "someone/hub-model"}}
    for name in ("README.md", "config.json", "model.safetensors", "tokenizer.json"):  # untouched
        assert (target / name).read_bytes() == (out / name).read_bytes()


def test_relative_local_paths_in_path_fields_go_up_as_names(tmp_path):
    """`--model.name_or_path=../team/client-x/base` (or a relative output_dir's best checkpoint) is stored as typed:
    no local root, user name or run folder of the scan is in it, so only writing it as a name keeps it local. A value
    spelled as a Hub id (`org/name`) stays. An adapter's base goes up as null: transformers loads an adapter folder
    onto its `base_model_name_or_path`, and a name there is whatever folder of that name the downloader's working
    directory holds (the adapters were put on other weights, silently) or the Hub repository of that name."""
    out, target = tmp_path / "out", tmp_path / "target"
    out.mkdir()
    (out / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "../team/client-x/base"}))
    (out / "trainer_state.json").write_text(json.dumps({"best_model_checkpoint": "runs/s2/checkpoint-4"}))
    (out / "config.json").write_text(json.dumps({"_name_or_path": "./runs/s2", "text_config": {
        "_name_or_path": "someone/hub-model"}, "vision_config": {"_name_or_path": ""}}))
    files = ["adapter_config.json", "config.json", "trainer_state.json"]
    trainer_hub.write_upload_set(out, files, target)
    assert json.loads((target / "adapter_config.json").read_text()) == {"base_model_name_or_path": None}
    assert json.loads((target / "trainer_state.json").read_text()) == {"best_model_checkpoint": "checkpoint-4"}
    assert json.loads((target / "config.json").read_text()) == {"_name_or_path": "s2", "text_config": {
        "_name_or_path": "someone/hub-model"}, "vision_config": {"_name_or_path": ""}}  # Hub ids stay


def test_a_relative_local_folder_spelled_as_a_hub_id_goes_up_as_its_name(tmp_path, monkeypatch):
    """`--model.name_or_path=outputs/stage1` (a folder here, two components) is spelled as a Hub id: kept as typed,
    the pushed adapter_config.json sent PEFT to the Hub repo `outputs/stage1`, someone else's, while the model card
    (`is_hub_id`, which looks on disk) listed no base model. A Hub id that is no folder here stays."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs" / "stage1").mkdir(parents=True)
    out, target = tmp_path / "out", tmp_path / "target"
    out.mkdir()
    (out / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "outputs/stage1",
                                                         "nested": {"name_or_path": "someone/hub-model"}}))
    trainer_hub.write_upload_set(out, ["adapter_config.json"], target)
    assert json.loads((target / "adapter_config.json").read_text()) == {
        "base_model_name_or_path": None, "nested": {"name_or_path": "someone/hub-model"}}


def test_scores_of_the_model_a_run_is_about_to_train_are_refused_before_it_trains(tiny_model, tmp_path, monkeypatch,
                                                                                 no_model_load):
    """Evaluate a run, move its folder away, retrain in its place with the results as hub_eval_results: the start
    check took the file by the folder's name (its path gone) and the new card published the old model's scores.
    A run that trains a step writes a model no results file can have scored yet."""
    out = tmp_path / "stage2"
    results = tmp_path / "eval_out" / "stage2" / "20261207_results.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps({"results": {"pope": {"alias": "pope", "pope_accuracy,none": 0.5}},
                                   "config": {"model": "croc", "model_args": f"pretrained={out},dtype=auto"}}))
    message = _cli_error(_argv(out, tiny_model, _data(tmp_path / "data"), f"--hub_eval_results=[{results}]"),
                         monkeypatch)
    assert message == (f"configuration error: hub_eval_results: {results} scored {out}, but {out} holds no model now "
                       "and this run trains (from step 0): those scores are of another model; evaluate the model this "
                       f"run writes, then add them with `python -m trainer.model_card {out} --eval-results FILE`")
    assert not out.exists()


def test_a_finished_run_without_checkpoints_rerun_to_publish_keeps_the_scores_of_its_model(tiny_model, tmp_path,
                                                                                            capsys):
    """A run that kept no checkpoint (`save_strategy: no`, every cpu_tiny and demo config) trains again from step 0
    when rerun to publish: its scores go on the card of the model output_dir holds, and the card written at the end
    keeps them, the rerun ending on the same final losses (refused outright, the documented rerun could not publish
    them; a regression of the refusal above)."""
    out, data = tmp_path / "stage2", _data(tmp_path / "data")
    train_module.main(_argv(out, tiny_model, data, "--save_strategy=no"))
    results = tmp_path / "eval_out" / "stage2" / "20261207_results.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps({"results": {"pope": {"alias": "pope", "pope_accuracy,none": 0.5}},
                                   "config": {"model": "croc", "model_args": f"pretrained={out}"}}))
    train_module.main(_argv(out, tiny_model, data, "--save_strategy=no", f"--hub_dry_run={tmp_path / 'dry'}",
                            f"--hub_eval_results=[{results}]"))
    for card in (out / "README.md", tmp_path / "dry" / "README.md"):
        assert [(r.dataset_type, r.metric_value) for r in ModelCard.load(card).data.eval_results] == [("pope", 0.5)]
    assert "this run trains it again from step 0, and its card keeps them only if it ends on the same final losses" \
        in capsys.readouterr().err
