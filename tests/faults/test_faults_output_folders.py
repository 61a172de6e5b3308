"""Issue 20, what a run reads back from its output folder and writes into it: checkpoint manifests (a damaged newest
checkpoint is skipped for the newest intact one, a malformed manifest makes a checkpoint not intact, never a
crash), files that would run code when unpickled, weights that do not fit the model (one line); saves cut short or
stopped by a full disk, which leave the checkpoints as they were and are written again by the rerun; and output
folders holding someone else's model or the user's data, refused before anything is written."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import zipfile

import pytest
from run_cases import checkpointed_argv as _argv
from run_cases import checkpoints_only as _checkpoints_only
from run_cases import cli_exit, curve
from run_cases import listing as _listing

from trainer import train as train_module
from trainer.checkpoint_io import MANIFEST, checkpoint_problem, write_manifest

# --- manifests and unpickling ---------------------------------------------------------------------------------


def test_a_truncated_newest_checkpoint_is_skipped_for_the_newest_intact_one(two_steps, tiny_model, data, tmp_path,
                                                                            capsys):
    out = _checkpoints_only(two_steps, tmp_path / "run")
    weights = out / "checkpoint-2" / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 2])  # a copy cut short, a full disk
    train_module.main(_argv(out, tiny_model, data, "--max_steps=2"))
    log = capsys.readouterr().err
    assert (f"skipping checkpoint {out / 'checkpoint-2'}: model.safetensors is {size // 2:,} bytes, the manifest says "
            f"{size:,} (truncated or changed)") in log
    assert f"resuming from {out / 'checkpoint-1'}" in log
    assert curve(out)[2]["loss"] == curve(two_steps)[2]["loss"]  # step 2 trained again, to the same loss


@pytest.mark.parametrize("damage", ["changed_bytes", "added_file", "no_manifest"])
def test_a_checkpoint_that_fails_its_manifest_is_not_intact(two_steps, tmp_path, damage):
    checkpoint = tmp_path / "checkpoint-2"
    shutil.copytree(two_steps / "checkpoint-2", checkpoint)
    assert checkpoint_problem(checkpoint) is None
    if damage == "changed_bytes":
        state = checkpoint / "scheduler.pt"
        data = bytearray(state.read_bytes())
        data[-30] ^= 0xFF  # same size, one byte different
        state.write_bytes(bytes(data))
        expected = "scheduler.pt does not match its SHA-256 in the manifest (changed after the save)"
    elif damage == "added_file":
        (checkpoint / "extra.pt").write_bytes(b"")
        expected = "extra.pt is not in its manifest (added after the save)"
    else:
        (checkpoint / MANIFEST).unlink()
        expected = f"no {MANIFEST} (written by an earlier version of this project, or not by it)"
    assert checkpoint_problem(checkpoint) == expected


@pytest.mark.parametrize("entry", ["size as text", "no size", "null entry", "files not a mapping"])
def test_a_malformed_manifest_entry_makes_the_checkpoint_not_intact_not_a_crash(two_steps, tmp_path, entry):
    checkpoint = tmp_path / "checkpoint-2"
    shutil.copytree(two_steps / "checkpoint-2", checkpoint)
    manifest = json.loads((checkpoint / MANIFEST).read_text())
    name = next(iter(manifest["files"]))
    if entry == "size as text":
        manifest["files"][name]["size"] = str(manifest["files"][name]["size"])
    elif entry == "no size":
        del manifest["files"][name]["size"]
    elif entry == "null entry":
        manifest["files"][name] = None
    else:
        manifest["files"] = ["not", "a", "mapping"]
    (checkpoint / MANIFEST).write_text(json.dumps(manifest))
    assert checkpoint_problem(checkpoint).startswith(f"unreadable {MANIFEST}")


def test_a_renamed_checkpoint_is_not_taken_for_a_later_step(two_steps, tmp_path):
    renamed = tmp_path / "checkpoint-5"
    shutil.copytree(two_steps / "checkpoint-1", renamed)
    assert checkpoint_problem(renamed) == "it is named checkpoint-5 but holds step 1 (renamed?)"


@pytest.mark.parametrize("kind", ["file", "link"])
def test_a_staging_path_that_is_not_a_folder_is_removed_without_following_it(tmp_path, kind):
    from trainer.checkpoint_io import STAGING_DIR, discard_staging

    kept = tmp_path / "users_folder"
    kept.mkdir()
    (kept / "precious.txt").write_text("keep me")
    staging = tmp_path / "run" / STAGING_DIR
    staging.parent.mkdir()
    staging.write_text("x") if kind == "file" else staging.symlink_to(kept)
    discard_staging(tmp_path / "run")
    assert not staging.exists() and not staging.is_symlink()
    assert (kept / "precious.txt").read_text() == "keep me"


class _Payload:
    """Unpickling this runs code: it creates the file named below."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_that_would_run_code_is_refused_even_with_a_matching_manifest(two_steps, tmp_path, tiny_model, data,
                                                                               monkeypatch, capsys, no_model_load):
    """A DeepSpeed shard is loaded by a full unpickler: a crafted one (with the manifest rewritten to match, as an
    attacker with write access could) is refused before anything unpickles it, and its code never runs."""
    out = _checkpoints_only(two_steps, tmp_path / "run")
    marker = tmp_path / "the-payload-ran"
    shard = out / "checkpoint-2" / "global_step2" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    shard.parent.mkdir()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # torch.save's zip layout, with a code-running data.pkl
        archive.writestr("archive/data.pkl", pickle.dumps({"optimizer_state_dict": _Payload(str(marker))}))
        archive.writestr("archive/version", "3\n")
    shard.write_bytes(buffer.getvalue())
    write_manifest(out / "checkpoint-2")
    problem = checkpoint_problem(out / "checkpoint-2")
    assert problem is not None and problem.startswith(f"{shard.relative_to(out / 'checkpoint-2')} does not load as "
                                                      "plain data"), problem
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2",
                                     f"--resume_from_checkpoint={out / 'checkpoint-2'}"), monkeypatch, capsys)
    assert status == 1 and "cannot be resumed" in message and "does not load as plain data" in message
    assert not marker.exists()


