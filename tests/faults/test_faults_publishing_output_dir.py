"""What a publishing run takes from output_dir and the model source, and what it refuses before the model loads:
an output_dir holding the run's data, image root or model source; a symbolic link the upload would take; checkpoint
copies and run records at any depth (kept local); a local path in the JSON a save carries over from the source; NaN
in the source's weights. A refused dry run leaves the earlier dry run's files as they were. (The rest of the trainer's
publishing: test_faults_publishing.py.)"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from publish_cases import run_argv as _argv
from publish_cases import snapshot as _snapshot
from publish_cases import write_data as _data
from run_cases import cli_error as _cli_error

from trainer import croc_trainer
from trainer import hub as trainer_hub
from trainer import train as train_module
from trainer.cli import ConfigError

LOCAL_RECORDS = ("training_args.bin", "data_report.json", "rejects.jsonl", "croc_run.json")


# --- what the upload set takes from output_dir and the model source (issue: publishing, items 1-6) ----------------


@pytest.fixture(scope="module")
def published(tiny_model, tmp_path_factory):
    """One finished 1-step run with its checkpoint-1 and a dry run's folder; the trainer publishes again. A test that
    changes output_dir undoes its change."""
    root = tmp_path_factory.mktemp("published")
    argv = _argv(root / "out", tiny_model, _data(root / "data"), f"--hub_dry_run={root / 'dry'}",
                 "--save_strategy=steps", "--save_steps=1")
    return train_module.main(argv)


def _dry_run_again(trainer):
    """Publish the finished run into its dry run's folder again, as the end of a rerun does."""
    out = Path(trainer.args.output_dir)
    return trainer_hub.hub_dry_run(trainer, trainer.args.hub_dry_run, {"output_dir": str(out)})


@pytest.mark.parametrize("source", ["data file", "image folder", "model"])
def test_an_output_dir_holding_the_runs_sources_is_refused_before_the_model_loads(source, tiny_model, tmp_path,
                                                                                 monkeypatch, no_model_load):
    """A publish uploads output_dir's files: an output_dir that held the run's data (rows and images) or its base
    model wrote every JSON file and image of the data into the dry run's folder."""
    project = tmp_path / "project"
    data, model, extra = _data(project), tiny_model, []
    if source == "model":
        model = project / "base"
        shutil.copytree(tiny_model, model)
        data = _data(tmp_path / "data")
        named = f"contains the model.name_or_path {model}"
    elif source == "image folder":
        data = _data(tmp_path / "data")
        extra = [f"--data.image_root={project}"]
        named = f"is the data.image_root {project}"
    else:
        named = f"contains the data.path {data}"
    before = _snapshot(tmp_path)
    message = _cli_error(_argv(project, model, data, f"--hub_dry_run={tmp_path / 'dry'}", *extra), monkeypatch)
    assert message.startswith(f"configuration error: output_dir {project} {named}: a publish uploads the files of "
                              "output_dir"), message
    assert _snapshot(tmp_path) == before


def test_an_output_dir_inside_the_data_folder_may_publish(tiny_model, tmp_path):
    """Only an output_dir holding a source uploads it: one inside the data folder holds none of it."""
    from trainer.resolve import resolve_config

    data = _data(tmp_path / "data")
    argv = _argv(tmp_path / "data" / "runs" / "out", tiny_model, data, f"--hub_dry_run={tmp_path / 'dry'}")
    model_args, data_args, args, _ = resolve_config(argv)
    trainer_hub.check_publishing_arguments(args, trainer_hub.run_folders(model_args, data_args, args))


def test_a_link_in_output_dir_is_refused_before_the_model_loads(tiny_model, tmp_path, monkeypatch, no_model_load):
    """`ln -s /abs/private/notes.txt OUT/NOTES.md`: the upload set followed the link and published the private
    file."""
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "notes.txt").write_text("private notes")
    out = tmp_path / "out"
    out.mkdir()
    (out / "NOTES.md").symlink_to(tmp_path / "private" / "notes.txt")
    message = _cli_error(_argv(out, tiny_model, _data(tmp_path / "data"), f"--hub_dry_run={tmp_path / 'dry'}"),
                         monkeypatch)
    assert message == (f"configuration error: output_dir {out} holds the symbolic link NOTES.md, which a publish "
                       "would upload: a publish never follows a link; replace the link by the file it points to, or "
                       "remove it (nothing was uploaded)")
    assert not (tmp_path / "dry").exists()


def test_a_link_made_in_output_dir_during_the_run_is_refused_at_publish_time(published, tmp_path):
    """A relative link made while the run trained: followed, it published the private file (or, dangling from the
    staging folder, stopped the run with a scanner message about an unreadable file)."""
    out, dry = Path(published.args.output_dir), Path(published.args.hub_dry_run)
    (tmp_path / "private.txt").write_text("private notes")
    link = out / "NOTES.md"
    link.symlink_to(os.path.relpath(tmp_path / "private.txt", out))
    before = _snapshot(dry)
    try:
        with pytest.raises(ConfigError) as refused:
            _dry_run_again(published)
    finally:
        link.unlink()
    assert str(refused.value).startswith(f"output_dir {out} holds the symbolic link NOTES.md, which a publish "
                                         "would upload"), refused.value
    assert _snapshot(dry) == before
    assert "NOTES.md" not in trainer_hub.files_to_upload(out)


