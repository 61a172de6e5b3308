"""Checkpoint folders as a user's disk holds them, from a hostile tester: a file added to a checkpoint, checkpoints
that are links (to a disk not mounted now, or to folders elsewhere), a run started over on top of another run's
checkpoints, a checkpoint named inside the staging folder or past `max_steps`, a staging folder that cannot be
removed, weights cut short under a manifest rewritten to match. Whatever a run would reach again is renamed
(`checkpoint-N-abandoned`), never replaced; what cannot be resumed is one line; nothing linked is followed. (The
manifest itself and the atomic save: test_faults_checkpoints.py; roll-backs and changed settings:
test_faults_resume.py.)"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest
from run_cases import checkpointed_argv as _argv
from run_cases import checkpoints_only as _checkpoints_only
from run_cases import cli_error, cli_exit
from run_cases import listing as _listing

from trainer import croc_trainer
from trainer import train as train_module
from trainer.checkpoint_io import (
    MANIFEST,
    STAGING_DIR,
    TRAINER_STATE,
    checkpoint_problem,
    rotate_checkpoints,
    write_manifest,
)


def _names(out) -> list[str]:
    return sorted(path.name for path in out.glob("checkpoint-*"))


def test_a_checkpoint_passed_over_keeps_the_file_the_user_added(two_steps, tiny_model, data, tmp_path, capsys):
    """A file a resume could read (weights) was added to the newest checkpoint: the resume passes over it, and used
    to delete it, file and all, when it saved that step again."""
    out = _checkpoints_only(two_steps, tmp_path / "run")
    (out / "checkpoint-2" / "extra.safetensors").write_bytes(b"not weights")
    kept = _listing(out / "checkpoint-2")
    capsys.readouterr()
    train_module.main(_argv(out, tiny_model, data, "--max_steps=2"))
    log = capsys.readouterr().err
    assert "skipping checkpoint" in log and "extra.safetensors is not in its manifest" in log
    assert "past checkpoints that are not intact: the later checkpoints are kept as checkpoint-2 -> " \
           "checkpoint-2-abandoned" in log
    assert _names(out) == ["checkpoint-1", "checkpoint-2", "checkpoint-2-abandoned"]
    assert _listing(out / "checkpoint-2-abandoned") == kept
    assert checkpoint_problem(out / "checkpoint-2") is None  # the resumed run's own step 2


def test_an_evaluation_report_added_to_checkpoints_neither_stops_the_resume_nor_is_rotated_away(
        two_steps, tiny_model, data, tmp_path, capsys):
    """An evaluation script wrote its scores into every checkpoint: each was then 'not intact' (a file added after
    the save), so a rerun refused them all; and `save_total_limit` deleted the scores with the checkpoint."""
    out = _checkpoints_only(two_steps, tmp_path / "run")
    for name in ("checkpoint-1", "checkpoint-2"):
        (out / name / "eval_results.json").write_text('{"eval_accuracy": 0.91}')
        (out / name / "lmms_eval").mkdir()
        (out / name / "lmms_eval" / "samples.jsonl").write_text("{}\n")
    capsys.readouterr()
    train_module.main(_argv(out, tiny_model, data, "--max_steps=3", "--resume_accept_changes=[max_steps]",
                            "--save_total_limit=1"))
    log = capsys.readouterr().err
    assert "skipping checkpoint" not in log
    assert "checkpoint-2 holds eval_results.json, lmms_eval/samples.jsonl, added after the save: no resume reads them" in log
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2, 3]  # resumed, not redone
    assert _names(out) == ["checkpoint-1-rotated", "checkpoint-2-rotated", "checkpoint-3"]
    for name in ("checkpoint-1-rotated", "checkpoint-2-rotated"):
        assert _listing(out / name) == [("eval_results.json", 23), ("lmms_eval/samples.jsonl", 3)]
    assert "kept the 2 file(s) added since (eval_results.json, lmms_eval/samples.jsonl)" in log


@pytest.mark.parametrize("name", ["adapter_config.json", "model.safetensors.index.json", "croc_extra.json", "notes.pt",
                                  "global_step2/scores.json", "latest", "vocab.txt", "tekken.json"])
def test_an_added_file_a_loader_could_read_still_makes_the_checkpoint_not_intact(two_steps, tmp_path, name):
    checkpoint = tmp_path / "checkpoint-2"
    shutil.copytree(two_steps / "checkpoint-2", checkpoint)
    if name.startswith("global_step2/"):  # a folder the save wrote (DeepSpeed's), faked by listing one in it
        manifest = json.loads((checkpoint / MANIFEST).read_text())
        (checkpoint / "global_step2").mkdir()
        (checkpoint / "global_step2" / "shard.txt").write_text("x")
        manifest["files"]["global_step2/shard.txt"] = {"size": 1, "sha256": hashlib.sha256(b"x").hexdigest()}
        (checkpoint / MANIFEST).write_text(json.dumps(manifest))
    (checkpoint / name).write_text("{}")
    assert checkpoint_problem(checkpoint) == f"{name} is not in its manifest (added after the save)"


def test_a_report_added_to_an_older_checkpoint_does_not_make_it_the_newest_to_rotation(two_steps, tiny_model, data,
                                                                                       tmp_path, capsys):
    """Rotation goes by the time a checkpoint was saved: by the folder's time, a report added to checkpoint-1 made
    it the newest, and the resumed run deleted checkpoint-2, the one it had just resumed from."""
    out = _checkpoints_only(two_steps, tmp_path / "run")
    os.utime(out / "checkpoint-1" / MANIFEST, (1000, 1000))
    os.utime(out / "checkpoint-2" / MANIFEST, (2000, 2000))
    (out / "checkpoint-1" / "eval_results.json").write_text('{"eval_accuracy": 0.5}')  # the folder is now newest
    train_module.main(_argv(out, tiny_model, data, "--max_steps=3", "--resume_accept_changes=[max_steps]",
                            "--save_total_limit=2"))
    assert _names(out) == ["checkpoint-1-rotated", "checkpoint-2", "checkpoint-3"]


def test_rotation_without_added_files_deletes_the_whole_checkpoint(two_steps, tmp_path):
    out = _checkpoints_only(two_steps, tmp_path / "run")
    os.utime(out / "checkpoint-1", (1, 1))
    rotate_checkpoints(out, 1)
    assert _names(out) == ["checkpoint-2"]


def test_checkpoints_that_link_to_nothing_are_not_taken_for_no_checkpoint(two_steps, tiny_model, data, tmp_path,
                                                                          monkeypatch, capsys, no_model_load):
    """Checkpoints moved to another disk and linked back, the disk not mounted now: the run saw no checkpoint,
    trained from step 0 and then failed to save over the link, saying that rerunning starts over."""
    out = tmp_path / "run"
    out.mkdir()
    for name in ("checkpoint-1", "checkpoint-2"):
        (out / name).symlink_to(tmp_path / "unmounted" / name)
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2"), monkeypatch, capsys)
    assert status == 1
    assert message.startswith(f"configuration error: output_dir {out} holds checkpoints but none can be resumed "
                              f"(checkpoint-2: it is a link to {tmp_path / 'unmounted' / 'checkpoint-2'}, which is "
                              "not there (a disk not mounted?)"), message
    assert all((out / name).is_symlink() for name in ("checkpoint-1", "checkpoint-2"))


def test_checkpoints_of_a_version_from_before_manifests_are_refused_with_the_way_on(two_steps, tiny_model, data, tmp_path,
                                                                                     monkeypatch, capsys, no_model_load):
    """A run killed under a version that wrote no manifests and rerun after an upgrade: its checkpoints are refused
    (nothing vouches for their files), and the line says what can be done with them, named or found in output_dir."""
    out = _checkpoints_only(two_steps, tmp_path / "run")
    for checkpoint in out.glob("checkpoint-*"):
        (checkpoint / MANIFEST).unlink()
    way_on = ("a checkpoint of a version from before manifests resumes only under that version: finish the run with "
              "it, or start a new run from its weights (--model.name_or_path=CHECKPOINT and another output_dir; its "
              "optimizer state and data position are not carried)")
    for resume in ((), (f"--resume_from_checkpoint={out / 'checkpoint-2'}",)):
        status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2", *resume), monkeypatch, capsys)
        assert status == 1 and message.endswith(way_on), message
    # Any other reason keeps its own message.
    shutil.rmtree(out / "checkpoint-1")
    (out / "checkpoint-2" / TRAINER_STATE).unlink()
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2"), monkeypatch, capsys)
    assert status == 1 and way_on not in message and "none can be resumed" in message, message


def test_a_newest_checkpoint_linking_to_nothing_is_passed_over_and_kept(two_steps, tiny_model, data, tmp_path):
    out = _checkpoints_only(two_steps, tmp_path / "run")
    shutil.rmtree(out / "checkpoint-2")
    (out / "checkpoint-2").symlink_to(tmp_path / "unmounted" / "checkpoint-2")
    train_module.main(_argv(out, tiny_model, data, "--max_steps=2"))
    assert (out / "checkpoint-2-abandoned").is_symlink()
    assert checkpoint_problem(out / "checkpoint-2") is None
    assert (out / "model.safetensors").is_file()


def test_a_linked_checkpoint_folder_resumes(two_steps, tiny_model, data, tmp_path):
    """Checkpoints on another disk, linked in, and there: resumed as any other (links are not refused as such)."""
    out = tmp_path / "run"
    out.mkdir()
    for name in ("checkpoint-1", "checkpoint-2"):
        shutil.copytree(two_steps / name, tmp_path / "disk" / name)
        (out / name).symlink_to(tmp_path / "disk" / name)
    train_module.main(_argv(out, tiny_model, data, "--max_steps=3", "--resume_accept_changes=[max_steps]"))
    assert _names(out) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    assert (out / "checkpoint-2").is_symlink() and not (out / "checkpoint-3").is_symlink()


def test_a_run_started_over_keeps_the_checkpoints_it_would_replace_or_rotate(two_steps, tiny_model, data, tmp_path,
                                                                             capsys):
    """`auto_resume=false` on a folder holding another run's checkpoints (another seed, its own record only in
    them): the new run replaced them step by step and rotated the rest away, unsaid."""
    out = _checkpoints_only(two_steps, tmp_path / "run")
    before = {name: _listing(out / name) for name in ("checkpoint-1", "checkpoint-2")}
    capsys.readouterr()
    train_module.main(_argv(out, tiny_model, data, "--max_steps=1", "--auto_resume=false", "--seed=123",
                            "--save_total_limit=1"))
    assert "starting over (auto_resume=false): the later checkpoints are kept as checkpoint-1 -> " \
           "checkpoint-1-abandoned, checkpoint-2 -> checkpoint-2-abandoned" in capsys.readouterr().err
    assert _names(out) == ["checkpoint-1", "checkpoint-1-abandoned", "checkpoint-2-abandoned"]
    assert {name: _listing(out / f"{name}-abandoned") for name in before} == before


def test_a_checkpoint_named_in_the_staging_folder_is_refused_not_deleted(two_steps, tiny_model, data, tmp_path,
                                                                         monkeypatch, no_model_load):
    """Every start clears the staging folder: a checkpoint named there was deleted, then the run ended in a
    traceback saying it did not exist."""
    out = _checkpoints_only(two_steps, tmp_path / "run")
    staged = out / STAGING_DIR / "checkpoint-2"
    shutil.move(out / "checkpoint-2", staged)
    message = cli_error(_argv(out, tiny_model, data, "--max_steps=2", f"--resume_from_checkpoint={staged}"),
                        monkeypatch)
    assert message.startswith(f"configuration error: resume_from_checkpoint {staged} lies in {STAGING_DIR}, where a "
                              "save is written before it is complete"), message
    assert checkpoint_problem(staged) is None


def test_a_checkpoint_past_max_steps_is_refused_not_saved_as_the_final_model(two_steps, tiny_model, data, tmp_path,
                                                                             monkeypatch, no_model_load):
    """`max_steps` lowered below the newest checkpoint, the change accepted: the run ended at once, past its
    `max_steps`, with the checkpoint's weights as the final model and the record saying it finished there."""
    out = _checkpoints_only(two_steps, tmp_path / "run")
    message = cli_error(_argv(out, tiny_model, data, "--max_steps=1", "--resume_accept_changes=[max_steps]"),
                        monkeypatch)
    assert message == (f"configuration error: {out / 'checkpoint-2'} is at step 2, past max_steps=1: name a "
                       "checkpoint at or before that step with --resume_from_checkpoint, or raise max_steps")


