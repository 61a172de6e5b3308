"""Config parsing, stage/preset defaults, the shipped YAMLs (paper table 7) and every bad configuration, which must
fail with a clear message before any model is built."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import sys
from pathlib import Path

import pytest
import yaml
from trainer_helpers import CONFIGS, REPO

from croc_testing.optional import needs_deepspeed
from modeling_croc.presets import get_preset
from trainer import train as train_module
from trainer import training_args, validation
from trainer.cli import ConfigError, load_raw_config
from trainer.training_args import CrocTrainingArguments

FULL_CONFIGS = REPO / "trainer" / "configs"


@pytest.fixture
def no_compute(monkeypatch):
    """Any attempt to build a model fails the test: errors must come before."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was built before the configuration error was raised")

    monkeypatch.setattr(train_module, "load_model_and_processor", refuse)


def _args(**kwargs) -> CrocTrainingArguments:
    return CrocTrainingArguments(output_dir="unused", use_cpu=True, report_to="none", **kwargs)


def test_overrides_are_typed_and_sectioned(tmp_path, data_dir):
    raw = load_raw_config([str(CONFIGS / "stage1_5.yaml"), "--language_model_lr=3e-5", "--model.lora_target_modules",
                           "[q_proj, v_proj]", "--data.max_samples", "4", "--stage", "2", "--bf16=false",
                           "--image_root=/x"])
    assert raw["training"]["language_model_lr"] == 3e-5 and raw["training"]["stage"] == "2"
    assert raw["model"]["lora_target_modules"] == ["q_proj", "v_proj"] and raw["data"]["max_samples"] == 4
    assert raw["data"]["image_root"] == "/x"  # a data key without its prefix
    assert raw["training"]["bf16"] is False


def test_a_strategy_of_no_written_unquoted_is_the_strategy_no(tmp_path):
    """YAML reads `no` as false: `save_strategy: no` in a file, or `--save_strategy=no`, means the strategy "no"."""
    config = tmp_path / "stage.yaml"
    config.write_text((CONFIGS / "stage1_5.yaml").read_text() + "\neval_strategy: no\n")
    raw = load_raw_config([str(config), "--save_strategy=no", "--logging_strategy=no"])
    assert [raw["training"][f"{name}_strategy"] for name in ("save", "eval", "logging")] == ["no", "no", "no"]
    assert load_raw_config([str(CONFIGS / "stage1_5.yaml"), "--bf16=no"])["training"]["bf16"] is False


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (["--learning_rat=1e-3"], "unknown key --learning_rat"),
        (["--model.nme_or_path=x"], "unknown key --model.nme_or_path"),
        (["--optimizer.lr=1"], "unknown section 'optimizer'"),
    ],
)
def test_unknown_override_points_to_the_help(argv_tail, message, no_compute):
    with pytest.raises(ConfigError, match=message) as error:
        train_module.main([str(CONFIGS / "stage1.yaml"), *argv_tail])
    assert str(error.value).endswith("valid keys: python -m trainer.train --help lists every key of the three "
                                     "sections (training, model.*, data.*) with its default")
    assert len(str(error.value)) < 300  # not the ~2,900 characters of every key name


def test_help_lists_every_key_with_its_default_and_exits_0(monkeypatch, capsys):
    import dataclasses

    from trainer import DataArguments, ModelArguments
    from trainer.training_args import CrocTrainingArguments

    monkeypatch.setattr(sys, "argv", ["trainer.train", "--help"])
    train_module.cli()  # returns: status 0
    printed = capsys.readouterr().out
    assert printed.startswith("usage: python -m trainer.train CONFIG.yaml [--key=value ...]\n")
    sections = printed.split("\n\n")
    for title, cls in (("model (", ModelArguments), ("data (", DataArguments),
                       ("training, ", CrocTrainingArguments)):  # Croc's keys, then transformers' Trainer keys
        listed = [name for part in sections if part.startswith(title)
                  for name in re.findall(r"^  (\w+) \(default: ", part, flags=re.M)]
        assert sorted(listed) == sorted(spec.name for spec in dataclasses.fields(cls) if spec.init), title
    assert "  max_nonfinite_steps (default: 0)\n      Optimiser steps with a non-finite loss" in printed
    assert "  image_check (default: 'exists')" in printed


def test_unknown_yaml_key(tmp_path, no_compute):
    config = yaml.safe_load((CONFIGS / "stage1.yaml").read_text())
    config["warmup_ratio"] = 0.03  # a transformers 4.x name
    config["model"]["vision"] = "x"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"unknown keys \['model.vision', 'warmup_ratio'\]") as error:
        train_module.main([str(path)])
    assert "warmup_ratio -> warmup_steps" in str(error.value) and "model.vision -> model.vision_tower" in str(
        error.value)


