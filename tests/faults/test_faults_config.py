"""Issue 13, bad configurations: each ends in one line, `configuration error: ...`, before a model is loaded (and
before the training rows are read), as `python -m trainer.train` prints it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from transformers import CLIPVisionConfig

from modeling_croc import loading
from modeling_croc.configuration_croc import CrocConfigError
from modeling_croc.loading import read_croc_config
from trainer import resolve as resolve_module
from trainer import train as train_module

REPO = Path(__file__).resolve().parents[2]
STAGE1_5 = REPO / "trainer" / "configs" / "cpu_tiny" / "stage1_5.yaml"



def _yaml_with(tmp_path: Path, **changes) -> Path:
    config = yaml.safe_load(STAGE1_5.read_text())
    config.update(changes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _error(monkeypatch, config: Path, tmp_path: Path, tiny_model: Path, data: Path, *overrides: str) -> str:
    argv = ["trainer.train", str(config), f"--output_dir={tmp_path / 'out'}", f"--model.name_or_path={tiny_model}",
            f"--data.path={data}", *overrides]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as stop:
        train_module.cli()
    message = str(stop.value.code)
    assert message.startswith("configuration error: ") and "\n" not in message, message
    return message


CASES = {
    # case: (YAML changes, overrides, the message's words)
    "negative learning_rate": ({}, ["--learning_rate=-1e-4"], "learning_rate must be > 0, got -0.0001"),
    "negative projector_lr": ({}, ["--projector_lr=-1e-3"], "projector_lr must be > 0, got -0.001"),
    "zero language_model_lr": ({}, ["--language_model_lr=0"], "language_model_lr must be > 0, got 0.0"),
    "beta of 1": ({}, ["--adam_beta2=1.0"], r"adam_beta2 must be in \[0, 1\), got 1.0"),
    "negative whole vtr_loss_weight": ({}, ["--croc_overrides={prompt_pool_size: 64, vtr_loss_weight: -1}"],
                                       "vtr_loss_weight must be >= 0, got -1.0"),
    "mask_ratio 1.5": ({"croc_overrides": {"prompt_pool_size": 64, "mask_ratio": 1.5}}, [],
                       r"croc_preset / croc_overrides: mask_ratio must be in \[0, 1\), got 1.5"),
    "misspelled croc_overrides key": ({"croc_overrides": {"prompt_pool_size": 64, "mask_ration": 0.5}}, [],
                                      r"unknown or reserved keys \['mask_ration'\].*mask_ration -> mask_ratio"),
    "renamed croc_config": ({"croc_config": {"mask_ratio": 0.5}}, [], "croc_config -> croc_overrides"),
    "wrong type in croc_overrides": ({}, ["--croc_overrides={prompt_pool_size: many}"],
                                     "croc_preset / croc_overrides: .*prompt_pool_size"),
    "croc_overrides not a mapping": ({}, ["--croc_overrides=0.5"], "croc_overrides must be a mapping"),
    # The tiny tower has 16 visual tokens: 12 masked need a pool of 12 for one-to-one matching. Found from the
    # model's config.json, before its weights.
    "pool too small for the tower": ({}, ["--croc_overrides={prompt_pool_size: 8}"],
                                     "Hungarian matching is one-to-one: 12 masked tokens .* got 8"),
    "unknown preset": ({}, ["--croc_preset=papers"], "croc_preset must be one of"),
    "bad image_check": ({}, ["--data.image_check=full"], "data.image_check must be one of"),
    "bad reject fraction": ({}, ["--data.max_reject_fraction=2"], r"data.max_reject_fraction must be in \[0, 1\]"),
    "unknown key": ({}, ["--learning_rat=1e-3"], "unknown key --learning_rat .*learning_rate.*python -m trainer.train --help lists every key"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_configuration_is_one_line_before_anything_loads(case, tmp_path, tiny_model, small_data, monkeypatch,
                                                             nothing_loaded):
    import re

    changes, overrides, words = CASES[case]
    config = _yaml_with(tmp_path, **changes) if changes else STAGE1_5
    message = _error(monkeypatch, config, tmp_path, tiny_model, small_data, *overrides)
    assert re.search(words, message), message


@pytest.mark.parametrize("key", ["name_or_path", "vision_tower"])
def test_a_model_that_is_no_folder_and_not_on_the_hub_here_is_one_line(key, tmp_path, tiny_model, small_data,
                                                                        monkeypatch, nothing_loaded):
    """The stage-1.5 YAML's `outputs/croc-vicuna-7b-stage1` before stage 1 made it (or from another working
    folder), or a Hub id offline and not cached, reads as a Hub id: it once ended in huggingface_hub's traceback
    when the processor loaded."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    message = _error(monkeypatch, STAGE1_5, tmp_path, tiny_model, small_data,
                     f"--model.{key}=outputs/croc-vicuna-7b-stage1")
    assert message.startswith(f"configuration error: model.{key}: outputs/croc-vicuna-7b-stage1 is no local folder "
                              f"(nothing at {tmp_path / 'outputs' / 'croc-vicuna-7b-stage1'}) and, as a Hub id, not "
                              "in the Hub cache, and the Hub is switched off (HF_HUB_OFFLINE=1)"), message


