"""Issue 20, item 7: publishing never deletes and never leaks. A publish folder (`--hub_dry_run DIR`,
`--hub-folder DIR`) is written only when new, empty or an earlier publish's own (only its files are replaced), and
never inside, around or equal to the run's folders: every other folder is refused with one line, before any model or
source is read, and every byte under the test's folder is compared before and after. What goes up (dry or real) holds
no token, absolute local path or user name, checked here by an independent byte search of every file; the real
pushes (HfApi methods replaced by recorders) upload exactly the scanned file list, and nothing when a leak is
planted. The scanner itself is checked on planted findings in text, JSON, binary, safetensors and Parquet files,
with their exact offsets, and on look-alikes that must not count (URLs, bare words, row text)."""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path

import huggingface_hub
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from fault_cases import image_row, write_good_image
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, DatasetCard, ModelCard, RepoUrl
from run_cases import cli_error as _cli_error
from safetensors.torch import save_file

from data_recipes import build as build_module
from data_recipes.cli import main as recipes_main
from data_recipes.publish import hub_files
from modeling_croc import publishing
from modeling_croc.publishing import PUBLISH_MARKER, Finding, scan_upload_set
from trainer import croc_trainer
from trainer import hub as trainer_hub
from trainer import train as train_module
from trainer.cli import ConfigError

REPO = Path(__file__).resolve().parents[2]
STAGE2 = REPO / "trainer" / "configs" / "cpu_tiny" / "stage2.yaml"
TOKEN = "hf_" + "Q7r" * 12  # shaped like a real token: hf_ + 36 letters and digits
LOCAL_RECORDS = ("training_args.bin", "data_report.json", "rejects.jsonl", "croc_run.json")


# --- helpers ----------------------------------------------------------------------------------------------------


def _data(root: Path, rows: int = 4) -> Path:
    for i in range(rows):
        write_good_image(root / "images" / f"{i}.png", (50 * i, 120, 200))
    (root / "rows.json").write_text(json.dumps([image_row(f"r{i}", f"images/{i}.png", f"Colour {i}.")
                                                for i in range(rows)]))
    return root / "rows.json"


def _argv(out: Path, model: Path, data: Path, *extra: str) -> list[str]:
    return [str(STAGE2), f"--output_dir={out}", f"--model.name_or_path={model}", f"--data.path={data}",
            "--disable_tqdm=true", "--group_by_modality_length=false", "--max_steps=1",
            "--per_device_train_batch_size=2", "--global_batch_size=2", *extra]




def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes, and every folder (as b"<dir>")."""
    return {p.relative_to(root).as_posix(): b"<dir>" if p.is_dir() else p.read_bytes() for p in root.rglob("*")}


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _leaks(contents: dict[str, bytes], tmp_path: Path, token: str | None = None) -> list[str]:
    """The independent check: every byte of every file searched for the token, the test's folders (as given and
    resolved), the home and working directories as path prefixes, and the user name as a path component."""
    needles = {str(tmp_path), os.path.realpath(tmp_path), str(Path.home()) + "/", os.getcwd() + "/",
               f"/{getpass.getuser()}/"}
    if token:
        needles.add(token)
    return [f"{name}: {needle}" for name, data in contents.items() for needle in sorted(needles)
            if needle.encode() in data]


def _refuse_model_load(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(train_module, "load_model_and_processor", refuse)


class HubRecorder:
    """`HfApi.create_repo`, `list_repo_files` and `create_commit` replaced: the repos created and every commit's
    operations, with the bytes of each added file read at commit time (a push's staging folder is gone after)."""

    def __init__(self, monkeypatch, remote_files: list[str] | None = None) -> None:
        self.repos, self.commits, self.remote_files = [], [], remote_files or []
        recorder = self

        def create_repo(self, repo_id, *, token=None, private=None, repo_type=None, exist_ok=False, **kwargs):
            recorder.repos.append({"repo_id": repo_id, "private": private, "repo_type": repo_type})
            return RepoUrl(f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}")

        def list_repo_files(self, repo_id, *, revision=None, repo_type=None, token=None):
            return list(recorder.remote_files)

        def create_commit(self, repo_id, operations, *, commit_message, token=None, repo_type=None, revision=None,
                          **kwargs):
            added = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations
                     if isinstance(op, CommitOperationAdd)}
            deleted = [op.path_in_repo for op in operations if isinstance(op, CommitOperationDelete)]
            recorder.commits.append({"repo_id": repo_id, "repo_type": repo_type, "added": added, "deleted": deleted,
                                     "token": token})

        for name, method in (("create_repo", create_repo), ("list_repo_files", list_repo_files),
                             ("create_commit", create_commit)):
            monkeypatch.setattr(huggingface_hub.HfApi, name, method)


