"""Issue 20, resumes that are exact or refused: the run record every checkpoint carries. A changed optimiser or
schedule value is refused before the model loads, or accepted and applied from the resumed step; a change the run
cannot continue from (the stage, the seed, the batch split, the rows, the LoRA base weights) is refused; a roll-back
keeps the abandoned checkpoints; the start check's outcome and the run's loss total carry across the resume,
from checkpoints of earlier versions too. (The output folder's lock: test_faults_output_lock.py; checkpoint
manifests, failed saves and folders holding someone else's files: test_faults_output_folders.py.)"""

from __future__ import annotations

import inspect
import json
import logging
import shutil

import pytest
from run_cases import checkpointed_argv as _argv
from run_cases import checkpoints_only as _checkpoints_only
from run_cases import cli_exit, curve, run_argv, write_small_folder
from run_cases import listing as _listing
from transformers import trainer_utils

from croc_testing.tiny import save_tiny_croc
from trainer import train as train_module
from trainer.checkpoint_io import write_manifest
from trainer.croc_trainer import CHECKPOINT_ARGUMENTS_WARNING

# --- changes refused or accepted ------------------------------------------------------------------------------


def test_a_changed_learning_rate_is_refused_not_silently_ignored(two_steps, tiny_model, data, tmp_path, monkeypatch,
                                                                 capsys, no_model_load):
    out = _checkpoints_only(two_steps, tmp_path / "run")
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=4", "--language_model_lr=1e-3"),
                               monkeypatch, capsys)
    assert status == 1
    assert message.startswith("configuration error: checkpoint-2 was saved with other optimiser / schedule values: "
                              "language_model_lr 2e-05 -> 0.001; max_steps 2 -> 4. Resuming would silently keep the "
                              "checkpoint's"), message
    # Quoted, as the shell command it is: zsh (macOS's shell) reads an unquoted `[...]` as a file pattern.
    assert "'--resume_accept_changes=[language_model_lr,max_steps]'" in message


def test_accepted_changes_take_effect_from_the_resumed_step(two_steps, tiny_model, data, tmp_path):
    out = _checkpoints_only(two_steps, tmp_path / "run")
    train_module.main(_argv(out, tiny_model, data, "--max_steps=4", "--language_model_lr=1e-3",
                            "--resume_accept_changes=[language_model_lr,max_steps]"))
    steps = curve(out)
    assert sorted(steps) == [1, 2, 3, 4]
    # Cosine without warm-up over the new 4 steps: step 3 runs at 1e-3 * (1 + cos(pi * 2 / 4)) / 2, step 4 at
    # 1e-3 * (1 + cos(pi * 3 / 4)) / 2; the projector keeps its rate, on the new schedule.
    assert steps[3]["lr_language_model"] == pytest.approx(1e-3 * 0.5, rel=1e-6)
    assert steps[4]["lr_language_model"] == pytest.approx(1e-3 * (1 - 2 ** -0.5) / 2, rel=1e-6)
    assert steps[3]["lr_projector"] == pytest.approx(steps[1]["lr_projector"] * 0.5, rel=1e-6)


def test_an_accepted_weight_decay_from_zero_reaches_the_decaying_groups(two_steps, tiny_model, data, tmp_path):
    # The run started at transformers' default weight_decay=0, so every optimiser group held 0: the accepted change
    # was logged, and the groups that decay kept 0 (no decay, silently).
    import torch

    out = _checkpoints_only(two_steps, tmp_path / "run")
    train_module.main(_argv(out, tiny_model, data, "--max_steps=3", "--weight_decay=0.1",
                            "--resume_accept_changes=[max_steps,weight_decay]"))
    groups = torch.load(out / "checkpoint-3" / "optimizer.pt", weights_only=False)["param_groups"]
    assert {(group["croc_decays"], group["weight_decay"]) for group in groups} == {(True, 0.1), (False, 0.0)}


