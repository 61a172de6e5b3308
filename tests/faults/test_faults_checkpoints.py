"""Issue 13, kills during a save: a real stage-1.5 run (`trainer.train.main` in its own process) is killed with SIGKILL
before, during and after each file of a checkpoint and its final rename, then started again with the same command.
Every time it resumes from the newest complete checkpoint, without a folder deleted by hand, onto the loss curve of an
uninterrupted run: identical losses, weights, data counts and rejects file. The runs are forked from one driver
process (tests/faults/kill_driver.py), so each costs its training, not a Python start-up.

The data holds one row whose image does not decode, so the replaced-row counts must survive the kill too."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fault_cases import corrupt_jpeg, image_row, text_row, write_good_image
from safetensors.torch import load_file

from trainer.cli import ConfigError

pytestmark = pytest.mark.slow  # minutes of a worker: run first (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
STAGE1_5 = REPO / "trainer" / "configs" / "cpu_tiny" / "stage1_5.yaml"
FILES = ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json")
KILLED_SAVE = 2  # the save of checkpoint-2 (the last step's) is killed; checkpoint-1 is complete by then
# Where a run is killed: (file, moment) of the kill, and every (file, moment) of the issue that point is. Nothing is
# written between one file and the next in the last three pairs, so "after X" and "before the next" are one point.
KILL_POINTS = [
    ("model.safetensors", "before", []),
    ("model.safetensors", "during", []),
    ("model.safetensors", "after", []),  # then the processor files and training_args.bin
    ("optimizer.pt", "before", []),
    ("optimizer.pt", "during", []),
    ("optimizer.pt", "after", [("scheduler.pt", "before")]),
    ("scheduler.pt", "during", []),
    ("scheduler.pt", "after", [("rng_state.pth", "before")]),
    ("rng_state.pth", "during", []),
    ("rng_state.pth", "after", [("trainer_state.json", "before")]),
    ("trainer_state.json", "during", []),
    ("trainer_state.json", "after", []),  # then data_report.json and the flush to disk
    ("rename", "before", []),
    ("rename", "after", []),
    ("checkpoint-2", "legacy", []),  # a complete checkpoint-2 damaged as a save without staging would leave it
]
SCENARIOS = [(file, moment) for file, moment, _ in KILL_POINTS]
COVERED = {(file, moment) for file, moment, also in KILL_POINTS for file, moment in [(file, moment), *also]}
assert {(file, moment) for file in FILES for moment in ("before", "during", "after")} <= COVERED


@pytest.fixture(scope="module")
def kills(tmp_path_factory, tiny_model) -> dict:
    root = tmp_path_factory.mktemp("kills")
    colours = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (240, 200, 30), (140, 60, 180)]
    rows = []
    for i, colour in enumerate(colours):
        write_good_image(root / "data" / f"{i}.png", colour)
        rows.append(image_row(f"img-{i}", f"{i}.png", f"A shape of colour {i}."))
    (root / "data" / "corrupt.jpg").write_bytes(corrupt_jpeg())
    rows.insert(3, image_row("corrupt", "corrupt.jpg"))
    # 8 rows, 4 per step: the 2 steps are one epoch, so the corrupt row is asked for whatever the order.
    rows += [text_row(f"text-{i}", f"{4 + i}.") for i in range(2)]
    (root / "data" / "rows.json").write_text(json.dumps(rows))
    argv = [str(STAGE1_5), f"--model.name_or_path={tiny_model}", f"--data.path={root / 'data' / 'rows.json'}",
            "--disable_tqdm=true", "--per_device_train_batch_size=2", "--global_batch_size=4", "--max_steps=2",
            "--save_strategy=steps", "--save_steps=1", "--data.max_reject_fraction=0.5", "--logging_steps=1"]
    scenarios = [{"name": f"{file}-{moment}", "out": str(root / f"{file}-{moment}"), "file": file,
                  "moment": moment, "step": KILLED_SAVE} for file, moment in SCENARIOS]
    spec = {"argv": argv, "reference": str(root / "reference"), "scenarios": scenarios,
            "results": str(root / "results.json")}
    (root / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("kill_driver.py")), str(root / "spec.json")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return {"root": root, "results": json.loads((root / "results.json").read_text())}


def _curve(folder: Path) -> dict[int, dict]:
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry for entry in history if "loss" in entry}


def test_the_reference_run_saves_every_step_and_replaces_the_unreadable_row(kills):
    reference = kills["root"] / "reference"
    assert kills["results"]["reference"]["exit_code"] == 0
    assert sorted(p.name for p in reference.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert not (reference / ".checkpoint-staging").exists()
    assert sorted(_curve(reference)) == [1, 2]
    report = json.loads((reference / "data_report.json").read_text())
    assert report["replaced"]["unreadable_image"] >= 1  # the corrupt row was asked for, and replaced


@pytest.mark.parametrize("file, moment", SCENARIOS, ids=[f"{file}-{moment}" for file, moment in SCENARIOS])
def test_a_kill_during_a_save_resumes_onto_the_same_curve(kills, file, moment):
    result = kills["results"][f"{file}-{moment}"]
    out = kills["root"] / f"{file}-{moment}"
    reference = kills["root"] / "reference"
    assert result["first"]["killed"], result["first"]["log"][-3000:]
    complete = moment == "legacy" or (file == "rename" and moment == "after")
    # What the kill left: checkpoint-2 only once renamed (complete); otherwise a staging folder, never a partial
    # checkpoint-2 (the legacy case damages the complete one by hand, as an unstaged save would have left it).
    assert result["after_kill"]["checkpoints"] == (["checkpoint-1", "checkpoint-2"] if complete else ["checkpoint-1"])
    if complete:  # the staging folder, if still there, is empty
        assert not result["after_kill"]["staging"]
    else:
        assert result["after_kill"]["staging"] == ["checkpoint-2"]

    second = result["second"]
    assert second["exit_code"] == 0, second["log"][-4000:]
    resumed_from = "checkpoint-2" if file == "rename" and moment == "after" else "checkpoint-1"
    assert f"resuming from {out / resumed_from}" in second["log"]
    if moment == "legacy":
        assert f"skipping checkpoint {out / 'checkpoint-2'}: no readable trainer_state.json" in second["log"]
    elif not complete:
        assert "removing the unfinished checkpoint save" in second["log"]
    assert result["after_resume"] == {"checkpoints": ["checkpoint-1", "checkpoint-2"], "staging": None}

    # Identical losses at every step, identical final weights, counts and rejects file.
    expected, actual = _curve(reference), _curve(out)
    assert sorted(actual) == sorted(expected) == [1, 2]
    for step, entry in expected.items():
        for key in ("loss", "lm_loss", "vtr_loss", "grad_norm", "learning_rate", "pool_utilisation"):
            assert actual[step][key] == entry[key], (step, key)
    want, got = load_file(str(reference / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert set(want) == set(got) and all(torch.equal(got[name], tensor) for name, tensor in want.items())
    report = json.loads((out / "data_report.json").read_text())
    want_report = json.loads((reference / "data_report.json").read_text())
    assert (report["replaced"], report["rows_seen"]) == (want_report["replaced"], want_report["rows_seen"])
    assert (out / "rejects.jsonl").read_text() == (reference / "rejects.jsonl").read_text()


def test_rerunning_a_finished_run_trains_no_extra_step(tiny_model, tmp_path):
    """Stopped while writing its final folder, a run whose last checkpoint is at max_steps resumes with nothing left
    to train. (The Trainer alone takes one step past max_steps when max_steps ends mid-epoch: 2 of 3 steps here.)"""
    from trainer import train as train_module

    for i in range(6):
        write_good_image(tmp_path / "data" / f"{i}.png", (40 * i, 90, 160))
    rows = [image_row(f"img-{i}", f"{i}.png") for i in range(6)] + [text_row(f"text-{i}") for i in range(6)]
    (tmp_path / "data" / "rows.json").write_text(json.dumps(rows))
    argv = [str(STAGE1_5), f"--model.name_or_path={tiny_model}", f"--data.path={tmp_path / 'data' / 'rows.json'}",
            f"--output_dir={tmp_path / 'out'}", "--disable_tqdm=true", "--per_device_train_batch_size=4",
            "--global_batch_size=4", "--max_steps=2", "--save_strategy=steps", "--save_steps=2"]
    first = train_module.main(argv)
    weights = load_file(str(tmp_path / "out" / "model.safetensors"))
    again = train_module.main(argv)  # resumes from checkpoint-2 = max_steps
    assert first.state.global_step == again.state.global_step == 2
    assert sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*")) == ["checkpoint-2"]
    final = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert all(torch.equal(final[name], tensor) for name, tensor in weights.items())


def test_the_best_checkpoint_is_recorded_where_it_is_renamed_to(tmp_path):
    """With evaluation picking a best checkpoint, the Trainer records the staged path; it must name the final one."""
    from types import SimpleNamespace

    from transformers.trainer_callback import TrainerState

    from trainer.croc_trainer import STAGING_DIR, CrocTrainer

    staging = tmp_path / STAGING_DIR
    holder = SimpleNamespace(state=TrainerState(best_model_checkpoint=str(staging / "checkpoint-4")))
    assert CrocTrainer._fix_best_checkpoint_path(holder, staging, tmp_path)
    assert holder.state.best_model_checkpoint == str(tmp_path / "checkpoint-4")
    holder.state.best_model_checkpoint = str(tmp_path / "checkpoint-2")  # an earlier, already renamed one
    assert not CrocTrainer._fix_best_checkpoint_path(holder, staging, tmp_path)
    assert holder.state.best_model_checkpoint == str(tmp_path / "checkpoint-2")


@pytest.mark.parametrize("saves", ["no", "older", "damaged"])
def test_rerunning_a_finished_run_without_a_last_checkpoint_trains_nothing(tiny_model, tmp_path, saves, capsys):
    """A finished run that keeps no checkpoint (`save_strategy: "no"`), or whose newest intact one is older than its
    last step (a Ctrl-C's; the last one damaged since), would train again from the start or from there: the rerun of
    the same command stops at once, writing nothing, and says so without claiming to resume; another configuration
    in that folder is still refused."""
    from trainer import train as train_module

    for i in range(6):
        write_good_image(tmp_path / "data" / f"{i}.png", (40 * i, 90, 160))
    rows = [image_row(f"img-{i}", f"{i}.png") for i in range(6)] + [text_row(f"text-{i}") for i in range(6)]
    (tmp_path / "data" / "rows.json").write_text(json.dumps(rows))
    out = tmp_path / "out"
    argv = [str(STAGE1_5), f"--model.name_or_path={tiny_model}", f"--data.path={tmp_path / 'data' / 'rows.json'}",
            f"--output_dir={out}", "--disable_tqdm=true", "--per_device_train_batch_size=4",
            "--global_batch_size=4", "--max_steps=3"]
    argv += ["--save_strategy=no"] if saves == "no" else ["--save_strategy=steps", "--save_steps=2"]
    assert train_module.main(argv).state.global_step == 3
    if saves == "older":  # the newest checkpoint older than the last step (a Ctrl-C's, in a run saving none)
        shutil.rmtree(out / "checkpoint-3")
    if saves == "damaged":  # the last one fails its manifest: the newest intact one is older
        (out / "checkpoint-3" / "croc_manifest.json").write_text("")
    expected = {"no": [], "older": ["checkpoint-2"], "damaged": ["checkpoint-2", "checkpoint-3"]}[saves]
    assert sorted(path.name for path in out.glob("checkpoint-*")) == expected
    written = {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()}
    capsys.readouterr()
    assert train_module.main(argv) is None
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()} == written
    log = capsys.readouterr().err
    assert f"{out} holds this run, finished at step 3: nothing to train" in log
    assert "resuming" not in log
    if saves == "damaged":
        assert f"skipping checkpoint {out / 'checkpoint-3'}: unreadable croc_manifest.json" in log
    # Another configuration is refused: against the checkpoint it would resume, or, with none, against the finished
    # run's folder it would overwrite.
    refusal = ("cannot continue with this configuration: seed 0 -> 7" if saves != "no" else
               r"holds another run \(finished\), which differs from this one in seed 0 -> 7")
    with pytest.raises(ConfigError, match=refusal):
        train_module.main(argv + ["--seed=7"])


def test_a_rolled_back_run_names_its_own_newest_checkpoint(tmp_path):
    """A run resumed from an older checkpoint (a roll-back past a loss spike) leaves the abandoned, higher-numbered
    checkpoints in output_dir: a stop (divergence, full disk) names the checkpoint this run wrote last, or the one it
    resumed from, never the abandoned branch's highest step."""
    from types import SimpleNamespace

    from trainer.croc_trainer import CrocTrainer

    for step in (10, 20, 30):
        (tmp_path / f"checkpoint-{step}").mkdir()
    args = SimpleNamespace(output_dir=str(tmp_path), resume_from_checkpoint=str(tmp_path / "checkpoint-10"),
                           auto_resume=True)
    holder = SimpleNamespace(args=args)
    assert "is " + str(tmp_path / "checkpoint-10") + " (rerunning the same command" in \
        CrocTrainer.last_checkpoint_message(holder)
    (tmp_path / "checkpoint-15").mkdir()
    holder._last_written_checkpoint = str(tmp_path / "checkpoint-15")
    message = CrocTrainer.last_checkpoint_message(holder)
    assert f"is {tmp_path / 'checkpoint-15'} (continue with --resume_from_checkpoint={tmp_path / 'checkpoint-15'}" \
        in message and "checkpoint-30" not in message