def test_stage_defaults_follow_paper_and_official_presets():
    paper = _args(stage="1.5")
    assert paper.group_learning_rates == {"projector": 1.5e-4, "prompt_pool": 1.5e-4, "vtr_head": 1.5e-4,
                                          "language_model": 2e-5}
    assert (paper.adam_beta1, paper.adam_beta2, paper.template, paper.image_aspect_ratio) == (0.9, 0.98,
                                                                                             "vicuna_v1", "pad")
    official = _args(stage="1.5", croc_preset="official")
    assert official.group_learning_rates == {"projector": 1.5e-4, "prompt_pool": 2e-5, "vtr_head": 2e-5,
                                             "language_model": 2e-5}
    assert official.adam_beta2 == 0.999
    assert _args(stage="1").group_learning_rates == {"projector": 1e-3}
    assert _args(stage="1", croc_preset="official").group_learning_rates == {"projector": 1.5e-4}
    assert _args(stage="2").group_learning_rates == {"projector": 2e-5, "language_model": 2e-5}
    assert _args(stage=1.5).stage == "1.5"
    # The pool and the VTR head are separate groups: a pool rate leaves the head's alone.
    assert _args(stage="1.5", prompt_pool_lr=1e-3).vtr_head_lr == 1.5e-4
    # An explicit rate unfreezes its group; an explicit list must agree with the rates.
    assert _args(stage="2", vision_tower_lr=2e-6).trainable_parts == ["projector", "language_model", "vision_tower"]
    with pytest.raises(ValueError, match="trainable_parts leaves frozen"):
        _args(stage="2", trainable_parts=["projector"], language_model_lr=1e-5)
    with pytest.raises(ValueError, match="croc_overrides: unknown or reserved keys"):
        _args(stage="1.5", croc_overrides={"croc_pretraining": False})
    # The start's data work on the main process alone may outlast transformers' 30 minutes on the real mixtures.
    assert _args(stage="1").ddp_timeout == 4 * 3600 and _args(stage="1", ddp_timeout=600).ddp_timeout == 600
    # YAML reads `5` as an int and `1e-1` as a string: a float field of the strictly typed config takes them as
    # floats (its int fields stay; a word or a bool stays for the config's type check to refuse).
    overrides = _args(stage="1.5", croc_overrides={"vtr_loss_weight": 5, "mask_ratio": "5e-1", "vtr_head_dropout": True,
                                                   "vtr_smooth_l1_beta": "many", "prompt_pool_size": 64}).croc_overrides
    assert overrides == {"vtr_loss_weight": 5.0, "mask_ratio": 0.5, "vtr_head_dropout": True,
                         "vtr_smooth_l1_beta": "many", "prompt_pool_size": 64}
    assert type(overrides["vtr_loss_weight"]) is float and type(overrides["prompt_pool_size"]) is int
    for value in ("nan", float("inf")):  # read as a float, NaN passes the config's own range checks
        with pytest.raises(ValueError, match="croc_overrides: vtr_loss_weight must be a finite number"):
            _args(stage="1.5", croc_overrides={"vtr_loss_weight": value})


def test_stage2_overrides_of_fields_only_stage15_reads_are_warned_of_not_refused(caplog):
    """Refused, a stage-2 run started with them could not resume (dropping them changed the recorded config), and
    stage 1 sets them for the stages after it (the pool's size is a saved parameter's shape, which ZeRO-3 keeps)."""
    with caplog.at_level(logging.WARNING, logger="trainer.training_args"):
        assert _args(stage="1", croc_overrides={"prompt_pool_size": 128}).croc_overrides == {"prompt_pool_size": 128}
        assert _args(stage="2", croc_overrides={"normalize_visual_tokens": False}).croc_overrides == {
            "normalize_visual_tokens": False}
        assert not caplog.records
        assert _args(stage="2", croc_overrides={"mask_ratio": 0.5}).croc_overrides == {"mask_ratio": 0.5}
    assert [record.getMessage() for record in caplog.records] == [
        "croc_overrides ['mask_ratio'] in stage 2, which runs without the Croc objectives that read them: they only "
        "change the saved config's record of stage 1.5's settings"]


