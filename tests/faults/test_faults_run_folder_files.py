"""What a user makes or edits in a run's `output_dir`, from a hostile tester: a `checkpoint-0` folder of their own
(weights copied in, notes), a checkpoint copied in from another run, a checkpoint file changed after its save, a
folder in the place of a checkpoint the run is about to save, a hand-written section in the run's README.md. The run
deletes only what its own manifests list and never rewrites a README.md edited since it wrote it. (Files added to
the run's own checkpoints: test_faults_checkpoint_folders.py.)"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

from run_cases import checkpointed_argv as _argv
from run_cases import listing as _listing

from trainer import train as train_module
from trainer.checkpoint_io import (
    MANIFEST,
    TRAINER_STATE,
    promote_checkpoint,
    rotate_checkpoints,
    write_manifest,
)

CARD_NAME, SIDE_CARD_NAME, EARLIER_CARD_NAME = "README.md", "README.croc.md", ".README.earlier.md"


def _checkpoint(out, step: int, record: dict | None, when: float) -> None:
    """A checkpoint as a save writes it (weights, state, run record, then the manifest), saved at `when`."""
    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" * 64)
    (folder / TRAINER_STATE).write_text(json.dumps({"global_step": step}))
    if record is not None:
        (folder / "croc_run.json").write_text(json.dumps(record))
    write_manifest(folder)
    for path in folder.iterdir():
        os.utime(path, (when, when))


def _user_folder(folder) -> None:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"copied weights")
    (folder / "config.json").write_text("{}")
    (folder / "NOTES.txt").write_text("stage-1 weights, kept for the ablation\n")


def test_rotation_deletes_only_checkpoints_this_run_wrote(tmp_path, caplog):
    """`_delete_checkpoint` deleted a `checkpoint-N` with no readable manifest whole (transformers' way), a user's
    `checkpoint-0` and its notes with it, and trusted any manifest: a checkpoint copied in from another run went
    too, and so did a file of the run's own checkpoint replaced by the user after the save (same name; told by its
    size: file times say nothing once a folder was copied)."""
    out = tmp_path / "out"
    ours = {"stage": "2", "seed": 1, "learning_rate": 2e-5}
    (out).mkdir()
    (out / "croc_run.json").write_text(json.dumps(ours))
    start = time.time() - 3600
    _user_folder(out / "checkpoint-0")
    os.utime(out / "checkpoint-0", (start - 100, start - 100))  # the oldest folder of all
    _checkpoint(out, 1, {**ours, "learning_rate": 1e-5}, start)  # ours (a learning rate changed and accepted)
    _checkpoint(out, 2, {**ours, "seed": 7}, start + 10)  # copied in from another run: another seed
    _checkpoint(out, 3, ours, start + 20)
    (out / "checkpoint-3" / "model.safetensors").write_bytes(b"u" * 80)  # the user's own weights
    _checkpoint(out, 4, None, start + 30)  # a manifest, but no run record: not this run's
    _checkpoint(out, 5, ours, start + 40)
    before = {name: _listing(out / name) for name in ("checkpoint-0", "checkpoint-2", "checkpoint-4")}
    with caplog.at_level(logging.INFO, logger="trainer.checkpoint_io"):
        rotate_checkpoints(out, 1)
        rotate_checkpoints(out, 1)  # the next save: nothing more to say
    assert sorted(path.name for path in out.glob("checkpoint-*")) == [
        "checkpoint-0", "checkpoint-2", "checkpoint-3-rotated", "checkpoint-4", "checkpoint-5"]
    assert {name: _listing(out / name) for name in before} == before
    assert _listing(out / "checkpoint-3-rotated") == [("model.safetensors", 80)]
    assert (out / "checkpoint-3-rotated" / "model.safetensors").read_bytes() == b"u" * 80
    kept = [record.getMessage() for record in caplog.records if "is kept as it is and not counted" in record.message]
    assert len(kept) == 3, kept  # checkpoint-0, -2, -4, each said once
    assert any("checkpoint-0" in line and "no readable croc_manifest.json" in line for line in kept)
    assert any("checkpoint-2" in line and "another run's (it differs in seed)" in line for line in kept)


def test_rotation_never_deletes_outside_the_checkpoint_whatever_its_manifest_lists(tmp_path):
    """A manifest naming `../keep.txt` (edited by hand, or crafted) made rotation unlink that file of output_dir."""
    out = tmp_path / "out"
    ours = {"stage": "2", "seed": 1}
    out.mkdir()
    (out / "croc_run.json").write_text(json.dumps(ours))
    (out / "keep.txt").write_text("the user's\n")
    start = time.time() - 3600
    _checkpoint(out, 1, ours, start)
    manifest = json.loads((out / "checkpoint-1" / MANIFEST).read_text())
    manifest["files"]["../keep.txt"] = {"size": 11, "sha256": "0" * 64}
    (out / "checkpoint-1" / MANIFEST).write_text(json.dumps(manifest))
    os.utime(out / "checkpoint-1" / MANIFEST, (start, start))  # still the older checkpoint
    (out / "checkpoint-1" / "NOTES.txt").write_text("added\n")
    _checkpoint(out, 2, ours, start + 10)
    rotate_checkpoints(out, 1)
    assert (out / "keep.txt").read_text() == "the user's\n"
    assert _listing(out / "checkpoint-1-rotated") == [("NOTES.txt", 6)]


def test_a_save_never_deletes_a_folder_the_user_made_under_its_name(tmp_path):
    """A `checkpoint-3` the user made (no trainer_state.json: not a checkpoint, so left in place at the start) was
    deleted whole when the run saved step 3; a save cut short in place (an earlier version's) is still replaced."""
    out = tmp_path / "out"
    _user_folder(out / "checkpoint-3")
    mine = _listing(out / "checkpoint-3")
    for step in (3, 4):
        (tmp_path / "staging" / f"checkpoint-{step}").mkdir(parents=True)
        (tmp_path / "staging" / f"checkpoint-{step}" / TRAINER_STATE).write_text(json.dumps({"global_step": step}))
    cut = out / "checkpoint-4"
    cut.mkdir()
    (cut / "optimizer.pt").write_bytes(b"half")
    (cut / TRAINER_STATE).write_text('{"global_st')
    promote_checkpoint(tmp_path / "staging" / "checkpoint-3", out / "checkpoint-3")
    promote_checkpoint(tmp_path / "staging" / "checkpoint-4", out / "checkpoint-4")
    assert _listing(out / "checkpoint-3-abandoned") == mine
    assert [name for name, _ in _listing(out / "checkpoint-3")] == [TRAINER_STATE]
    assert json.loads((out / "checkpoint-4" / TRAINER_STATE).read_text()) == {"global_step": 4}
    assert not (out / "checkpoint-4-abandoned").exists()


def test_the_run_card_never_replaces_a_readme_the_user_edited(tmp_path):
    from trainer.run_card_file import CARD_RECORD, RunCard, save_run_card

    folder = tmp_path / "run"
    card = RunCard("---\nlicense: mit\n---\n\n# run\n\nfirst\n")
    assert save_run_card(card, folder) == folder / CARD_NAME and (folder / CARD_RECORD).is_file()
    RunCard("---\nlicense: mit\n---\n\n# run\n\nsecond\n").save(folder / CARD_NAME)  # its own card: rewritten
    assert "second" in (folder / CARD_NAME).read_text()
    with (folder / CARD_NAME).open("a") as file:
        file.write("\n## My evaluation\n\n91.2 on my set\n")
    edited = (folder / CARD_NAME).read_text()
    RunCard("---\nlicense: mit\n---\n\n# run\n\nthird\n").save(folder / CARD_NAME)
    assert (folder / CARD_NAME).read_text() == edited
    assert "third" in (folder / SIDE_CARD_NAME).read_text()
    RunCard("---\nlicense: mit\n---\n\n# run\n\nfourth\n").save(folder / CARD_NAME)  # the side card is the run's
    assert "fourth" in (folder / SIDE_CARD_NAME).read_text() and not (folder / "README.croc-2.md").exists()
    (folder / SIDE_CARD_NAME).write_text("mine too\n")
    RunCard("---\nlicense: mit\n---\n\n# run\n\nfifth\n").save(folder / CARD_NAME)
    assert (folder / SIDE_CARD_NAME).read_text() == "mine too\n"
    assert "fifth" in (folder / "README.croc-2.md").read_text()
    assert (folder / CARD_NAME).read_text() == edited


def _continue(source, target, tiny_model, data, *extra):
    shutil.copytree(source, target)
    return lambda: train_module.main(_argv(target, tiny_model, data, "--max_steps=4",
                                           "--resume_accept_changes=[max_steps]", *extra))


def test_a_continued_run_keeps_a_checkpoint_0_of_the_user_and_rotates_its_own(two_steps, tiny_model, data,
                                                                             tmp_path, capsys):
    """The tester's case: a `checkpoint-0` holding stage-1 weights and notes, older than every checkpoint, was the
    first folder `save_total_limit` deleted ("deleting .../checkpoint-0 (save_total_limit=1)")."""
    run = _continue(two_steps, tmp_path / "rot", tiny_model, data, "--save_total_limit=1")
    out = tmp_path / "rot"
    _user_folder(out / "checkpoint-0")
    shutil.copy(tiny_model / "model.safetensors", out / "checkpoint-0" / "model.safetensors")
    old = time.time() - 7 * 86400
    os.utime(out / "checkpoint-0", (old, old))
    mine = _listing(out / "checkpoint-0")
    capsys.readouterr()
    run()
    log = capsys.readouterr().err
    assert "checkpoint-0 (save_total_limit" not in log
    assert log.count("checkpoint-0 is kept as it is and not counted") == 1
    assert sorted(path.name for path in out.glob("checkpoint-*")) == ["checkpoint-0", "checkpoint-4"]
    assert _listing(out / "checkpoint-0") == mine
    # Its README.md, unedited since the run wrote it, is the run's card: rewritten, nothing written beside it.
    assert "| max_steps | 4 |" in (out / CARD_NAME).read_text() and not (out / SIDE_CARD_NAME).exists()


def test_a_continued_run_keeps_the_section_the_user_wrote_into_its_readme(two_steps, tiny_model, data, tmp_path,
                                                                          capsys):
    """The tester's case: `## My evaluation` appended to a finished run's README.md was gone, unsaid, once the run
    was continued (exit 0)."""
    run = _continue(two_steps, tmp_path / "rd", tiny_model, data)
    out = tmp_path / "rd"
    with (out / CARD_NAME).open("a") as file:
        file.write("\n## My evaluation\n\nVQAv2 71.3 (my script)\n")
    edited = (out / CARD_NAME).read_text()
    capsys.readouterr()
    run()
    log = capsys.readouterr().err
    assert (out / CARD_NAME).read_text() == edited
    assert "| max_steps | 4 |" in (out / SIDE_CARD_NAME).read_text()
    assert f"{out / CARD_NAME} was changed since this run wrote it" in log and SIDE_CARD_NAME in log


def test_a_lora_run_writes_its_card_over_the_template_peft_saves(tiny_model, data, tmp_path):
    """PEFT's `save_pretrained` writes its template README.md ("[More Information Needed]") into output_dir before
    the run writes its card: taken for the user's, it pushed the Croc card aside to README.croc.md and would have
    published the template. The run found the folder without a README.md of the user's when it started: its card."""
    out = tmp_path / "lora"
    train_module.main(_argv(out, tiny_model, data, "--max_steps=1", "--model.use_peft=true"))
    card = (out / CARD_NAME).read_text()
    assert "croc_stage:" in card and "More Information Needed" not in card
    assert not (out / SIDE_CARD_NAME).exists()


def test_a_card_an_earlier_version_wrote_without_a_record_is_the_runs(two_steps, tiny_model, data, tmp_path, capsys):
    """A run resumed across the upgrade that started recording cards: its README.md has no record, yet it is the
    run's Croc card (its `croc_stage`), rewritten, not kept as the user's with the card beside it for good."""
    run = _continue(two_steps, tmp_path / "old", tiny_model, data)
    out = tmp_path / "old"
    (out / ".croc-card.json").unlink()
    # Whether the user wrote into it since cannot be told without a record: its text is kept, hidden, and said.
    earlier = (out / CARD_NAME).read_text() + "\n## Evaluation (hand-written)\n"
    (out / CARD_NAME).write_text(earlier)
    capsys.readouterr()
    run()
    assert "| max_steps | 4 |" in (out / CARD_NAME).read_text() and not (out / SIDE_CARD_NAME).exists()
    err = capsys.readouterr().err
    assert "was changed since this run wrote it" not in err
    assert (out / EARLIER_CARD_NAME).read_text() == earlier
    assert (f"{out / CARD_NAME} is a model card an earlier version of this project wrote, which kept no record of "
            "it, so whether it was edited since cannot be told: this run's card replaces it, and its text as it is "
            f"now is kept in {out / EARLIER_CARD_NAME} (merge a section of yours by hand)") in err


def test_rotation_frees_the_checkpoints_of_a_folder_copied_without_its_file_times(two_steps, tiny_model, data,
                                                                                   tmp_path, capsys):
    """An output_dir copied by a tool that keeps no times, each folder's manifest first (sorted order): every other
    file was newer than its manifest, taken for one the user changed, and rotation kept every checkpoint whole as
    `-rotated` (weights and optimiser state: a full disk at 7B)."""
    out = tmp_path / "copied"
    for source in sorted(two_steps.rglob("*")):
        target = out / source.relative_to(two_steps)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            time.sleep(0.002 if source.name == MANIFEST else 0)  # the manifest older than what follows it
    train_module.main(_argv(out, tiny_model, data, "--max_steps=4", "--resume_accept_changes=[max_steps]",
                            "--save_total_limit=1"))
    assert sorted(path.name for path in out.glob("checkpoint-*")) == ["checkpoint-4"]


def test_an_earlier_card_is_kept_once_and_never_over_another_kept_text(tmp_path):
    """A run that stops before its first save claims the unrecorded card again at its next start: the same text is
    not copied twice, and a different one never replaces what an earlier claim kept."""
    from modeling_croc.publish_folder import keep_earlier_card

    (tmp_path / CARD_NAME).write_text("first")
    assert keep_earlier_card(tmp_path) == keep_earlier_card(tmp_path) == tmp_path / EARLIER_CARD_NAME
    (tmp_path / CARD_NAME).write_text("second")
    assert keep_earlier_card(tmp_path) == tmp_path / ".README.earlier-2.md"
    assert [(tmp_path / name).read_text() for name in (EARLIER_CARD_NAME, ".README.earlier-2.md")] == [
        "first", "second"]
    assert sorted(path.name for path in tmp_path.iterdir()) == [".README.earlier-2.md", EARLIER_CARD_NAME, CARD_NAME]


def test_a_finished_run_rerun_with_nothing_to_train_keeps_no_earlier_card(tiny_model, data, tmp_path, capsys):
    """The card was claimed before the run knew it had nothing to train: a rerun of a finished run with an
    unrecorded card said the card would be replaced and wrote `.README.earlier.md`, where such a rerun writes
    nothing."""
    out = tmp_path / "done"
    argv = _argv(out, tiny_model, data, "--max_steps=1", "--save_strategy=no")
    train_module.main(argv)
    (out / ".croc-card.json").unlink()
    before = _listing(out)
    capsys.readouterr()
    train_module.main(argv)
    err = capsys.readouterr().err
    assert "finished at step 1: nothing to train" in err and "earlier version" not in err
    assert _listing(out) == before and not (out / EARLIER_CARD_NAME).exists()