@pytest.mark.parametrize(("override", "difference"), [
    ("--stage=1.5", "stage '2' -> '1.5'"),
    ("--croc_preset=official", "croc_config: "),
    ("--seed=1", "seed 0 -> 1"),
    ("--global_batch_size=8", "global_batch_size 4 -> 8"),
    ("--model_max_length=200", "model_max_length 256 -> 200"),
    ("--data.max_samples=5", "count 8 -> 5"),
    ("--optim=sgd", "optim ['adamw_torch"),
    ("--neftune_noise_alpha=5", "neftune_noise_alpha None -> 5.0"),
    ("--train_sampling_strategy=sequential", "train_sampling_strategy 'random' -> 'sequential'"),
])
def test_a_change_the_run_cannot_continue_from_is_refused_before_the_model_loads(two_steps, tiny_model, data,
                                                                                  tmp_path, monkeypatch, capsys,
                                                                                  no_model_load, override, difference):
    out = _checkpoints_only(two_steps, tmp_path / "run")
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2", override), monkeypatch, capsys)
    assert status == 1 and message.startswith("configuration error: checkpoint-2 cannot continue with this "
                                              "configuration: "), message
    assert difference in message, message
    assert "--resume_accept_changes" not in message  # not something an option can accept


@pytest.mark.parametrize(("config", "extra"), [
    ("stage1_5.yaml", ("--group_by_modality_length=true",)),  # the sampler deals a step's images by the split
    ("stage2.yaml", ("--neftune_noise_alpha=5",)),  # noise drawn per micro-batch, in its shape
], ids=["stage1_5_grouped", "neftune"])
def test_another_per_device_batch_is_refused_where_the_step_depends_on_the_split(tiny_model, data, tmp_path,
                                                                                 monkeypatch, capsys, config, extra):
    """The same global batch split into other per-device batches: stage 1.5's masks follow each image's position in
    the step, which the modality sampler's length-balanced deal sets by the split, so the resumed curve was another
    (accepted silently); refused before the model loads, as every change of the computation."""
    finished, out = tmp_path / "finished", tmp_path / "run"
    train_module.main(run_argv(config, finished, tiny_model, data, "--save_strategy=steps", "--save_steps=1",
                               "--max_steps=1", *extra))
    shutil.copytree(finished / "checkpoint-1", out / "checkpoint-1")  # as a run killed after step 1 leaves it

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(train_module, "load_model_and_processor", refuse)
    argv = run_argv(config, out, tiny_model, data, "--save_strategy=steps", "--save_steps=1", "--max_steps=1", *extra)
    status, message = cli_exit([*argv, "--per_device_train_batch_size=1"], monkeypatch, capsys)
    assert status == 1 and "cannot continue with this configuration: per_device_split 2 -> 1" in message, message


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_another_per_device_batch_that_does_not_change_the_step_resumes_without_the_trainers_warning(
        two_steps, tiny_model, data, tmp_path, capsys):
    """The same global batch over other micro-batches, where the step does not depend on the split: the run record
    takes it, and the resume is exact; the Trainer's warning that per_device_train_batch_size "does not match" the
    checkpoint's would only cast doubt on it (an operator took it for a broken resume)."""
    out = tmp_path / "run"
    shutil.copytree(two_steps / "checkpoint-1", out / "checkpoint-1")
    # What transformers' loggers pass on (its own handler writes to the stderr of when it was made, not capsys's);
    # `warning_once` remembers every message this process said.
    upstream = _Records()
    logging.getLogger("transformers").addHandler(upstream)
    logging.Logger.warning_once.cache_clear()
    capsys.readouterr()
    try:
        train_module.main(_argv(out, tiny_model, data, "--max_steps=2", "--per_device_train_batch_size=4"))
    finally:
        logging.getLogger("transformers").removeHandler(upstream)
    assert f"resuming from {out / 'checkpoint-1'}" in capsys.readouterr().err
    assert not [message for message in upstream.messages if "trainer_state.json" in message], upstream.messages
    assert curve(out)[2]["loss"] == pytest.approx(curve(two_steps)[2]["loss"], rel=1e-5)
    # The filter knows the warning by its opening words: the Trainer must still say them for it to apply.
    assert CHECKPOINT_ARGUMENTS_WARNING in inspect.getsource(trainer_utils.compare_trainer_and_checkpoint_args)