def test_a_learning_rate_no_part_trains_with_is_refused():
    """Every part a stage trains has a rate of its own (stage / preset / *_lr), so `learning_rate` reaches no
    parameter: `--learning_rate=1e-3` (as LLaVA's scripts write it) once trained at the stage's rates, silently, and
    a resume accepting a new learning_rate logged it as applied while nothing changed."""
    with pytest.raises(ValueError, match=r"learning_rate=0.001 is used by no part: stage 2 .*--language_model_lr="):
        _args(stage="2", learning_rate=1e-3)
    # Where a part does fall back to it (no stage or preset rate for the tower in stage 1), it is used and kept.
    tower = _args(stage="1", trainable_parts=["projector", "vision_tower"], learning_rate=1e-4)
    assert tower.group_learning_rates == {"projector": 1e-3, "vision_tower": 1e-4}
    assert _args(stage="2").learning_rate == 5e-5  # the default, unused, is not an error


def test_arguments_from_python_mean_what_they_mean_in_yaml(monkeypatch):
    """`global_batch_size` and the other checks live in `__post_init__`: no YAML pass is needed for them."""
    assert _args(stage="1", global_batch_size=64, per_device_train_batch_size=8).gradient_accumulation_steps == 8
    monkeypatch.setattr(training_args, "launched_world_size", lambda: 2)
    assert _args(stage="1", global_batch_size=64, per_device_train_batch_size=8).gradient_accumulation_steps == 4
    with pytest.raises(ValueError, match="does not divide"):
        _args(stage="1", global_batch_size=60, per_device_train_batch_size=8)
    with pytest.raises(ValueError, match="it is derived: 4"):
        _args(stage="1", global_batch_size=64, per_device_train_batch_size=8, gradient_accumulation_steps=3)
    monkeypatch.undo()
    assert _args(stage="1").gradient_accumulation_steps == 1
    with pytest.raises(ValueError, match="`stage` is required"):
        _args()
    with pytest.raises(ValueError, match="unknown template"):
        _args(stage="2", template="vicuna_v2")
    with pytest.raises(ValueError, match="image_aspect_ratio"):
        _args(stage="2", image_aspect_ratio="anyres")


@needs_deepspeed
@pytest.mark.parametrize("name", ["stage1", "stage1_5", "stage2", "stage1_official", "stage1_5_official",
                                  "stage2_official"])
def test_full_scale_yamls_reproduce_table_7(name, monkeypatch):
    monkeypatch.setattr(validation, "gpu_available", lambda: True)
    raw = load_raw_config([str(FULL_CONFIGS / f"{name}.yaml")])
    training = raw["training"]
    stage = training["stage"]
    validation.check_deepspeed(training)
    expected = {"1": (256, 2048, 2), "1.5": (128, 8192, 3), "2": (128, 4096, 3)}[stage]
    assert (training["global_batch_size"], training["model_max_length"]) == expected[:2]
    assert json.loads(Path(training["deepspeed"]).read_text())["zero_optimization"]["stage"] == expected[2]
    assert training["lr_scheduler_type"] == "cosine" and training["warmup_steps"] == 0.03
    assert training["num_train_epochs"] == 1 and training["weight_decay"] == 0.0
    assert training["bf16"] and training["activation_checkpointing"]
    official = name.endswith("official")
    if stage == "1":
        assert raw["model"]["vision_tower"] == "openai/clip-vit-large-patch14-336"
        assert raw["model"]["language_model"] == "lmsys/vicuna-7b-v1.5"
    _assert_states_its_preset(raw, "official" if official else "paper", expected[0], monkeypatch)
    # The numbers themselves, written out here rather than read from the preset table the YAML is checked against:
    # Table 7 and section 4 for the paper, the released trainer for official (the VTR head at the projector's rate
    # in the paper preset, at the LLM's in the released code).
    assert (training["adam_beta1"], training["adam_beta2"]) == (0.9, 0.999 if official else 0.98)
    table_7 = {"1": {"projector": 1.5e-4 if official else 1e-3},
               "1.5": {"projector": 1.5e-4, "prompt_pool": 2e-5 if official else 1.5e-4,
                       "vtr_head": 2e-5 if official else 1.5e-4, "language_model": 2e-5},
               "2": {"projector": 1.5e-4 if official else 2e-5, "language_model": 2e-5}}[stage]
    assert {group: training[f"{group}_lr"] for group in table_7} == table_7