def test_a_refused_dry_run_leaves_the_earlier_dry_runs_files_as_they_were(published):
    """The folder was prepared (the earlier dry run's files removed) before the scan: a refused rerun left it holding
    only its marker. The refusal named the staging folder, gone by then, rather than output_dir."""
    out, dry = Path(published.args.output_dir), Path(published.args.hub_dry_run)
    before = _snapshot(dry)
    assert "model.safetensors" in before
    notes = out / "NOTES.md"
    notes.write_text(f"note: data is at {out.parent / 'data'}\n")
    try:
        with pytest.raises(ConfigError) as refused:
            _dry_run_again(published)
    finally:
        notes.unlink()
    assert _snapshot(dry) == before
    assert str(refused.value).startswith(f"refusing to publish {out}: an absolute local path in NOTES.md (byte 17)"), \
        refused.value
    assert not list(out.glob(f"{trainer_hub.STAGING_PREFIX}*"))


def test_a_checkpoint_copied_into_a_folder_of_output_dir_stays_local(published):
    """`cp -r OUT/checkpoint-1 OUT/best-step1`: the copy went up with optimizer.pt, rng_state.pth, training_args.bin,
    the run record and the data report, which the local-only patterns matched at the top only."""
    out = Path(published.args.output_dir)
    shutil.copytree(out / "checkpoint-1", out / "best-step1")
    (out / "best-step1" / "croc_manifest.json").unlink()  # recognised by the Trainer's files too
    shutil.copytree(out / "checkpoint-1", out / "kept" / "step1")
    (out / "notes" / "run1").mkdir(parents=True)
    for name in LOCAL_RECORDS:  # an older run's records, copied without its checkpoint
        shutil.copy(out / name, out / "notes" / "run1" / name)
    try:
        uploaded = trainer_hub.files_to_upload(out)
    finally:
        for folder in ("best-step1", "kept", "notes"):
            shutil.rmtree(out / folder)
    assert not [name for name in uploaded if name.startswith(("best-step1/", "kept/", "notes/"))], uploaded
    assert "model.safetensors" in uploaded


def test_a_local_path_in_the_model_sources_config_is_refused_before_the_model_loads(tiny_model, tmp_path,
                                                                                   monkeypatch, no_model_load):
    """A stray `mm_vision_tower` path in the source's config.json was found only after training, and "remove it from
    the file" could not be followed: every run writes config.json again from the source."""
    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "mm_vision_tower": "/mnt/lab/checkpoints/clip"}))
    data = _data(tmp_path / "data")
    before = _snapshot(tmp_path)
    message = _cli_error(_argv(tmp_path / "out", base, data, f"--hub_dry_run={tmp_path / 'dry'}"), monkeypatch)
    assert message.startswith(f"configuration error: model.name_or_path folder {base}: config.json holds an absolute "
                              "local path"), message
    assert message.endswith("'/mnt/lab/checkpoints/clip'; a publish would carry it into the upload: remove it there "
                            "(nothing was written or uploaded)"), message
    assert _snapshot(tmp_path) == before


def test_the_source_scan_reads_what_a_save_carries_not_what_it_drops(tiny_model, tmp_path):
    """Hub tokenizer configs hold their uploader's cache path in `special_tokens_map_file`, which a save does not
    write again, and a CLIP part's tokenizer files are never used: neither refused a publish any more. A path in a
    file a save does carry (the part's image processor config) still is."""
    base, clip = tmp_path / "base", tmp_path / "clip"
    shutil.copytree(tiny_model, base)
    tokenizer_config = json.loads((base / "tokenizer_config.json").read_text())
    uploader_cache = "/home/suraj/.cache/huggingface/transformers/18a5.special_tokens_map.json"
    (base / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config,
                                                             "special_tokens_map_file": uploader_cache}))
    clip.mkdir()
    (clip / "tokenizer_config.json").write_text(json.dumps({"note": "/home/suraj/clip"}))
    (clip / "preprocessor_config.json").write_text(json.dumps({"crop_size": 224}))
    args = SimpleNamespace(push_to_hub=False, hub_dry_run=str(tmp_path / "dry"), output_dir=str(tmp_path / "out"),
                           hub_token=None, resume_from_checkpoint=None)
    sources = {"model.name_or_path": str(base), "model.vision_tower": str(clip)}
    trainer_hub.check_publishing_arguments(args, sources)
    (clip / "preprocessor_config.json").write_text(json.dumps({"crop_size": 224, "note": "/home/suraj/clip"}))
    with pytest.raises(ConfigError, match=rf"^model.vision_tower folder {re.escape(str(clip))}: "
                                          "preprocessor_config.json holds an absolute local path"):
        trainer_hub.check_publishing_arguments(args, sources)


def test_a_model_source_holding_nan_is_refused_before_the_first_step(tiny_model, tmp_path, monkeypatch):
    """NaN in the source's weights was found at the final save, after every step, and the message said to rerun,
    which started over into the same end."""
    from safetensors.torch import load_file, save_file

    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    weights = load_file(base / "model.safetensors")
    weights["vtr_head.proj.weight"][0, 0] = float("nan")
    save_file(weights, base / "model.safetensors", metadata={"format": "pt"})

    def no_step(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(croc_trainer.CrocTrainer, "train", no_step)
    message = _cli_error(_argv(tmp_path / "out", base, _data(tmp_path / "data")), monkeypatch)
    assert message == (f"configuration error: the model source {base} holds NaN or infinite values (first: "
                       "vtr_head.proj.weight); training cannot start from it: use a model folder with finite weights")
    assert not (tmp_path / "out").exists()