def test_a_mixture_of_experts_with_its_router_loss_is_resumed_on_its_own_per_device_batch(data, tmp_path,
                                                                                          monkeypatch, capsys):
    """Qwen3-VL-MoE with `output_router_logits` on adds each micro-batch's own router load-balancing loss, a product
    of two means over that micro-batch's tokens: the same step split otherwise computes another term (it was accepted
    silently and the curve left the uninterrupted run's). Refused before the model loads, as every split-dependent
    run."""
    from croc_testing.qwen3_vl import save_tiny_qwen3_vl_moe

    model = save_tiny_qwen3_vl_moe(tmp_path / "moe")
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    config["text_config"]["output_router_logits"] = True
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    finished, out = tmp_path / "finished", tmp_path / "run"
    extra = ("--template=qwen3_vl", "--save_strategy=steps", "--save_steps=1", "--max_steps=1")
    train_module.main(run_argv("stage2.yaml", finished, model, data, *extra))
    shutil.copytree(finished / "checkpoint-1", out / "checkpoint-1")  # as a run killed after step 1 leaves it

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(train_module, "load_model_and_processor", refuse)
    argv = run_argv("stage2.yaml", out, model, data, *extra)
    status, message = cli_exit([*argv, "--per_device_train_batch_size=1"], monkeypatch, capsys)
    assert status == 1 and "cannot continue with this configuration: per_device_split 2 -> 1" in message, message


def test_a_split_recorded_as_not_mattering_before_an_upgrade_is_not_compared():
    """A run recorded before its step was known to depend on the split (a router loss, recorded since) wrote
    `per_device_split` None: what makes a step split-dependent is recorded under its own keys, so None -> a value with
    those unchanged is this package's upgrade, not another run, and the run still resumes."""
    from trainer.run_record import record_differences

    assert record_differences({"per_device_split": None}, {"per_device_split": 2}) == []
    assert [d.key for d in record_differences({"per_device_split": 2}, {"per_device_split": 1})] == ["per_device_split"]


def test_a_lora_resume_on_other_base_weights_is_refused_and_on_a_copy_of_them_resumes(tiny_model, data, tmp_path,
                                                                                       monkeypatch, capsys):
    """A LoRA checkpoint holds the adapters and the parts trained whole; the weights they adapt load from
    model.name_or_path again. Another folder of the same config.json (a retrained stage 1, another seed) resumed
    on another curve, silently: refused before the model loads. A copy of the same folder elsewhere resumes."""
    lora = ("--model.use_peft=true", "--model.lora_r=4", "--model.lora_dropout=0")
    finished, out = tmp_path / "finished", tmp_path / "run"
    train_module.main(_argv(finished, tiny_model, data, "--max_steps=2", *lora))
    shutil.copytree(finished / "checkpoint-1", out / "checkpoint-1")  # as a run killed after step 1 leaves it
    other = save_tiny_croc(tmp_path / "other_weights", seed=1)
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "load_model_and_processor", _refuse_model_load)
        status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=2", *lora,
                                         f"--model.name_or_path={other}"), monkeypatch, capsys)
    assert status == 1 and message.startswith("configuration error: checkpoint-1 cannot continue with this "
                                              "configuration: lora_base_weights "), message
    copy = shutil.copytree(tiny_model, tmp_path / "moved_model")
    train_module.main(_argv(out, tiny_model, data, "--max_steps=2", *lora, f"--model.name_or_path={copy}"))
    assert curve(out)[2]["loss"] == curve(finished)[2]["loss"]