def _assert_states_its_preset(raw: dict, preset_name: str, global_batch: int, monkeypatch) -> None:
    """The YAML spells out its preset's optimiser settings (betas and every trainable part's rate), and resolves on
    8 processes to that global batch and those rates."""
    training = raw["training"]
    preset = get_preset(preset_name)
    assert training["croc_preset"] == preset.name
    assert (training["adam_beta1"], training["adam_beta2"]) == preset.adam_betas
    stage_rates = preset.stage_learning_rates(training["stage"])
    assert {group: training[f"{group}_lr"] for group in stage_rates} == dict(stage_rates)
    monkeypatch.setattr(training_args, "launched_world_size", lambda: 8)
    kept = {k: v for k, v in training.items() if k not in ("bf16", "tf32", "deepspeed", "report_to", "output_dir")}
    args = _args(**kept)
    assert args.gradient_accumulation_steps * args.per_device_train_batch_size * 8 == global_batch
    assert args.group_learning_rates == dict(stage_rates)


def _layout(tmp_path: Path, config: dict | None, weights: bool = True, adapter: bool = False) -> Path:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    if weights:
        (folder / "model.safetensors").write_bytes(b"")
    if adapter:
        (folder / "adapter_config.json").write_text("{}")
    return folder


@pytest.mark.parametrize(
    "case, message",
    [
        ("flash", "would silently stay causal.*attn_implementation=sdpa"),
        ("missing_data", "data.path .* does not exist"),
        ("original_layout", "original LLaVA/Croc repository layout"),
        ("victor_layout", "from-victor SRC OUT"),
        ("adapter_only", "is a LoRA adapter folder .* not a model: merge it into one with `python -m trainer.merge_lora"),
        ("no_config", "has no config.json"),
        ("wrong_model_type", "model_type='bert'"),
        ("no_weights", "no weights"),
        ("missing_folder", "does not exist"),
        ("batch_not_divisible", "global_batch_size=10 does not divide by per_device_train_batch_size=4 x 1"),
        ("accumulation_mismatch", "!= per_device_train_batch_size=4 x 1 process.* x gradient_accumulation_steps=3"),
        ("bf16_on_cpu", "bf16=true but no CUDA GPU"),
        # A GPU stage YAML on a CPU sets both: one line names both fixes, not one attempt each.
        ("half_precision_on_cpu", "bf16=true and model.dtype=bfloat16 but no CUDA GPU is visible. On CPU train in "
                                  "float32: pass --bf16=false --model.dtype=float32"),
        ("qlora_on_cpu", "QLoRA .* needs a CUDA GPU"),
        ("lora_stage1", "LoRA adapts the language model, which stage 1 keeps frozen"),
        ("two_sources", "exactly one model source"),
        ("no_stage", "`stage` is required"),
        ("unknown_template", "unknown template 'vicuna_v2'"),
        ("bad_croc_field", "croc_overrides: unknown or reserved keys"),
        ("renamed_key", "croc_config -> croc_overrides"),
        ("bad_value", "cannot read 'many' as int"),
        ("missing_reporter", "report_to='wandb' but wandb is not installed"),
        ("packing_budget_alone", "packing_max_length=300 without packing=true"),
        ("packing_budget_too_small", "packing_max_length=100: must be 0 .* at least model_max_length=256"),
        ("packing_budget_on_flash", "FlashAttention packs a micro-batch into one row"),
    ],
)
def test_bad_configuration_fails_before_compute(case, message, tmp_path, data_dir, stage1_dir, monkeypatch,
                                                no_compute):
    monkeypatch.setattr(validation, "gpu_available", lambda: False)
    if case == "missing_reporter" and importlib.util.find_spec("wandb"):
        pytest.skip("wandb is installed here")
    config, overrides = "stage1_5.yaml", [f"--data.path={data_dir / 'detailed.json'}",
                                          f"--model.name_or_path={stage1_dir}"]
    extra = {
        "flash": lambda: ["--model.attn_implementation=flash_attention_2"],
        "missing_data": lambda: [f"--data.path={tmp_path / 'nope.json'}"],
        "original_layout": lambda: [f"--model.name_or_path={_layout(tmp_path, {'model_type': 'llava_llama'})}"],
        "victor_layout": lambda: [f"--model.name_or_path={_layout(tmp_path, {'model_type': 'llava_qwen'})}"],
        "adapter_only": lambda: [f"--model.name_or_path={_layout(tmp_path, None, adapter=True)}"],
        "no_config": lambda: [f"--model.name_or_path={_layout(tmp_path, None)}"],
        "wrong_model_type": lambda: [f"--model.name_or_path={_layout(tmp_path, {'model_type': 'bert'})}"],
        "no_weights": lambda: [f"--model.name_or_path={_layout(tmp_path, {'model_type': 'croc'}, weights=False)}"],
        "missing_folder": lambda: [f"--model.name_or_path={tmp_path / 'outputs' / 'stage1'}"],
        "batch_not_divisible": lambda: ["--global_batch_size=10"],
        "accumulation_mismatch": lambda: ["--gradient_accumulation_steps=3"],
        "bf16_on_cpu": lambda: ["--bf16=true"],
        "half_precision_on_cpu": lambda: ["--bf16=true", "--model.dtype=bfloat16"],
        "qlora_on_cpu": lambda: ["--model.use_peft=true", "--model.load_in_4bit=true"],
        "two_sources": lambda: [f"--model.vision_tower={stage1_dir}", f"--model.language_model={stage1_dir}"],
        "no_stage": lambda: ["--stage=null"],
        "unknown_template": lambda: ["--template=vicuna_v2"],
        "bad_croc_field": lambda: ["--croc_overrides={mask_rate: 0.5}"],
        "renamed_key": lambda: ["--croc_config={mask_ratio: 0.5}"],
        "bad_value": lambda: ["--per_device_train_batch_size=many"],
        "missing_reporter": lambda: ["--report_to=wandb"],
        "packing_budget_alone": lambda: ["--packing_max_length=300"],
        "packing_budget_too_small": lambda: ["--packing=true", "--packing_max_length=100"],
        "packing_budget_on_flash": lambda: ["--packing=true", "--packing_max_length=4096"],
    }.get(case, lambda: [])()
    if case == "missing_folder":
        (tmp_path / "outputs").mkdir()
    if case == "packing_budget_on_flash":  # FlashAttention: a stage without the mixed mask
        config, overrides = "stage2.yaml", [f"--data.path={data_dir / 'qa.json'}", f"--model.name_or_path={stage1_dir}",
                                            "--model.attn_implementation=flash_attention_2"]
    if case == "lora_stage1":
        config, overrides = "stage1.yaml", [f"--data.path={data_dir / 'captions.json'}", "--model.use_peft=true",
                                            f"--model.name_or_path={stage1_dir}"]
    with pytest.raises((ConfigError, ValueError), match=message):
        train_module.main([str(CONFIGS / config), f"--output_dir={tmp_path / 'out'}", *overrides, *extra])