def test_a_folder_of_a_family_croc_does_not_run_on_is_one_line_naming_the_families(tmp_path, small_data,
                                                                                   monkeypatch, nothing_loaded):
    """An Aya Vision folder (a transformers VLM family without a Croc declaration) is refused from its config.json; the
    line said "expected one of" over a Python list and three tuples, not that the family is not one Croc runs on."""
    import json

    folder = tmp_path / "aya_vision"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "aya_vision"}))
    message = _error(monkeypatch, STAGE1_5, tmp_path, folder, small_data)
    assert message.startswith(f"configuration error: {folder} has model_type='aya_vision', which Croc does not run "
                              "on: it runs on a plain folder of one of its families (llava, "), message
    assert "docs/MODELS.md#families" in message and "[" not in message and "(" + "'" not in message, message


def test_broken_yaml_names_the_file_and_line(tmp_path, tiny_model, small_data, monkeypatch, nothing_loaded):
    config = tmp_path / "broken.yaml"
    config.write_text('stage: "1.5"\nmodel:\n  name_or_path: [unclosed\n')
    message = _error(monkeypatch, config, tmp_path, tiny_model, small_data)
    assert f"{config}:4:1: not valid YAML" in message or f"{config}:3:" in message, message


def test_resume_from_an_incomplete_checkpoint_is_refused(tmp_path, tiny_model, small_data, monkeypatch,
                                                         nothing_loaded):
    broken = tmp_path / "out" / "checkpoint-2"
    broken.mkdir(parents=True)
    (broken / "trainer_state.json").write_text('{"global_step": 2, "log_hist')  # cut while being written
    message = _error(monkeypatch, STAGE1_5, tmp_path, tiny_model, small_data, f"--resume_from_checkpoint={broken}")
    assert "is incomplete" in message


def test_a_croc_field_error_found_at_load_is_still_one_line_before_the_weights(tmp_path, tiny_model, small_data,
                                                                               monkeypatch):
    """A source whose config.json cannot be read ahead (an uncached Hub id): the load constructs the config before
    it reads a weight, and the error is still a one-line configuration error."""
    monkeypatch.setattr(resolve_module, "read_croc_config", lambda *args, **kwargs: None)

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were read before the configuration error")

    monkeypatch.setattr(loading, "load_pretrained_croc", no_weights)
    message = _error(monkeypatch, STAGE1_5, tmp_path, tiny_model, small_data,
                     "--croc_overrides={prompt_pool_size: 8}")
    assert message.startswith("configuration error: model config: Hungarian matching is one-to-one")


def test_config_of_separate_parts_is_checked_from_the_clip_folder(tmp_path):
    CLIPVisionConfig(image_size=56, patch_size=14, hidden_size=24, intermediate_size=48, num_hidden_layers=1,
                     num_attention_heads=4).save_pretrained(tmp_path / "clip")
    assert read_croc_config(vision_tower=tmp_path / "clip", croc_fields={"prompt_pool_size": 12}).image_seq_length == 16
    with pytest.raises(CrocConfigError, match="12 masked tokens"):
        read_croc_config(vision_tower=tmp_path / "clip", croc_fields={"prompt_pool_size": 8})
    # Offline and not cached: nothing to read ahead, the load will construct (and check) the config itself.
    assert read_croc_config("nobody/no-such-model", croc_fields={"prompt_pool_size": 8}) is None