def _refuse_model_load(*args, **kwargs):
    raise AssertionError("the model was loaded before the error")


def test_a_record_written_before_a_key_was_recorded_is_compared_on_the_keys_it_has():
    """A checkpoint of an earlier version of this package has no entry for a key recorded since
    (`train_sampling_strategy`): the run still resumes after the upgrade, and the keys it has are still compared."""
    from trainer.run_record import record_differences

    current = {"seed": 0, "train_sampling_strategy": "random"}
    assert record_differences({"seed": 0}, current) == []
    assert [d.key for d in record_differences({"seed": 1}, current)] == ["seed"]


def test_learning_rate_is_compared_only_through_the_rates_the_parts_train_at():
    """Every part's rate is recorded as its `*_lr`; `learning_rate` itself (a value no part used, as a run started
    with `--learning_rate=2e-5` before such values were refused recorded it) does not block the resume."""
    from trainer.run_record import record_differences

    rates = {"projector_lr": 1.5e-4, "language_model_lr": 2e-5}
    assert record_differences({"learning_rate": 2e-5, **rates}, {"learning_rate": 5e-5, **rates}) == []
    changed = {**rates, "language_model_lr": 1e-5}
    assert [d.key for d in record_differences({"learning_rate": 2e-5, **rates}, changed)] == ["language_model_lr"]


def test_a_run_that_trained_half_precision_weights_resumes_them_in_float32(two_steps, tiny_model, data, tmp_path,
                                                                           capsys):
    """A full fine-tuning run started with model.dtype=bfloat16 before such runs were refused (its bf16 weights
    trained themselves, updates rounded away) is told to load in float32; the resume refused that change of dtype
    too ("cannot continue with this configuration: dtype 'bfloat16' -> 'float32'"), so the run could go on neither
    way. It now resumes in float32, said in a warning; other changes are still refused, and the unchanged run is
    refused by its precision (test_faults_arguments). The bf16 record stands for a GPU run's: this is a CPU test."""
    from trainer.run_record import RUN_RECORD, record_differences

    out = _checkpoints_only(two_steps, tmp_path / "run")
    for folder in (out / "checkpoint-1", out / "checkpoint-2"):
        record = json.loads((folder / RUN_RECORD).read_text(encoding="utf-8"))
        (folder / RUN_RECORD).write_text(json.dumps({**record, "dtype": "bfloat16"}), encoding="utf-8")
        write_manifest(folder)  # as the run wrote it
    train_module.main(_argv(out, tiny_model, data, "--max_steps=3", "--resume_accept_changes=[max_steps]"))
    assert sorted(curve(out)) == [1, 2, 3]
    assert "resuming the bfloat16 weights in float32" in capsys.readouterr().err  # (the run's logging replaces caplog's)
    # Not a way around the record: LoRA and DeepSpeed runs kept a float32 copy, and float16 is not float32.
    half = {"dtype": "bfloat16", "lora": None, "deepspeed_zero_stage": None}
    assert record_differences(half, {**half, "dtype": "float32"}) == []
    assert [d.key for d in record_differences(half, {**half, "dtype": "float16"})] == ["dtype"]
    lora = {**half, "lora": {"r": 4}}
    assert [d.key for d in record_differences(lora, {**lora, "dtype": "float32"})] == ["dtype"]
    zero = {**half, "deepspeed_zero_stage": 2}
    assert [d.key for d in record_differences(zero, {**zero, "dtype": "float32"})] == ["dtype"]