def test_trainer_api_at_the_package_root(data_dir, stage1_dir):
    """`from trainer import ...` gives the trainer, its arguments and the same resolution `trainer.train` runs."""
    from trainer import CrocTrainer, CrocTrainingArguments, resolve_config
    from trainer.croc_trainer import CrocTrainer as DefinedTrainer

    assert CrocTrainer is DefinedTrainer
    resolved = resolve_config([str(FULL_CONFIGS / "stage1_5.yaml"), f"--data.path={data_dir / 'detailed.json'}",
                               f"--model.name_or_path={stage1_dir}", "--output_dir=unused", "--use_cpu=true",
                               "--bf16=false", "--tf32=false", "--model.dtype=float32", "--deepspeed=null",
                               "--report_to=none"])
    assert isinstance(resolved.training, CrocTrainingArguments) and resolved.stage.name == "1.5"
    assert resolved.model.name_or_path == str(stage1_dir) and resolved.data.path == str(data_dir / "detailed.json")
    assert resolved.training.group_learning_rates == {"projector": 1.5e-4, "prompt_pool": 1.5e-4,
                                                      "vtr_head": 1.5e-4, "language_model": 2e-5}


def test_victor_preset_trains_the_vision_tower_at_its_own_rate():
    """ViCToR's scripts: the tower at 2e-6 in stages 1.5 and 2, pool 1.5e-4, the rest at --learning_rate 1e-5."""
    victor = _args(stage="1.5", croc_preset="victor")
    assert victor.group_learning_rates == {"projector": 1e-5, "prompt_pool": 1.5e-4, "vtr_head": 1e-5,
                                           "language_model": 1e-5, "vision_tower": 2e-6}
    assert (victor.adam_beta1, victor.adam_beta2) == (0.9, 0.999)
    assert _args(stage="2", croc_preset="victor").group_learning_rates == {
        "projector": 1e-5, "language_model": 1e-5, "vision_tower": 2e-6}
    assert _args(stage="1", croc_preset="victor").group_learning_rates == {"projector": 1e-3}
    # The other presets keep the tower frozen unless a rate is given.
    assert "vision_tower" not in _args(stage="1.5").trainable_parts


@pytest.fixture
def flash_machine(monkeypatch):
    """This machine as one FlashAttention runs on: a CUDA GPU and flash-attn (checked by `trainer.validation`)."""
    monkeypatch.setattr(validation, "gpu_available", lambda: True)
    monkeypatch.setattr(validation, "flash_attention_installed", lambda attn_implementation: True)