def test_checkpoints_that_all_fail_are_not_rotated_away_by_a_fresh_start(two_steps, tiny_model, data, tmp_path,
                                                                         monkeypatch, capsys, no_model_load):
    out = _checkpoints_only(two_steps, tmp_path / "run")
    for folder in out.glob("checkpoint-*"):
        (folder / MANIFEST).unlink()
    before = _listing(out)
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2"), monkeypatch, capsys)
    assert status == 1 and message.startswith(f"configuration error: output_dir {out} holds checkpoints but none can "
                                              "be resumed (checkpoint-2: no croc_manifest.json"), message
    assert _listing(out) == before


# Named here (the family specs are imported inside the tests, not at collection); the test below keeps it whole.
CHECKPOINT_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "llava_onevision1_5", "qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe",
                       "glm4v", "glm46v", "gemma3", "gemma4", "paligemma", "llava_next", "mistral3", "internvl",
                       "smolvlm", "idefics3", "lfm2_vl")


def test_the_checkpoint_round_trip_covers_every_family():
    """A family left out of `CHECKPOINT_FAMILIES` (Gemma 4 was) has its resume unchecked against the renames."""
    from croc_testing.family_specs import SPECS_BY_NAME

    assert sorted(CHECKPOINT_FAMILIES) == sorted(SPECS_BY_NAME)