def test_a_staging_folder_that_cannot_be_removed_is_one_line(two_steps, tiny_model, data, tmp_path, monkeypatch,
                                                             capsys):
    """Left by another user in a shared folder (root is not refused, so the refusal is simulated)."""
    out = _checkpoints_only(two_steps, tmp_path / "run")
    staging = out / STAGING_DIR / "checkpoint-3"
    staging.mkdir(parents=True)

    def refuse(output_dir):
        raise PermissionError(13, "Permission denied", str(staging / "optimizer.pt"))

    monkeypatch.setattr(croc_trainer, "discard_staging", refuse)
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2"), monkeypatch, capsys)
    assert status == 1
    assert message == (f"configuration error: the unfinished checkpoint save in {out}/{STAGING_DIR} cannot be "
                       f"removed (Permission denied: {staging / 'optimizer.pt'}); remove it and rerun the same "
                       "command (nothing was trained)")


def test_weights_cut_short_under_a_manifest_rewritten_to_match_are_one_line(two_steps, tiny_model, data, tmp_path,
                                                                           monkeypatch, capsys):
    out = _checkpoints_only(two_steps, tmp_path / "run")
    shutil.rmtree(out / "checkpoint-1")
    weights = out / "checkpoint-2" / "model.safetensors"
    os.truncate(weights, 100)
    write_manifest(out / "checkpoint-2")
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2"), monkeypatch, capsys)
    assert status == 1
    assert message.startswith(f"configuration error: {out / 'checkpoint-2'} cannot be resumed: its weights do not "
                              "load ("), message