@pytest.mark.parametrize("preset, refused", [("victor", False), ("paper", True), ("official", True)])
def test_flash_attention_is_refused_only_for_mixed_spans(preset, refused, tmp_path, data_dir, stage1_dir,
                                                        flash_machine):
    """`victor` trains with causal attention (bidirectional_span none), so FlashAttention is fine; the mixed spans of
    `paper` and `official` still refuse it, and so does `victor` with a mixed span set on top."""
    from trainer import resolve_config

    argv = [str(CONFIGS / "stage1_5.yaml"), f"--data.path={data_dir / 'detailed.json'}",
            f"--model.name_or_path={stage1_dir}", f"--output_dir={tmp_path}", f"--croc_preset={preset}",
            "--model.attn_implementation=flash_attention_2", "--use_cpu=false"]
    if refused:
        with pytest.raises(ConfigError, match="would silently stay causal"):
            resolve_config(argv)
    else:
        assert resolve_config(argv).model.attn_implementation == "flash_attention_2"
        with pytest.raises(ConfigError, match="would silently stay causal"):
            resolve_config([*argv, "--croc_overrides={prompt_pool_size: 64, bidirectional_span: image}"])


# What ViCToR's released scripts set, per stage (docs/METHOD.md section 7 gives file and line for each value):
# global batch, model_max_length, ZeRO stage, schedule, warm-up, template, aspect ratio.
VICTOR_SCRIPTS = {
    "1": (256, 8192, 2, "cosine", 0.03, "plain", "square"),
    "1.5": (128, 321120, 3, "linear", 0, "qwen_1_5", "pad"),
    "2": (128, 321120, 3, "linear", 0, "qwen_1_5", "pad"),
}


@needs_deepspeed
@pytest.mark.parametrize("name", ["stage1", "stage1_5", "stage2"])
def test_victor_yamls_state_the_released_scripts(name, monkeypatch):
    monkeypatch.setattr(validation, "gpu_available", lambda: True)
    raw = load_raw_config([str(FULL_CONFIGS / "victor" / f"{name}.yaml")])
    training = raw["training"]
    validation.check_deepspeed(training)
    stage = training["stage"]
    batch, length, zero, schedule, warmup, template, aspect = VICTOR_SCRIPTS[stage]
    assert (training["global_batch_size"], training["model_max_length"]) == (batch, length)
    assert json.loads(Path(training["deepspeed"]).read_text())["zero_optimization"]["stage"] == zero
    assert (training["lr_scheduler_type"], training["warmup_steps"], training["weight_decay"]) == (schedule, warmup, 0)
    assert (training["template"], training["image_aspect_ratio"]) == (template, aspect)
    assert raw["model"]["attn_implementation"] == "flash_attention_2"  # causal throughout: allowed in stage 1.5 too
    if stage == "1":
        assert raw["model"]["vision_tower"] == "google/siglip2-so400m-patch14-384"
        assert raw["model"]["language_model"] == "Qwen/Qwen2.5-7B-Instruct"
    _assert_states_its_preset(raw, "victor", batch, monkeypatch)


@pytest.mark.parametrize("attn, budget, resolved", [
    ("sdpa", None, None), ("sdpa", 4096, 4096), ("flash_attention_2", None, 0), ("flash_attention_2", 0, 0)])
def test_packing_budget_follows_the_attention_backend(data_dir, stage1_dir, attn, budget, resolved, flash_machine):
    """FlashAttention keeps packed samples apart only in a one-row batch: packing there packs each micro-batch into
    one row; other backends keep the budget asked for (None: each micro-batch's longest sample)."""
    from trainer import resolve_config

    argv = [str(CONFIGS / "stage2.yaml"), f"--data.path={data_dir / 'qa.json'}", f"--model.name_or_path={stage1_dir}",
            f"--model.attn_implementation={attn}", "--output_dir=unused", "--packing=true", "--use_cpu=false"]
    if budget is not None:
        argv.append(f"--packing_max_length={budget}")
    assert resolve_config(argv).training.packing_max_length == resolved