def test_rows_edited_under_the_same_ids_are_refused(two_steps, tiny_model, data, tmp_path, monkeypatch, capsys,
                                                    no_model_load):
    """The record holds the rows' contents, not only their ids: an answer changed (or an image swapped) between the
    checkpoint and the resume is a different run."""
    out = _checkpoints_only(two_steps, tmp_path / "run")
    rows = json.loads(data.read_text())
    rows[0]["conversations"][1]["value"] = "A different answer."
    edited = data.parent / "edited.json"
    edited.write_text(json.dumps(rows))
    status, message = cli_exit(_argv(out, tiny_model, edited, "--max_steps=2", f"--data.image_root={data.parent}"),
                               monkeypatch, capsys)
    assert status == 1 and "data_rows: content_sha256" in message and "count" not in message.split("data_rows")[1][:80]


def test_what_draws_from_each_processs_random_stream_is_recorded():
    """Dropout or noise draws from each process's random stream, saved per process: the run record then holds the
    process count (a resume on another count would restore none of them). Without such draws it holds none."""
    from types import SimpleNamespace

    from trainer.run_record import _draws_per_process

    plain = SimpleNamespace(use_peft=False, lora_dropout=0.05)
    args = SimpleNamespace(neftune_noise_alpha=None, stage="1.5")
    linear = {"vtr_head": "linear", "vtr_head_dropout": 0.1, "text_config": {"attention_dropout": 0.0}}
    assert not _draws_per_process(plain, args, linear)  # the linear head has no dropout, whatever the field says
    assert _draws_per_process(plain, args, {**linear, "vtr_head": "bert"})  # `official`'s BERT-layer head
    assert not _draws_per_process(plain, SimpleNamespace(neftune_noise_alpha=None, stage="2"),
                                  {**linear, "vtr_head": "bert"})  # which stage 2 does not run
    assert _draws_per_process(plain, args, {**linear, "text_config": {"attention_dropout": 0.1}})
    assert _draws_per_process(SimpleNamespace(use_peft=True, lora_dropout=0.05), args, linear)
    assert _draws_per_process(plain, SimpleNamespace(neftune_noise_alpha=5.0, stage="2"), linear)


def test_the_lora_base_fingerprint_of_a_hub_id_is_its_cached_snapshots(tmp_path, monkeypatch):
    """A LoRA run on a Hub id resumed from a `--local-dir` copy of it (an offline cluster), or back, has the same base
    weights: refused before, when a Hub id had no fingerprint and a local folder one. With none for a Hub id, a run
    moved onto another repository's weights resumed silently (found by hostile reviewers). The fingerprint is read
    from the cached snapshot, of the files transformers loads (a `--local-dir` copy may also hold the `.bin` files);
    an uncached Hub id (a first run records before the weights are fetched) is not compared."""
    import huggingface_hub.constants

    from trainer.fingerprints import weights_fingerprint
    from trainer.run_record import record_differences

    def fingerprints(saved, current):
        return [d.key for d in record_differences({"lora_base_weights": saved}, {"lora_base_weights": current})]

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    repo = "llava-hf/llava-1.5-7b-hf"
    assert weights_fingerprint(repo) is None  # not cached yet
    snapshot = tmp_path / "cache" / "models--llava-hf--llava-1.5-7b-hf" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"weights" * 1000)
    copy = tmp_path / "llava-1.5-7b-hf"
    copy.mkdir()
    (copy / "model.safetensors").write_bytes(b"weights" * 1000)
    (copy / "pytorch_model.bin").write_bytes(b"the same weights, pickled" * 100)
    hub, local = weights_fingerprint(repo), weights_fingerprint(str(copy))
    assert hub == local is not None
    assert fingerprints(None, local) == fingerprints(local, None) == []  # one side unknown: not compared
    (snapshot / "model.safetensors").write_bytes(b"another model" * 1000)
    assert fingerprints(local, weights_fingerprint(repo)) == ["lora_base_weights"]