def test_a_link_inside_a_checkpoint_is_not_followed(two_steps, tmp_path):
    """A shard folder linked into a checkpoint, under a manifest rewritten to match: the search for files that
    resuming unpickles did not look inside it (a crafted DeepSpeed shard there would have run its code)."""
    checkpoint = tmp_path / "checkpoint-2"
    shutil.copytree(two_steps / "checkpoint-2", checkpoint)
    (tmp_path / "elsewhere" / "global_step2").mkdir(parents=True)
    (tmp_path / "elsewhere" / "global_step2" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"x")
    (checkpoint / "global_step2").symlink_to(tmp_path / "elsewhere" / "global_step2")
    write_manifest(checkpoint)
    assert checkpoint_problem(checkpoint) == ("global_step2 is a link (a checkpoint this trainer writes holds none); "
                                              "it is not followed")


class _Payload:
    """What a crafted pickle runs when a full unpickler loads it: here, a file written."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _fsdp_checkpoint(folder, **values) -> None:
    """A checkpoint's FSDP weights folder as transformers writes it (torch.distributed.checkpoint, one process)."""
    import warnings

    import torch
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is ... uninitialized, assuming ... a single process"
        dcp.save({"model": {"weight": torch.randn(3, 4)}, **values},
                 storage_writer=dcp.FileSystemWriter(str(folder / "pytorch_model_fsdp_0")), no_dist=True)