@pytest.fixture
def hub_online(monkeypatch) -> None:
    """The tests run with HF_HUB_OFFLINE=1; a push is only allowed online (the HfApi calls are recorded, never
    sent)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def scanned(monkeypatch) -> list[tuple[Path, list[str]]]:
    """Every (folder, files) the upload scan ran on, in order."""
    calls = []
    original = publishing.scan_upload_set

    def record(folder, files, **kwargs):
        calls.append((Path(folder), list(files)))
        return original(folder, files, **kwargs)

    monkeypatch.setattr(publishing, "scan_upload_set", record)
    return calls


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
    for name in publishing.TOKEN_ENVIRONMENT:
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
    assert len(scanned) == 1 and sorted(commit["added"]) == scanned[0][1]
    expected = [name for name in _files(out) if not name.startswith(("checkpoint-", "."))
                and name not in LOCAL_RECORDS]
    assert sorted(commit["added"]) == expected
    assert all(data == (out / name).read_bytes() for name, data in commit["added"].items())
    assert _leaks(commit["added"], tmp_path, TOKEN) == []
    assert not any(p.name.startswith(trainer_hub.STAGING_PREFIX) for p in out.iterdir())  # staging removed

    (out / "notes.md").write_text(f"trained from {tmp_path / 'data'}\n")
    with pytest.raises(ConfigError) as refused:
        trainer_hub.push(trainer)
    assert str(refused.value).startswith(f"refusing to publish {out}/{trainer_hub.STAGING_PREFIX}")
    assert f"an absolute local path in notes.md (byte 13): '{tmp_path / 'data'}'" in str(refused.value)
    assert len(hub.commits) == 1 and len(hub.repos) == repos  # nothing created or uploaded


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
             "sub/.hidden": None, "tokenizer.json": {"model": {"vocab": {"/home": 1}}}}
    for name, content in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(json.dumps(content) if content is not None else name)
    selected = trainer_hub.files_to_upload(out)
    assert selected == ["README.md", "adapter_config.json", "base_config/config.json", "config.json",
                        "model.safetensors", "tokenizer.json"]
    trainer_hub.write_upload_set(out, selected, target)
    assert json.loads((target / "base_config/config.json").read_text()) == {"_name_or_path": "stage1", "a": 1}
    assert json.loads((target / "adapter_config.json").read_text()) == {
        "base_model_name_or_path": "base", "r": 4, "nested": {"name_or_path": "someone/hub-model"}}
    for name in ("README.md", "config.json", "model.safetensors", "tokenizer.json"):  # untouched
        assert (target / name).read_bytes() == (out / name).read_bytes()


def test_relative_local_paths_in_path_fields_go_up_as_names(tmp_path):
    """`--model.name_or_path=../team/client-x/base` (or a relative output_dir's best checkpoint) is stored as typed:
    no local root, user name or run folder of the scan is in it, so only writing it as a name keeps it local. A value
    spelled as a Hub id (`org/name`) stays."""
    out, target = tmp_path / "out", tmp_path / "target"
    out.mkdir()
    (out / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "../team/client-x/base"}))
    (out / "trainer_state.json").write_text(json.dumps({"best_model_checkpoint": "runs/s2/checkpoint-4"}))
    (out / "config.json").write_text(json.dumps({"_name_or_path": "./runs/s2", "text_config": {
        "_name_or_path": "someone/hub-model"}, "vision_config": {"_name_or_path": ""}}))
    files = ["adapter_config.json", "config.json", "trainer_state.json"]
    trainer_hub.write_upload_set(out, files, target)
    assert json.loads((target / "adapter_config.json").read_text()) == {"base_model_name_or_path": "base"}
    assert json.loads((target / "trainer_state.json").read_text()) == {"best_model_checkpoint": "checkpoint-4"}
    assert json.loads((target / "config.json").read_text()) == {"_name_or_path": "s2", "text_config": {
        "_name_or_path": "someone/hub-model"}, "vision_config": {"_name_or_path": ""}}  # Hub ids stay


# --- the recipes: --hub-folder and --push-to-hub ----------------------------------------------------------------


def _build_argv(tmp_path: Path, *extra: str) -> list[str]:
    return ["build", "llava_json", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "build"),
            "--set", "annotation=rows.json", *extra]


HUB_FOLDERS = {
    "non-empty": ("elsewhere", "is not empty and no earlier publish wrote it (it holds notes.txt, sub/)"),
    "out": ("build", "is the build folder (--out)"),
    "parent-of-out": ("", "contains the build folder (--out)"),
    "in-data-root": ("data/hub", "is inside the data root"),
}


@pytest.mark.parametrize("case", HUB_FOLDERS)
def test_hub_folder_into_a_foreign_folder_is_refused_before_any_source_is_read(case, tmp_path, capsys,
                                                                                monkeypatch):
    _data(tmp_path / "data")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "summary.json").write_text(  # an earlier build, which --overwrite may replace
        json.dumps({"recipe": "lcs558k", "status": "ok", "rows": {}, "sources": {}}))
    (tmp_path / "elsewhere" / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere" / "notes.txt").write_text("keep me")

    def read_sources(*args, **kwargs):
        raise AssertionError("the sources were read before the error")

    monkeypatch.setattr(build_module, "get_recipe", lambda name: read_sources)
    before = _snapshot(tmp_path)
    folder, words = HUB_FOLDERS[case]
    code = recipes_main(_build_argv(tmp_path, "--overwrite", "--hub-folder", str(tmp_path / folder)))
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith(f"error: --hub-folder {tmp_path / folder} {words}"), err
    assert _snapshot(tmp_path) == before


def test_hub_folder_is_clean_and_a_second_build_replaces_only_its_own_files(tmp_path, capsys):
    _data(tmp_path / "data")
    hub = tmp_path / "hub"
    assert recipes_main(_build_argv(tmp_path, "--hub-folder", str(hub))) == 0
    shards = hub_files(1)
    assert _files(hub) == sorted([PUBLISH_MARKER, *shards])  # no summary.json / rejects.jsonl: local records
    assert json.loads((hub / PUBLISH_MARKER).read_text())["files"] == sorted(shards)
    card = (hub / "README.md").read_text()
    assert "--data-root data --out build --set annotation=rows.json --hub-folder hub" in card
    rows = pq.read_table(hub / shards[0]).to_pylist()
    assert sorted(row["image"]["path"] for row in rows) == [f"{i}.png" for i in range(4)]  # names, not paths
    texts = json.dumps([{key: value for key, value in row.items() if key != "image"} for row in rows])
    assert _leaks({**_snapshot(hub), "rows": texts.encode()}, tmp_path) == []
    first = _snapshot(hub)

    assert recipes_main(_build_argv(tmp_path, "--overwrite", "--hub-folder", str(hub))) == 0
    assert _snapshot(hub).keys() == first.keys()
    (hub / "data" / "mine.txt").write_text("a user's file")
    before = _snapshot(tmp_path)
    capsys.readouterr()
    code = recipes_main(_build_argv(tmp_path, "--overwrite", "--hub-folder", str(hub)))
    err = capsys.readouterr().err
    assert code == 1 and f"--hub-folder {hub} was written by an earlier publish but now also holds data/mine.txt" \
        in err and err.count("\n") == 1, err
    assert _snapshot(tmp_path) == before


def test_dataset_push_uploads_exactly_the_scanned_files_and_nothing_when_a_leak_is_planted(tmp_path, monkeypatch,
                                                                                           capsys, scanned,
                                                                                           hub_online):
    # An earlier push left two shards; this one writes one: both old shards go, in the same commit.
    old_shards = hub_files(2)[:2]
    hub = HubRecorder(monkeypatch, remote_files=[".gitattributes", "README.md", *old_shards])
    _data(tmp_path / "data")
    assert recipes_main(_build_argv(tmp_path, "--push-to-hub", "me/shapes", "--private")) == 0
    assert hub.repos == [{"repo_id": "me/shapes", "private": True, "repo_type": "dataset"}]
    assert len(hub.commits) == 1 and len(scanned) == 1
    commit = hub.commits[0]
    assert sorted(commit["added"]) == sorted(scanned[0][1]) == sorted(hub_files(1))
    assert sorted(commit["deleted"]) == old_shards
    assert _leaks(commit["added"], tmp_path) == []
    assert scanned[0][0].parent == tmp_path / "build" and not scanned[0][0].exists()  # staged in --out, removed
    card = DatasetCard(commit["added"]["README.md"].decode())
    assert "--push-to-hub me/shapes --private" in card.text
    # The Hub viewer's metadata, as Dataset.push_to_hub writes it.
    assert card.data.configs == [{"config_name": "default", "data_files": [{"split": "train",
                                                                          "path": "data/train-*"}]}]
    assert card.data.dataset_info["splits"] == [{"name": "train", "num_bytes": card.data.dataset_info["dataset_size"],
                                                 "num_examples": 4}]

    # A row that names this machine's data folder: the scan refuses the push, nothing is created or uploaded.
    rows = json.loads((tmp_path / "data" / "rows.json").read_text())
    rows[0]["conversations"][1]["value"] = f"See {tmp_path / 'data' / 'images'} for more."
    (tmp_path / "data" / "rows.json").write_text(json.dumps(rows))
    capsys.readouterr()
    code = recipes_main(_build_argv(tmp_path, "--overwrite", "--push-to-hub", "me/shapes"))
    *progress, message = capsys.readouterr().err.splitlines()  # datasets' progress bars come first
    assert code == 1 and not any("error" in line for line in progress), progress
    assert message.startswith(f"error: refusing to publish {tmp_path / 'build'}/.hub-upload-"), message
    assert (f"an absolute local path in data/train-00000-of-00001.parquet (column conversations.value): "
            f"'{tmp_path / 'data' / 'images'}'; remove it") in message
    assert len(hub.commits) == 1 and len(hub.repos) == 1


def test_push_with_a_hub_folder_uploads_that_folder_without_its_marker(tmp_path, monkeypatch, scanned, hub_online):
    hub = HubRecorder(monkeypatch)
    _data(tmp_path / "data")
    folder = tmp_path / "hub"
    assert recipes_main(_build_argv(tmp_path, "--hub-folder", str(folder), "--push-to-hub", "me/shapes")) == 0
    assert [call[0] for call in scanned] == [folder, folder]  # once written, again right before the upload
    assert len(hub.commits) == 1
    assert hub.commits[0]["added"] == {name: (folder / name).read_bytes() for name in hub_files(1)}
    assert _files(folder) == sorted([PUBLISH_MARKER, *hub_files(1)])


def test_a_source_outside_the_data_root_and_a_data_root_spelled_with_dotdot_go_up_as_names(tmp_path, monkeypatch,
                                                                                            capsys):
    """An annotation file given by absolute path outside --data-root (`--set annotation=/data/corpora/rows.json`),
    and a data root spelled with `..`, on a disk outside the scan's local roots (`/data`, `/nfs`, `/dev/shm`): the
    card named both as given (its command line, sources table and parameters), and the scan knew neither, so they
    went up (the hostile tester found `/dev/shm/.../rows.json` in the pushed README, exit 0)."""
    monkeypatch.setattr(publishing, "LOCAL_ROOTS", ())  # tmp_path stands for such a disk
    _data(tmp_path / "data")
    corpora = tmp_path / "corpora" / "team-private"
    corpora.mkdir(parents=True)
    (tmp_path / "data" / "rows.json").rename(corpora / "rows.json")
    (tmp_path / "elsewhere").mkdir()
    hub = tmp_path / "hub"
    argv = ["build", "llava_json", "--data-root", f"{tmp_path}/elsewhere/../data", "--out", str(tmp_path / "build"),
            "--set", f"annotation={corpora / 'rows.json'}", "--hub-folder", str(hub)]
    assert recipes_main(argv) == 0, capsys.readouterr().err
    card = (hub / "README.md").read_text()
    assert str(tmp_path) not in card, card
    assert "--data-root data --out build --set annotation=rows.json --hub-folder hub" in card
    assert "| llava_json | `rows.json` |" in card and '"annotation": "rows.json"' in card

    # What the card does not name, the scan refuses: a row naming that file stops the publish.
    rows = json.loads((corpora / "rows.json").read_text())
    rows[0]["conversations"][1]["value"] = f"Read from {corpora / 'rows.json'}."
    (corpora / "rows.json").write_text(json.dumps(rows))
    capsys.readouterr()
    assert recipes_main([*argv, "--overwrite"]) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    # The scan quotes a bounded excerpt of the value, so the path's end is cut where tmp_path is long (xdist).
    assert "an absolute local path in data/train-00000-of-00001.parquet (column conversations.value): " \
        f"'{str(corpora)[:40]}" in err, err


def test_a_source_outside_the_data_root_spelled_relative_goes_up_as_its_name(tmp_path, monkeypatch, capsys):
    """The relative spelling of a source outside --data-root (`--data-root data --set
    annotation=../corpora/team-private/rows.json`, run from the project folder): the card named it as typed in its
    command line and parameters, and as the recorded origin `data/../corpora/team-private/rows.json` in its sources
    table, the folders outside the data root included."""
    _data(tmp_path / "data")
    corpora = tmp_path / "corpora" / "team-private"
    corpora.mkdir(parents=True)
    (tmp_path / "data" / "rows.json").rename(corpora / "rows.json")
    monkeypatch.chdir(tmp_path)
    argv = ["build", "llava_json", "--data-root", "data", "--out", "build",
            "--set", "annotation=../corpora/team-private/rows.json", "--hub-folder", "hub"]
    assert recipes_main(argv) == 0, capsys.readouterr().err
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "corpora" not in card and "team-private" not in card, card
    assert "--data-root data --out build --set annotation=rows.json --hub-folder hub" in card
    assert "| llava_json | `rows.json` |" in card and '"annotation": "rows.json"' in card


def test_private_without_a_push_is_refused(tmp_path, capsys):
    _data(tmp_path / "data")
    assert recipes_main(_build_argv(tmp_path, "--private")) == 1
    assert capsys.readouterr().err == ("error: --private applies to the repo --push-to-hub creates; add "
                                       "--push-to-hub REPO or drop it\n")
    assert not (tmp_path / "build").exists()


def test_a_dataset_push_with_the_hub_switched_off_is_refused_before_the_build(tmp_path, monkeypatch, capsys):
    """With HF_HUB_OFFLINE=1 the push at the end of a build cannot happen: it is refused in one line before a row
    is read (a full mixture's image checks take hours), as the trainer refuses push_to_hub, not with
    huggingface_hub's OfflineModeIsEnabled traceback once the build is done."""
    hub = HubRecorder(monkeypatch)
    _data(tmp_path / "data")
    assert recipes_main(_build_argv(tmp_path, "--push-to-hub", "me/shapes")) == 1
    assert capsys.readouterr().err == ("error: --push-to-hub needs the Hub, which is switched off here "
                                       "(HF_HUB_OFFLINE=1): unset HF_HUB_OFFLINE, or write what would be uploaded "
                                       "to a folder with --hub-folder DIR\n")
    assert not (tmp_path / "build").exists() and hub.repos == [] and hub.commits == []


# --- the scanner ------------------------------------------------------------------------------------------------

USER = "alice"
# Look-alikes that must not count: a URL path, a bare word, a path segment that is not a root, a root alone.
HARMLESS = ("see https://github.com/alice/croc and https://example.org/tmp/x; alice wrote a/tmp/b, and /tmp/ "
            "alone; root and hf_short")


def _planted_text(token: str, path: str) -> str:
    return f"token {token} path {path}/run.json user /data/{USER}/x mail {USER}@lab.example.org end"


def _expected(name: str, data: bytes, token: str, path: str, where: str = "byte") -> list[Finding]:
    """The findings in `data`, located by plain `bytes.find` of what was planted."""
    return [Finding(name, f"{where} {data.find(token.encode())}", publishing.TOKEN, f"hf_...({len(token)} characters)"),
            Finding(name, f"{where} {data.find((path + '/run.json').encode())}", publishing.LOCAL_PATH,
                    path + "/run.json"),
            Finding(name, f"{where} {data.find(f'/{USER}/x'.encode())}", publishing.USER_NAME, f"/data/{USER}/x"),
            Finding(name, f"{where} {data.find(f'{USER}@'.encode())}", publishing.USER_NAME,
                    f"{USER}@lab.example.org")]


def test_scanner_finds_planted_values_in_text_and_json_and_nothing_in_look_alikes(tmp_path):
    path = str(tmp_path / "secret-run")
    (tmp_path / "notes.md").write_text(f"{HARMLESS}\n{_planted_text(TOKEN, path)}\n")
    (tmp_path / "config.json").write_text(json.dumps({"harmless": HARMLESS, "planted": _planted_text(TOKEN, path)}))
    (tmp_path / "clean.json").write_text(json.dumps({"harmless": HARMLESS}))
    found = scan_upload_set(tmp_path, ["notes.md", "config.json", "clean.json"], user_name=USER)
    expected = [finding for name in ("notes.md", "config.json")
                for finding in _expected(name, (tmp_path / name).read_bytes(), TOKEN, path)]
    assert found == expected


def test_scanner_finds_windows_user_folders_raw_and_json_escaped(tmp_path):
    raw = "C:\\Users\\" + USER + "\\run"
    (tmp_path / "notes.txt").write_text(f"saved in {raw}; not in XC:\\Users\\x or C:\\Data\\x")
    (tmp_path / "config.json").write_text(json.dumps({"path": raw}))
    escaped = raw.replace("\\", "\\\\")  # as JSON writes it
    component = ("\\" + USER).encode()
    text, config = (tmp_path / "notes.txt").read_bytes(), (tmp_path / "config.json").read_bytes()
    assert scan_upload_set(tmp_path, ["notes.txt", "config.json"], user_name=USER) == [
        Finding("notes.txt", "byte 9", publishing.LOCAL_PATH, raw),
        Finding("notes.txt", f"byte {text.find(component)}", publishing.USER_NAME, raw),
        Finding("config.json", "byte 10", publishing.LOCAL_PATH, escaped),
        Finding("config.json", f"byte {config.find(component)}", publishing.USER_NAME, escaped),
    ]


def test_scanner_reads_binary_files_in_overlapping_chunks(tmp_path, monkeypatch):
    """A token cut by a chunk border is found once, at its offset; the known token needs no `hf_` shape."""
    monkeypatch.setattr(publishing, "CHUNK_BYTES", 64 * 1024)
    data = bytearray(np.random.default_rng(0).integers(0, 256, 5 * 64 * 1024, dtype=np.uint8).tobytes())
    known = "api_" + "z9" * 10  # a secret of another shape, known to the process
    planted = {64 * 1024 - 7: f" {TOKEN} ".encode(), 3 * 64 * 1024 - 3: f" {known} ".encode(),
               4 * 64 * 1024 + 100: f" /home/{USER}/w ".encode()}
    for offset, text in planted.items():
        data[offset:offset + len(text)] = text
    (tmp_path / "blob.bin").write_bytes(bytes(data))
    found = scan_upload_set(tmp_path, ["blob.bin"], tokens=[known], user_name=USER)
    assert found == [
        Finding("blob.bin", f"byte {64 * 1024 - 6}", publishing.TOKEN, f"hf_...({len(TOKEN)} characters)"),
        Finding("blob.bin", f"byte {3 * 64 * 1024 - 2}", publishing.TOKEN, f"({len(known)}-character secret)"),
        Finding("blob.bin", f"byte {4 * 64 * 1024 + 101}", publishing.LOCAL_PATH, f"/home/{USER}/w"),
        Finding("blob.bin", f"byte {4 * 64 * 1024 + 106}", publishing.USER_NAME, f"/home/{USER}/w"),
    ]


def test_scanner_reads_the_safetensors_header(tmp_path):
    path = str(tmp_path / "secret-run")
    save_file({"weight": torch.arange(64, dtype=torch.float32)}, str(tmp_path / "model.safetensors"),
              metadata={"note": _planted_text(TOKEN, path), "harmless": HARMLESS})
    data = (tmp_path / "model.safetensors").read_bytes()
    assert scan_upload_set(tmp_path, ["model.safetensors"], user_name=USER) == \
        _expected("model.safetensors", data, TOKEN, path, where="header byte")


def test_scanner_reads_parquet_metadata_and_decoded_row_values(tmp_path):
    """Row values are upstream text: only this process's tokens and this machine's folders count there (a shell
    answer naming /home/alice/ or an e-mail is data); the file's key-value metadata gets every rule."""
    folder = tmp_path / "data"
    rows = [{"id": "a", "conversations": [{"from": "human", "value": "Where?"},
                                          {"from": "gpt", "value": f"cd /home/{USER}/src; mail {USER}@x.org"}]},
            {"id": "b", "conversations": [{"from": "gpt", "value": f"use {TOKEN} from {folder}/images"}]}]
    table = pa.Table.from_pylist(rows).replace_schema_metadata({"note": f"made in {folder}"})
    pq.write_table(table, tmp_path / "train.parquet", compression="snappy")
    found = scan_upload_set(tmp_path, ["train.parquet"], tokens=[TOKEN], folders=[folder], user_name=USER)
    assert found == [
        Finding("train.parquet", "metadata note", publishing.LOCAL_PATH, str(folder)),
        Finding("train.parquet", "column conversations.value", publishing.TOKEN, f"hf_...({len(TOKEN)} characters)"),
        Finding("train.parquet", "column conversations.value", publishing.LOCAL_PATH, f"{folder}/images"),
    ]


def test_a_token_inside_an_embedded_file_stops_the_hub_folder(tmp_path, monkeypatch, capsys):
    """An "image" that is a link to a secret file, built without image checks: its bytes are embedded in the shard.
    The scanner reads the binary columns of a Parquet file too (the hostile tester found the token raw in the
    shard, exit 0)."""
    secret = tmp_path / "secret" / "token"
    secret.parent.mkdir()
    secret.write_text(TOKEN + "\n")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    _data(tmp_path / "data")
    (tmp_path / "data" / "images" / "1.png").unlink()
    (tmp_path / "data" / "images" / "1.png").symlink_to(secret)
    capsys.readouterr()
    code = recipes_main(_build_argv(tmp_path, "--skip-image-check", "--hub-folder", str(tmp_path / "hub")))
    err = capsys.readouterr().err
    assert code == 1 and "a Hugging Face token" in err and "column image" in err, err
    shards = list((tmp_path / "hub").rglob("*.parquet")) if (tmp_path / "hub").exists() else []
    assert not shards or all(TOKEN.encode() not in shard.read_bytes() for shard in shards)


def test_scanner_finds_this_processes_credentials_and_openai_shaped_keys(tmp_path, monkeypatch):
    """A W&B key is 40 hex digits, no shape to know it by: the value this process holds in WANDB_API_KEY is looked
    for as it is. An OpenAI key passed bare to an evaluation judge is known by its `sk-` shape (the hostile tester
    found both in a launch script kept in output_dir, which a push uploads: 0 findings)."""
    wandb_key, openai_key = "3f" * 20, "sk-proj-" + "Zq9" * 16
    monkeypatch.setenv("WANDB_API_KEY", wandb_key)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # not a credential: its name does not end in one
    script = f"wandb login {wandb_key}\npython -m lmms_eval --tasks mmvet --openai_api_key {openai_key}\n"
    (tmp_path / "launch.sh").write_text(script)
    (tmp_path / "clean.md").write_text("TOKENIZERS_PARALLELISM=false; see https://example.org/sk-learn and risk-free\n")
    assert scan_upload_set(tmp_path, ["launch.sh", "clean.md"], user_name=USER) == [
        Finding("launch.sh", f"byte {script.find(wandb_key)}", publishing.SECRET, "(40-character secret)"),
        Finding("launch.sh", f"byte {script.find(openai_key)}", publishing.SECRET,
                f"sk-p...({len(openai_key)} characters)"),
    ]


def test_a_credential_variable_holding_a_common_word_does_not_refuse_a_model_folder(tmp_path, monkeypatch,
                                                                                     sp_tokenizer):
    """A short credential value is as likely a word of the vocabulary: with a local database's POSTGRES_PASSWORD=
    password set, every model folder was refused ("a private key or credential in tokenizer.json"), and no edit of
    the file could clear it. A key-length value is still looked for."""
    sp_tokenizer.save_pretrained(tmp_path)
    files = sorted(path.name for path in tmp_path.iterdir())
    assert b"password" in (tmp_path / "tokenizer.json").read_bytes()  # the word is in the vocabulary
    monkeypatch.setenv("POSTGRES_PASSWORD", "password")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "mlf" + "7q" * 10)
    assert scan_upload_set(tmp_path, files, user_name=USER) == []
    (tmp_path / "launch.sh").write_text(f"python x.py --tracking-token {os.environ['MLFLOW_TRACKING_TOKEN']}\n")
    assert [finding.file for finding in scan_upload_set(tmp_path, ["launch.sh"], user_name=USER)] == ["launch.sh"]


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
        "base_model_name_or_path": "stage1", "nested": {"name_or_path": "someone/hub-model"}}