def test_croc_split_falls_back_for_a_soft_capped_llm_given_as_a_part(tmp_path, data_dir, caplog):
    """Stage 1 from separate parts with a Gemma 2 LLM on croc_split: the documented fallback to the mask path
    (eager, with a warning) reads the LLM's own config, not the default text config the parts' Croc config is
    built around (the run otherwise loaded everything and failed at its first step with a traceback)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, Gemma2Config, LlamaConfig

    from croc_testing.tiny import tiny_croc_processor
    from trainer import resolve_config

    clip_dir, llm_dir = tmp_path / "clip", tmp_path / "llm"
    CLIPVisionModel(CLIPVisionConfig(hidden_size=24, intermediate_size=48, num_hidden_layers=1,
                                     num_attention_heads=4, image_size=56, patch_size=14)).save_pretrained(clip_dir)
    tiny_croc_processor().image_processor.save_pretrained(clip_dir)
    Gemma2Config(vocab_size=32000, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=8).save_pretrained(llm_dir)
    argv = [str(CONFIGS / "stage1.yaml"), f"--data.path={data_dir / 'captions.json'}", f"--output_dir={tmp_path / 'out'}",
            "--model.name_or_path=null", f"--model.vision_tower={clip_dir}", f"--model.language_model={llm_dir}",
            "--model.attn_implementation=croc_split"]
    with caplog.at_level("WARNING"):
        assert resolve_config(argv).model.attn_implementation == "eager"
    assert "gemma2 soft-caps its attention logits" in caplog.text
    # sdpa, which Gemma 2 does not take, is refused in one line before the load, as for a model folder.
    with pytest.raises(ConfigError, match="model.attn_implementation=sdpa with model.language_model=.*Gemma2"):
        resolve_config([*argv, "--model.attn_implementation=sdpa"])
    # a Llama part takes croc_split.
    LlamaConfig(vocab_size=32000, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                num_key_value_heads=4).save_pretrained(llm_dir)
    assert resolve_config(argv).model.attn_implementation == "croc_split"


@pytest.mark.parametrize("config_text, message", [
    ('{"model_type": "not_a_model"}', "does not recognize this architecture"),
    ('{"model_type": "my_llm", "auto_map": {"AutoConfig": "configuration_my_llm.MyConfig"}}', "custom code"),
    ("{not json", "not a valid JSON file"),
])
def test_a_language_model_part_whose_config_cannot_be_read_is_one_line(tmp_path, data_dir, config_text, message):
    """Stage 1 from separate parts reads the LLM folder's config before the load (the croc_split fallback, the
    attention check): a config transformers cannot read is a one-line ConfigError naming model.language_model, not
    a traceback from `resolve_config`."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from croc_testing.tiny import tiny_croc_processor
    from trainer import resolve_config

    clip_dir, llm_dir = tmp_path / "clip", tmp_path / "llm"
    CLIPVisionModel(CLIPVisionConfig(hidden_size=24, intermediate_size=48, num_hidden_layers=1,
                                     num_attention_heads=4, image_size=56, patch_size=14)).save_pretrained(clip_dir)
    tiny_croc_processor().image_processor.save_pretrained(clip_dir)
    llm_dir.mkdir()
    (llm_dir / "config.json").write_text(config_text)
    argv = [str(CONFIGS / "stage1.yaml"), f"--data.path={data_dir / 'captions.json'}", f"--output_dir={tmp_path / 'out'}",
            "--model.name_or_path=null", f"--model.vision_tower={clip_dir}", f"--model.language_model={llm_dir}"]
    with pytest.raises(ConfigError, match=f"model.language_model={llm_dir}: .*{message}"):
        resolve_config(argv)


def test_help_describes_the_transformers_options_as_this_trainer_runs_them(monkeypatch, capsys):
    """transformers' own help said push_to_hub pushes "every time the model is saved" (this trainer pushes the final
    folder once), offered the length-grouped samplers it refuses, and called resume_from_checkpoint unused."""
    monkeypatch.setattr(sys, "argv", ["trainer.train", "--help"])
    train_module.cli()
    printed = " ".join(capsys.readouterr().out.split())
    assert "every time the model is saved" not in printed
    assert "push_to_hub (default: False) Upload the final model folder" in printed
    assert "train_sampling_strategy (default: 'random') Order of the training rows: 'random' or 'sequential'. The " \
           "length-grouped samplers ('group_by_length', 'batch_rebalance') need a length column" in printed
    assert "resume_from_checkpoint (default: None) A checkpoint-N folder to resume from" in printed