def test_fsdp_sharded_files_are_loaded_as_plain_data_first(tmp_path):
    """torch.distributed.checkpoint reads its `.metadata` with plain `pickle.load`, and the values that are not
    tensors with `torch.load(weights_only=False)`: a crafted one of either ran its code on resume (under a manifest
    rewritten to match, as the restricted-unpickler promise assumes), unchecked."""
    import io
    import pickle

    import torch

    from trainer.checkpoint_io import unpicklable_files

    clean = tmp_path / "clean"
    _fsdp_checkpoint(clean, step=3, groups=[{"lr": 1e-3, "betas": (0.9, 0.99)}])
    assert unpicklable_files(clean) is None

    marker = tmp_path / "the-payload-ran"
    crafted_metadata = tmp_path / "metadata"
    _fsdp_checkpoint(crafted_metadata)
    (crafted_metadata / "pytorch_model_fsdp_0" / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    assert unpicklable_files(crafted_metadata) == (
        "pytorch_model_fsdp_0/.metadata: does not load as plain data (UnpicklingError: io.open is not a class "
        "torch.distributed.checkpoint writes); it is not loaded")

    crafted_value = tmp_path / "value"
    pickled = io.BytesIO()
    torch.save({"state": _Payload(marker)}, pickled)
    pickled.seek(0)
    _fsdp_checkpoint(crafted_value, extra=pickled)
    problem = unpicklable_files(crafted_value)
    assert problem.startswith("pytorch_model_fsdp_0/.metadata: a value in __0_0.distcp does not load as plain data "
                              "(UnpicklingError: "), problem
    assert not marker.exists()