def test_the_lora_base_fingerprint_reads_no_training_args(tmp_path):
    """A finished base run rerun to push it rewrites its folder's `training_args.bin` (the pickled arguments, now with
    the push) and leaves its weights: read as a weight file, it refused the resume of the LoRA run on that base as
    other base weights. Its weights still count."""
    from trainer.fingerprints import weights_fingerprint

    (tmp_path / "model.safetensors").write_bytes(b"weights" * 1000)
    (tmp_path / "training_args.bin").write_bytes(b"arguments of the run")
    before = weights_fingerprint(str(tmp_path))
    (tmp_path / "training_args.bin").write_bytes(b"arguments of its rerun, with --push_to_hub")
    assert weights_fingerprint(str(tmp_path)) == before
    (tmp_path / "model.safetensors").write_bytes(b"retrained" * 1000)
    assert weights_fingerprint(str(tmp_path)) != before


def test_a_roll_back_keeps_the_abandoned_checkpoints_and_a_plain_rerun_continues_it(tiny_model, data, tmp_path,
                                                                                   capsys):
    """Rolled back past a loss spike (`--resume_from_checkpoint` an older checkpoint, another learning rate), the run
    replaced the abandoned run's checkpoints of the same steps unsaid, and a plain rerun resumed the abandoned run's
    newest: off the curve the user chose, its final folder and card the abandoned run's."""
    out = tmp_path / "run"
    train_module.main(_argv(out, tiny_model, data, "--max_steps=3"))  # the abandoned run
    abandoned = {name: _listing(out / name) for name in ("checkpoint-2", "checkpoint-3")}
    abandoned_curve = curve(out)
    changes = ["--language_model_lr=1e-3", "--resume_accept_changes=[language_model_lr,max_steps]"]
    capsys.readouterr()
    train_module.main(_argv(out, tiny_model, data, "--max_steps=2", "--save_total_limit=2", *changes,
                            f"--resume_from_checkpoint={out / 'checkpoint-1'}"))
    log = capsys.readouterr().err
    assert sorted(path.name for path in out.glob("checkpoint-*")) == [
        "checkpoint-1", "checkpoint-2", "checkpoint-2-abandoned", "checkpoint-3-abandoned"]
    assert "checkpoint-2 -> checkpoint-2-abandoned, checkpoint-3 -> checkpoint-3-abandoned" in log
    for name, listing in abandoned.items():  # kept whole, neither replaced nor rotated away
        assert _listing(out / f"{name}-abandoned") == listing
    rolled_back = curve(out / "checkpoint-2")
    train_module.main(_argv(out, tiny_model, data, "--max_steps=3", *changes))  # the plain rerun
    steps = curve(out)
    assert sorted(steps) == [1, 2, 3]
    assert steps[2]["lr_language_model"] == rolled_back[2]["lr_language_model"] != abandoned_curve[2][
        "lr_language_model"]
    assert steps[3]["loss"] != abandoned_curve[3]["loss"]  # trained on from the rolled-back run's weights
    report = json.loads((out / "data_report.json").read_text())
    assert report["rows_seen"] == json.loads((out / "checkpoint-3-abandoned" / "data_report.json").read_text())[
        "rows_seen"]  # every row counted once


# --- what the resume carries over -----------------------------------------------------------------------------


def test_an_image_gone_between_the_kill_and_the_resume_does_not_block_the_resume(tiny_model, tmp_path, capsys):
    """A run killed after step 1; before the rerun one image of its rows is deleted (a storage clean-up). The start
    check would now reject that row, and the rows would no longer be the run's: the resume keeps the interrupted
    run's start-check outcome instead (the row rejected then stays rejected, the row kept then stays in its place,
    its image replaced when training meets it), says so, and finishes."""
    data = write_small_folder(tmp_path / "data")
    rows = json.loads(data.read_text())
    rows.append({"id": "never-there", "image": "images/missing.png",
                 "conversations": rows[0]["conversations"]})  # rejected by the start check of both runs
    data.write_text(json.dumps(rows))
    first = tmp_path / "first"
    train_module.main(_argv(first, tiny_model, data, "--max_steps=2"))
    recorded = json.loads((first / "checkpoint-1" / "croc_run.json").read_text())
    assert recorded["start_rejections"] == {"missing_image": [len(rows) - 1]}
    out = _checkpoints_only(first, tmp_path / "run")
    shutil.rmtree(out / "checkpoint-2")  # killed after step 1
    (data.parent / rows[0]["image"]).unlink()
    capsys.readouterr()
    train_module.main(_argv(out, tiny_model, data, "--max_steps=2"))
    err = capsys.readouterr().err
    assert "1 row(s) the interrupted run trained with now fail the start check (first: row 0" in err
    assert f"resuming from {out / 'checkpoint-1'}" in err and sorted(curve(out)) == [1, 2]
    assert json.loads((out / "croc_run.json").read_text())["start_rejections"] == recorded["start_rejections"]