@pytest.mark.parametrize("family", CHECKPOINT_FAMILIES)
def test_a_checkpoint_of_every_family_loads_back_into_its_model(family, tmp_path):
    """A resume reads a checkpoint's weights back through the model's own renames: a key they send to no parameter
    keeps its name when the model has it, as transformers' loading does. Qwen2.5-VL's legacy `^model` rename sent
    the pool's `model.prompt_pool.weight` into `model.language_model`, so every Qwen2.5-VL resume was refused
    ("does not match the model"). Qwen3.5-MoE's `save_pretrained` splits its fused experts into one tensor per
    expert, which a resume merges back as transformers' loading does (every resume raised NotImplementedError).
    LLaVA-OneVision-1.5's is written under `model.model.*`, which only transformers' legacy renames read back (every
    resume was refused)."""
    import torch

    from croc_testing.family_specs import SPECS_BY_NAME
    from trainer.checkpoint_io import load_weights_into

    spec = SPECS_BY_NAME[family]
    # A stage-1.5 model (the pool and the VTR head training): the keys a resume must not send elsewhere, now that the
    # legacy renames (`^model` into the language model for Qwen2.5-VL) apply.
    spec.build(seed=0, croc_pretraining=True).save_pretrained(tmp_path)
    saved, model = spec.build(seed=0, croc_pretraining=True).state_dict(), spec.build(seed=1, croc_pretraining=True)
    load_weights_into(model, tmp_path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name


def test_a_qwen3_vl_moe_checkpoint_with_transposed_experts_loads_back_as_transformers_loads_it(tmp_path):
    """Qwen3-VL-MoE's conversion mapping transposes an expert tensor whose shape is the transpose of the model's (its
    checkpoints exist in both layouts): a resume refused every mapping with converters (a NotImplementedError
    traceback), and must transpose such a tensor, not load it as it is."""
    import safetensors.torch
    import torch

    from croc_testing.family_specs import SPECS_BY_NAME
    from trainer.checkpoint_io import load_weights_into

    spec = SPECS_BY_NAME["qwen3_vl_moe"]
    saved = spec.build(seed=0).state_dict()
    experts = [name for name in saved if name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj"))]
    assert experts and all(saved[name].shape[1] != saved[name].shape[2] for name in experts)
    flipped = {name: tensor.transpose(1, 2).contiguous() if name in experts else tensor.contiguous()
               for name, tensor in saved.items() if name != "lm_head.weight" or not spec.tied_head}
    safetensors.torch.save_file(flipped, str(tmp_path / "model.safetensors"))
    model = spec.build(seed=1)
    load_weights_into(model, tmp_path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name


def test_a_qwen3_5_moe_checkpoint_whose_experts_do_not_merge_is_refused_in_one_line(tmp_path):
    """A Qwen3.5-MoE checkpoint holds its experts one tensor per expert, merged on resume: one expert's `gate_proj`
    gone (its `up_proj` there) made the merge's torch.cat raise a RuntimeError the trainer passed on as a traceback,
    where weights of another shape are refused in one line. Now the "checkpoint ... does not match the model" line
    that `CrocTrainer._load_from_checkpoint` reports as a configuration error, naming the parameter."""
    import safetensors.torch

    from croc_testing.family_specs import SPECS_BY_NAME
    from trainer.checkpoint_io import load_weights_into

    spec = SPECS_BY_NAME["qwen3_5_moe"]
    spec.build(seed=0).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    state = safetensors.torch.load_file(weights)
    del state["model.language_model.layers.0.mlp.experts.1.gate_proj.weight"]
    safetensors.torch.save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError) as raised:
        load_weights_into(spec.build(seed=1), tmp_path)
    message = str(raised.value)
    assert message.startswith(f"checkpoint {tmp_path} does not match the model: its tensors for "
                              "model.language_model.layers.0.mlp.experts.gate_up_proj do not convert"), message
    assert "\n" not in message


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_a_checkpoint_whose_weights_do_not_fit_the_model_is_refused_in_one_line(two_steps, tiny_model, data,
                                                                                 tmp_path, monkeypatch, capsys, lora):
    """Weights of other shapes than the model's (a QLoRA checkpoint of computation 3 holds its trained projector as
    packed 4-bit tensors, which this version loads in full precision): PyTorch's size-mismatch traceback, after the
    model loaded. Now one line naming the checkpoint."""
    import safetensors.torch
    import torch

    extra = ("--model.use_peft=true", "--model.lora_r=4", "--model.lora_dropout=0") if lora else ()
    source = two_steps
    if lora:
        source = tmp_path / "lora_done"
        train_module.main(_argv(source, tiny_model, data, "--max_steps=2", *extra))
    out = tmp_path / "run"
    shutil.copytree(source / "checkpoint-1", out / "checkpoint-1")
    shutil.copy(source / "checkpoint-1" / "croc_run.json", out / "croc_run.json")
    weights = out / "checkpoint-1" / ("adapter_model.safetensors" if lora else "model.safetensors")
    state = safetensors.torch.load_file(weights)
    name = next(key for key in state if "multi_modal_projector" in key and key.endswith("linear_1.weight"))
    state[name] = torch.zeros(state[name].numel() // 2, 1, dtype=torch.uint8)  # a packed 4-bit weight's shape
    safetensors.torch.save_file(state, weights, metadata={"format": "pt"})
    write_manifest(out / "checkpoint-1")
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2", *extra), monkeypatch, capsys)
    assert status == 1 and message.startswith(f"configuration error: {out / 'checkpoint-1'} cannot be resumed: its "
                                              "weights do not fit this model (Error(s) in loading state_dict"), message
    assert "size mismatch" in message and "\n" not in message


# --- saves cut short ------------------------------------------------------------------------------------------


def test_a_final_save_cut_short_is_rewritten_by_the_rerun_not_refused(two_steps, tiny_model, data, tmp_path):
    """The run's record is written when it starts: a kill during the final save leaves a folder known as this run's,
    which the same command resumes (from its last checkpoint) and completes."""
    out = tmp_path / "run"
    shutil.copytree(two_steps, out)
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # the final save, killed half-way
    train_module.main(_argv(out, tiny_model, data, "--max_steps=2"))
    assert weights.stat().st_size == (two_steps / "model.safetensors").stat().st_size
    assert json.loads((out / "croc_run.json").read_text())["status"] == "finished"


def test_a_lora_merge_cut_short_is_written_again_by_the_rerun(tiny_model, data, tmp_path, monkeypatch):
    """A LoRA run killed while it writes `<output_dir>-merged` (after the final folder): the half-written merge is
    this run's, so rerunning the same command writes it again, whole, instead of refusing it as someone else's."""
    import safetensors.torch

    from trainer import merge_lora as merge_module

    out = tmp_path / "lora"
    merged = tmp_path / "lora-merged"
    argv = _argv(out, tiny_model, data, "--max_steps=1", "--model.use_peft=true")
    merge = merge_module.merge_lora

    def killed_while_writing(adapter_dir, out_dir, dtype="float32"):
        merge(adapter_dir, out_dir, dtype)
        weights = out_dir / "model.safetensors"
        os.truncate(weights, weights.stat().st_size // 2)  # what a SIGKILL in the middle of the write leaves
        raise KeyboardInterrupt

    monkeypatch.setattr(merge_module, "merge_lora", killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        train_module.main(argv)
    assert json.loads((merged / "croc_run.json").read_text())["status"] == "merging"
    monkeypatch.setattr(merge_module, "merge_lora", merge)
    train_module.main(argv)  # no ConfigError: the folder is this run's
    assert json.loads((merged / "croc_run.json").read_text())["status"] == "merged"
    assert safetensors.torch.load_file(merged / "model.safetensors")  # whole again


@pytest.mark.parametrize("moment", ["checkpoint", "final"])
@pytest.mark.parametrize("writer", ["safetensors", "torch.save", "tokenizers"])
def test_a_full_disk_is_one_line_and_leaves_the_checkpoints_as_they_were(tiny_model, data, tmp_path, monkeypatch,
                                                                         capsys, writer, moment):
    """Neither writer reports a full disk (or a file-size limit) as an OSError: safetensors raises its own error,
    torch.save (optimizer.pt, rng_state.pth, training_args.bin) a RuntimeError of its zip writer, which ended the run
    in a traceback with the staging folder left behind (`ulimit -f` between the model's and the optimizer's size)."""
    import torch
    import transformers.modeling_utils as modeling_utils
    from safetensors import SafetensorError
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    if writer == "safetensors":
        module, name, words = modeling_utils, "safe_save_file", "No space left on device"
        error, file = SafetensorError("Error while serializing: No space left on device (os error 28)"), None
    elif writer == "tokenizers":  # tokenizer.json: tokenizers raises a plain Exception, which ended in a traceback
        module, name, words = TokenizersBackend, "_save_pretrained", "No space left on device (os error 28)"
        error, file = Exception("No space left on device (os error 28)"), None
        save_tokenizer = TokenizersBackend._save_pretrained

        def full_disk(self, save_directory, *args, **kwargs):
            in_checkpoint_2 = ("checkpoint-2" in str(save_directory) if moment == "checkpoint"
                               else "checkpoint" not in str(save_directory))
            if in_checkpoint_2:
                raise error
            return save_tokenizer(self, save_directory, *args, **kwargs)
    else:
        module, name, words = torch, "save", "the disk is full or a file-size limit was reached"
        error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 8412288 vs 8412180")
        file = "optimizer.pt" if moment == "checkpoint" else "training_args.bin"
    write = getattr(module, name)

    def full_disk_at_file(obj, path, *args, **kwargs):
        path = str(path)
        in_checkpoint_2 = "checkpoint-2" in path if moment == "checkpoint" else "checkpoint" not in path
        if in_checkpoint_2 and file in (None, os.path.basename(path)):
            raise error
        return write(obj, path, *args, **kwargs)

    monkeypatch.setattr(module, name, full_disk if writer == "tokenizers" else full_disk_at_file)
    out = tmp_path / "run"
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2"), monkeypatch, capsys)
    what = "checkpoint-2 into" if moment == "checkpoint" else "the final model folder"
    assert status == 1 and message.startswith(f"run stopped: could not write {what}"), message
    assert words in message
    assert sorted(p.name for p in out.glob("checkpoint-*")) == (
        ["checkpoint-1"] if moment == "checkpoint" else ["checkpoint-1", "checkpoint-2"])
    assert all(checkpoint_problem(folder) is None for folder in out.glob("checkpoint-*"))
    assert not (out / ".checkpoint-staging").exists()


def test_an_error_of_torch_save_that_is_not_a_write_stays_an_error(tmp_path):
    from modeling_croc.write_failures import is_write_failure

    assert is_write_failure(RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"))
    assert not is_write_failure(RuntimeError("CUDA error: an illegal memory access was encountered"))


# --- folders holding someone else's files ---------------------------------------------------------------------


def test_a_finished_run_is_not_overwritten_by_another_configuration(two_steps, tiny_model, data, tmp_path,
                                                                     monkeypatch, capsys, no_model_load):
    out = tmp_path / "run"
    shutil.copytree(two_steps, out)
    for folder in out.glob("checkpoint-*"):
        shutil.rmtree(folder)
    before = _listing(out)
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2", "--seed=3"), monkeypatch, capsys)
    assert message == (f"configuration error: output_dir {out} holds another run (finished), which differs from "
                       "this one in seed 0 -> 3; this run resumes none of its checkpoints, so its files would be "
                       "overwritten: give this run another output_dir (a next stage starts from the previous stage's "
                       "final folder), or restore those values"), message
    assert status == 1
    assert _listing(out) == before


def test_a_finished_run_rerun_with_a_changed_rate_is_told_to_use_another_output_dir(two_steps, tiny_model, data,
                                                                                   tmp_path, monkeypatch, capsys,
                                                                                   no_model_load):
    """A newcomer's first rerun with a changed value: the refusal sent them to `--resume_accept_changes`, which was
    then refused for lack of a checkpoint to resume, with no word on how to train again."""
    out = tmp_path / "run"
    shutil.copytree(two_steps, out, ignore=shutil.ignore_patterns("checkpoint-*"))
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2", "--projector_lr=0.002"), monkeypatch,
                               capsys)
    assert status == 1
    assert "which differs from this one in projector_lr" in message and "give this run another output_dir" in message
    assert "resume_accept_changes" not in message, message


def test_an_output_dir_holding_a_model_this_trainer_did_not_write_is_refused(tiny_model, data, tmp_path, monkeypatch,
                                                                             capsys, no_model_load):
    out = tmp_path / "run"
    shutil.copytree(tiny_model, out)  # e.g. the previous stage's folder given as output_dir by mistake
    before = _listing(out)
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=1"), monkeypatch, capsys)
    assert status == 1 and "which this trainer's run did not write (no croc_run.json)" in message, message
    assert _listing(out) == before


def test_an_output_dir_holding_the_users_own_code_of_a_saved_modules_name_is_refused(tiny_model, data, tmp_path,
                                                                                    monkeypatch, capsys, no_model_load):
    """The save copies the Croc modules next to the weights (for `trust_remote_code`): a project folder holding
    the user's own `losses.py` is one a run would overwrite."""
    out = tmp_path / "my_project"
    out.mkdir()
    (out / "losses.py").write_text("# my own focal loss\n")
    (out / "notes.md").write_text("mine\n")
    before = _listing(out)
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=1"), monkeypatch, capsys)
    assert status == 1 and "already holds losses.py" in message, message
    assert _listing(out) == before


@pytest.mark.parametrize("rejects", ["as the refused run wrote it", "edited since"])
def test_the_corrected_command_after_a_refused_start_trains_in_the_same_output_dir(tiny_model, data, tmp_path,
                                                                                    monkeypatch, capsys, rejects):
    """A wrong image root: the run is refused for its rows and leaves their rejects.jsonl, which its line names; the
    corrected command was then refused, "already holds rejects.jsonl, which this trainer's run did not write". A
    rejects.jsonl changed since is no longer the refused run's, and is left to the user."""
    out = tmp_path / "run"
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=1", f"--data.image_root={tmp_path}"),
                               monkeypatch, capsys)
    assert status == 1 and f"rejected rows with their reasons: {out / 'rejects.jsonl'};" in message, message
    if rejects == "edited since":
        with (out / "rejects.jsonl").open("a") as file:
            file.write('{"note": "mine"}\n')
        status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=1"), monkeypatch, capsys)
        assert (status, message) == (1, f"configuration error: output_dir {out} already holds rejects.jsonl, which this "
                                        "trainer's run did not write (no croc_run.json); training would overwrite them: "
                                        "choose another output_dir (the files of a version from before run records are "
                                        "continued or published by that version)")
        return
    train_module.main(_argv(out, tiny_model, data, "--max_steps=1"))
    assert (out / "model.safetensors").is_file() and not (out / ".croc-refused-start.json").exists()
    assert not (out / "rejects.jsonl").read_text().strip()  # the corrected run's: nothing rejected


@pytest.mark.parametrize("holds", ["another model", "another run"])
def test_a_named_checkpoint_is_not_resumed_into_a_folder_holding_another_model_or_run(two_steps, tiny_model, data,
                                                                                     tmp_path, holds, monkeypatch,
                                                                                     capsys, no_model_load):
    # `--resume_from_checkpoint=ELSEWHERE/checkpoint-N` skipped the output folder's check: the run overwrote it.
    out = tmp_path / "run"
    if holds == "another model":
        shutil.copytree(tiny_model, out)
    else:  # a run of another seed finished there
        shutil.copytree(two_steps, out, ignore=shutil.ignore_patterns("checkpoint-*"))
        record = json.loads((out / "croc_run.json").read_text())
        (out / "croc_run.json").write_text(json.dumps({**record, "seed": record["seed"] + 1}))
    before = _listing(out)
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2",
                                     f"--resume_from_checkpoint={two_steps / 'checkpoint-1'}"), monkeypatch, capsys)
    expected = "did not write (no croc_run.json)" if holds == "another model" else "so its files would be overwritten"
    assert status == 1 and expected in message, message
    assert _listing(out) == before


@pytest.mark.parametrize("which", ["build", "data_folder"])
def test_an_output_dir_holding_the_users_data_is_refused(tiny_model, data, tmp_path, monkeypatch, capsys,
                                                         no_model_load, which):
    """A build folder (its card and its own rejects.jsonl), or a data folder with a README, named as output_dir:
    the run would replace those files; it stops before writing anything."""
    from data_recipes import build_recipe

    folder = tmp_path / which
    if which == "build":
        build_recipe("llava_json", data.parent, folder, params={"annotation": "rows.json"})
        source = folder
    else:
        shutil.copytree(data.parent, folder)
        (folder / "README.md").write_text("my notes about this data\n")
        source = folder / "rows.json"
    before = _listing(folder)
    status, message = cli_exit(_argv(folder, tiny_model, source, "--max_steps=1"), monkeypatch, capsys)
    assert status == 1 and "README.md" in message and "did not write" in message, message
    assert _listing(folder) == before


def test_a_lora_runs_merge_folder_is_checked_like_the_output_dir(tiny_model, data, tmp_path, monkeypatch, capsys,
                                                                 no_model_load):
    out = tmp_path / "lora"
    merged = tmp_path / "lora-merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    (merged / "NOTES.txt").write_text("someone else's model")
    before = _listing(merged)
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=1", "--model.use_peft=true"), monkeypatch,
                               capsys)
    assert status == 1 and message.startswith(f"configuration error: the LoRA merge folder {merged} already holds "
                                              "config.json"), message
    assert _listing(merged) == before