def test_packing_a_onevision_model_is_refused_before_anything_loads(tmp_path, small_data, monkeypatch,
                                                                      nothing_loaded):
    """The collator packs fixed-size images only: AnyRes images (crops and sizes per image) would fail to stack in
    the first batch, so a OneVision model with packing is a configuration error."""
    from croc_testing.tiny import save_tiny_croc_onevision

    onevision = save_tiny_croc_onevision(tmp_path / "onevision")
    message = _error(monkeypatch, STAGE1_5, tmp_path, onevision, small_data, "--packing=true",
                     "--croc_overrides={prompt_pool_size: 64}")
    assert "croc_onevision images have a token count of their own" in message and "set packing=false" in message


@pytest.mark.parametrize("case", ["output_dir is the model folder", "resume with no checkpoint",
                                  "changes accepted with nothing to resume"])
def test_an_output_dir_refused_without_the_run_record_is_refused_before_the_rows_are_read(
        case, tmp_path, tiny_model, small_data, monkeypatch, nothing_loaded):
    """These refusals need neither the rows nor the model, yet came only after every training row was read and
    checked (the run record the other resume checks compare counts the rows): on a large set, hours of image
    checks before one line."""
    out, overrides, words = {
        "output_dir is the model folder": (tiny_model, [], "already holds config.json, model.safetensors"),
        "resume with no checkpoint": (tmp_path / "out", ["--resume_from_checkpoint=true"],
                                      "resume_from_checkpoint=true but .* holds no checkpoint"),
        "changes accepted with nothing to resume": (tmp_path / "out", ["--resume_accept_changes=[warmup_steps]"],
                                                    "resume_accept_changes is set but there is no checkpoint"),
    }[case]
    import re

    message = _error(monkeypatch, STAGE1_5, tmp_path, tiny_model, small_data, *overrides, f"--output_dir={out}")
    assert re.search(words, message), message


def test_a_config_path_that_is_a_folder_is_not_said_to_be_missing(tmp_path, tiny_model, small_data, monkeypatch,
                                                                  nothing_loaded):
    message = _error(monkeypatch, STAGE1_5.parent, tmp_path, tiny_model, small_data)
    assert f"config file {STAGE1_5.parent} is a folder; name a YAML file in it" in message, message


@pytest.mark.parametrize("override, hint", [
    ("--model.name_or_pth=x", "(did you mean: model.name_or_pth -> model.name_or_path);"),
    ("--model.learning_rate=1", "(did you mean: model.learning_rate -> learning_rate);"),
    # Two keys about as close: both are named.
    ("--per_device_batch_size=1", "(did you mean: per_device_batch_size -> per_device_eval_batch_size or "
                                  "per_device_train_batch_size);"),
], ids=["misspelt", "wrong section", "two as close"])
def test_an_unknown_key_hints_a_second_key_only_when_it_is_about_as_close(override, hint, tmp_path, tiny_model,
                                                                          small_data, monkeypatch, nothing_loaded):
    """The hint named a far second look-alike too: `model.name_or_pth -> model.name_or_path or model.lora_alpha`."""
    message = _error(monkeypatch, STAGE1_5, tmp_path, tiny_model, small_data, override)
    assert hint in message, message


@pytest.mark.parametrize("text", ["", "# stage 2, to fill in\n\n# model:\n"], ids=["0 bytes", "only comments"])
def test_an_empty_config_file_is_said_to_be_empty(text, tmp_path, tiny_model, small_data, monkeypatch,
                                                  nothing_loaded):
    """It read as no keys, and the run stopped on the first required one: `data.path is required ...`."""
    config = tmp_path / "empty.yaml"
    config.write_text(text)
    message = _error(monkeypatch, config, tmp_path, tiny_model, small_data)
    assert message == (f"configuration error: config file {config} is empty (only blank lines or comments); "
                       "trainer/configs/ holds complete configs, or write `{}` in it to give every key on the command "
                       "line"), message