def test_a_fresh_start_keeps_its_own_start_check(tiny_model, tmp_path, monkeypatch, capsys):
    """Only a resume takes the interrupted run's start-check outcome. A run killed before its first checkpoint,
    rerun after the user restored a missing image, is a fresh start: its start check keeps that row, so its rows
    are not the recorded run's, and it says so instead of training on the recorded run's rows silently."""
    data = write_small_folder(tmp_path / "data")
    rows = json.loads(data.read_text())
    rows.append({"id": "fixed-later", "image": "images/fixed.png", "conversations": rows[0]["conversations"]})
    data.write_text(json.dumps(rows))
    out = tmp_path / "run"
    train_module.main(_argv(out, tiny_model, data, "--max_steps=1"))
    record = json.loads((out / "croc_run.json").read_text())
    assert record["start_rejections"] == {"missing_image": [len(rows) - 1]}
    for path in out.iterdir():  # killed before its first checkpoint: the record it wrote first is all there is
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    (out / "croc_run.json").write_text(json.dumps({**record, "status": "running"}))
    shutil.copy(data.parent / rows[0]["image"], data.parent / "images" / "fixed.png")
    status, message = cli_exit(_argv(out, tiny_model, data, "--max_steps=1"), monkeypatch, capsys)
    assert status == 1 and f"count {len(rows) - 1} -> {len(rows)}" in message, message


@pytest.mark.parametrize("recorded", [[], None, {"missing_image": 2}, {"missing_image": [True]},
                                      {"bogus_reason": [0]}, {"missing_image": [1.0]}, {"missing_image": [3]},
                                      {"missing_image": [1], "unreadable_image": [1]}, {"missing_image": [-1]}])
def test_a_record_of_start_rejections_that_is_not_one_is_not_used(recorded):
    """A damaged or hand-edited record: this start check decides (with a warning), never a traceback or a row
    dropped under a reason the report does not count."""
    from trainer.data_loading import _recorded_reasons

    assert _recorded_reasons(recorded, 3) is None
    assert _recorded_reasons({"missing_image": [2], "unreadable_image": [0]}, 3) == ["unreadable_image", None,
                                                                                      "missing_image"]


def _as_an_earlier_version_wrote(checkpoint):
    """The checkpoint's non-finite file as versions before the run's loss total was carried wrote it."""
    from trainer.run_control import NONFINITE_FILE

    file = checkpoint / NONFINITE_FILE
    state = json.loads(file.read_text())
    file.write_text(json.dumps({"skipped_steps": state["skipped_steps"]}))
    write_manifest(checkpoint)  # as that version's manifest lists the file


@pytest.mark.parametrize("kept", [("checkpoint-1",), ("checkpoint-1", "checkpoint-2")],
                         ids=["resumed", "finished_rerun"])