@pytest.mark.parametrize("form", ["JSON text", "a path under ~", "malformed JSON text"])
def test_accelerator_config_is_taken_in_the_forms_transformers_reads(form, tmp_path, monkeypatch):
    """transformers reads a text accelerator_config starting with `{` as JSON (a quoted mapping in the YAML), which
    the file check refused as "no file"; and a `~/...` path passed that check (it expands `~`) but transformers
    opens the path as given: a FileNotFoundError traceback."""
    from trainer.cli import build_arguments

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "accelerate.json").write_text(json.dumps({"split_batches": True}))
    value = {"JSON text": '{"split_batches": true}', "a path under ~": "~/accelerate.json",
             "malformed JSON text": '{"split_batches": tru'}[form]
    raw = load_raw_config([str(CONFIGS / "stage1_5.yaml"), "--report_to=none"])
    raw["training"]["accelerator_config"] = value  # text, as `accelerator_config: '...'` in a YAML file gives it
    if form == "malformed JSON text":
        with pytest.raises(ConfigError, match="accelerator_config: not valid JSON"):
            validation.check_accelerator_config(raw["training"])
        return
    validation.check_accelerator_config(raw["training"])
    assert build_arguments(raw)[2].accelerator_config.split_batches is True


def test_a_model_folder_under_home_is_read_there(tmp_path, stage1_dir, monkeypatch):
    """`--model.name_or_path=~/stage1` is the folder under the home directory: the layout check expanded `~` for its
    own look and then asked whether the unexpanded path held a model, refusing it as "no config.json" (found by a
    hostile tester)."""
    import shutil

    from trainer.validation import check_checkpoint_layout

    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copytree(stage1_dir, tmp_path / "my stage1")
    check_checkpoint_layout("~/my stage1")
    with pytest.raises(ConfigError, match="is not a model folder: it has no config.json"):
        check_checkpoint_layout("~")


def test_a_preset_switched_on_the_command_line_warns_of_the_rates_the_file_keeps(caplog):
    """`stage1_5.yaml --croc_preset=official` trains at the paper's rates the YAML writes out (explicit values win):
    the log says so, naming each kept value beside the preset's, and is silent where nothing differs."""
    from trainer.cli import build_arguments
    from trainer.resolve import command_line_keys, warn_preset_keeps_file_optimiser

    def warnings_for(config: Path, *overrides: str) -> list[str]:
        argv = [str(config), "--bf16=false", "--tf32=false", "--model.dtype=float32", *overrides]
        _, _, args = build_arguments(load_raw_config(argv))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="trainer.resolve"):
            warn_preset_keeps_file_optimiser(load_raw_config(argv[:1])["training"], args, command_line_keys(argv))
        return [record.getMessage() for record in caplog.records]

    (message,) = warnings_for(FULL_CONFIGS / "stage1_5.yaml", "--croc_preset=official")
    assert message.startswith("--croc_preset=official keeps the optimiser settings the config file writes out: ")
    official = get_preset("official")
    assert f"adam_beta2 0.98 (official: {official.adam_betas[1]:g})" in message
    assert "prompt_pool_lr 0.00015 (official: 2e-05)" in message and "language_model_lr" not in message
    assert not warnings_for(FULL_CONFIGS / "stage1_5.yaml", "--croc_preset=official", "--projector_lr=2e-5",
                            "--prompt_pool_lr=2e-5", "--vtr_head_lr=2e-5", "--adam_beta2=0.999")
    assert not warnings_for(FULL_CONFIGS / "stage1_5_official.yaml", "--croc_preset=official")
    assert not warnings_for(FULL_CONFIGS / "stage1_5.yaml")
    # Naming the preset the file already has switches nothing (a script that always passes --croc_preset).
    assert not warnings_for(FULL_CONFIGS / "demo" / "stage2.yaml", "--croc_preset=paper")


def test_a_template_without_prompts_after_stage_1_warns(caplog):
    """Stage 2 with `--template=plain` (stage 1's image-and-caption format) trained without the rows' questions and
    saved its parent's Vicuna chat template, which the card says to prompt with (from a hostile tester of chained
    stages): said in one line; stage 1's own plain template and stage 2's own say nothing."""
    from trainer.cli import build_arguments
    from trainer.resolve import warn_template_renders_no_prompt

    def warnings_for(config: Path, *overrides: str) -> list[str]:
        argv = [str(config), "--bf16=false", "--tf32=false", "--model.dtype=float32", *overrides]
        _, _, args = build_arguments(load_raw_config(argv))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="trainer.resolve"):
            warn_template_renders_no_prompt(args)
        return [record.getMessage() for record in caplog.records]

    (message,) = warnings_for(FULL_CONFIGS / "stage2.yaml", "--template=plain")
    assert message.startswith("template=plain renders no user text (stage 1's image-and-caption format): stage 2 ")
    assert message.endswith("leave the stage's template (vicuna_v1) unless that is the experiment")
    assert not warnings_for(FULL_CONFIGS / "stage2.yaml") and not warnings_for(FULL_CONFIGS / "stage1.yaml")