def test_an_upgraded_resume_states_the_whole_runs_mean_train_loss(two_steps, tiny_model, data, tmp_path, kept):
    """A checkpoint of an earlier version carries no loss total: the resumed run (upgraded between the kill and the
    resume) stated the mean of its last part as the run's train_loss, and a rerun of a finished run 0.0. Its logged
    losses give the total; the mean is the uninterrupted run's."""
    out = tmp_path / "run"
    for name in kept:
        shutil.copytree(two_steps / name, out / name)
        _as_an_earlier_version_wrote(out / name)
    train_module.main(_argv(out, tiny_model, data, "--max_steps=2"))
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    expected = sum(entry["loss"] for entry in curve(two_steps).values()) / 2
    assert [entry["train_loss"] for entry in history if "train_loss" in entry] == [pytest.approx(expected, rel=1e-6)]


@pytest.mark.parametrize("earlier_version", [False, True], ids=["resumed", "upgraded"])
def test_a_resumed_runs_reporters_get_the_whole_runs_mean_train_loss(two_steps, tiny_model, data, tmp_path,
                                                                      monkeypatch, earlier_version):
    """The console, TensorBoard and W&B read `train_loss` from the Trainer's last log entry, through the callbacks:
    after a resume they were told the mean of the last part while the card stated the whole run's (found in
    review)."""
    from transformers.trainer_callback import CallbackHandler

    seen, on_log = [], CallbackHandler.on_log

    def recording(self, args, state, control, logs):
        seen.append(dict(logs))
        return on_log(self, args, state, control, logs)

    monkeypatch.setattr(CallbackHandler, "on_log", recording)
    out = tmp_path / "run"
    shutil.copytree(two_steps / "checkpoint-1", out / "checkpoint-1")
    if earlier_version:
        _as_an_earlier_version_wrote(out / "checkpoint-1")
    train_module.main(_argv(out, tiny_model, data, "--max_steps=2"))
    expected = sum(entry["loss"] for entry in curve(two_steps).values()) / 2
    assert [logs["train_loss"] for logs in seen if "train_loss" in logs] == [pytest.approx(expected, rel=1e-6)]


def test_a_loss_total_the_logs_do_not_give_is_not_guessed(tmp_path):
    """An earlier version's checkpoint whose logs do not cover every step (a log window open at the save, a skipped
    step sharing its window with applied ones) gives no total: the card then states no train_loss, not a wrong one."""
    from trainer.run_control import logged_loss_total

    def total(log_history, step, skipped=()):
        (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": log_history}))
        return logged_loss_total(tmp_path, list(skipped))

    logs = [{"step": 2, "loss": 3.0}, {"step": 3, "loss": 0.0}, {"step": 4, "loss": 1.0}]
    assert total(logs, 4, [3]) == (7.0, 3)  # steps 1-2 (mean 3), step 4; step 3's stand-in left out
    assert total(logs, 5) == (None, 0)  # step 5 not logged
    assert total(logs, 4, [2]) == (None, 0)  # skipped inside a window of two
    assert total([], 0) == (0.0, 0)


def test_data_seed_is_compared_by_the_seed_that_draws_the_order():
    """An unset `data_seed` draws the order from `seed` (tests/trainer/test_trainer_parts.py): the record compared
    it as set, so a run started with it unset refused `--data_seed=<its seed>` (the same order) and accepted neither
    way round; unset against 0 was refused under seed 0 too, where the order is the same. A record keeps the value as
    set (one written before this comparison reads the same)."""
    from trainer.run_record import record_differences

    def changed(saved: dict, current: dict) -> list[str]:
        return [d.key for d in record_differences(saved, current)]

    unset = {"seed": 42, "data_seed": None}
    assert changed(unset, {"seed": 42, "data_seed": 42}) == changed({"seed": 42, "data_seed": 42}, unset) == []
    assert changed(unset, {"seed": 42, "data_seed": 0}) == ["data_seed"]
    assert changed({"seed": 0, "data_seed": None}, {"seed": 0, "data_seed": 0}) == []
    assert changed(unset, {"seed": 7, "data_seed": None}) == ["seed"]  # another seed: another order, said by `seed`
    assert changed(unset, {"seed": 7, "data_seed": 42}) == ["seed"]  # the order is 42's still; the seed is not
