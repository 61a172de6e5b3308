"""The full-scale stage-1.5 YAML of every family beyond LLaVA-1.5 (`trainer/configs/<family>/stage1_5.yaml`): it
resolves, names the family's own chat format (or the stage's, where the family has none), takes the `paper` preset's
stage-1.5 rates it says it takes (written out here, not read from the preset table) with Croc's batch, length and
ZeRO-3, keeps packing off, and opens with the commands that fetch its model into the folder it trains from, run it
and export the result back to a plain folder."""

from __future__ import annotations

import json

import pytest
from trainer_helpers import CONFIGS, REPO

from croc_testing.optional import needs_deepspeed
from modeling_croc.families import FAMILY_OF_PLAIN_MODEL_TYPE
from trainer import validation
from trainer.cli import load_raw_config

FAMILY_YAMLS = sorted(path for path in CONFIGS.parent.glob("*/stage1_5.yaml")
                      if path.parent.name in FAMILY_OF_PLAIN_MODEL_TYPE)


def test_every_family_beyond_the_llava_ones_has_one():
    # LLaVA-1.5's are trainer/configs/stage*.yaml (paper table 7), OneVision's trainer/configs/victor/ (ViCToR's). A
    # family whose data path the trainer does not build (`trainer_data=False`) has none: its run would be refused.
    untrained = {name for name, family in FAMILY_OF_PLAIN_MODEL_TYPE.items() if not family.trainer_data}
    assert {path.parent.name for path in FAMILY_YAMLS} == (set(FAMILY_OF_PLAIN_MODEL_TYPE) - {"llava", "llava_onevision"}
                                                           - untrained)


@needs_deepspeed
@pytest.mark.parametrize("path", FAMILY_YAMLS, ids=lambda path: path.parent.name)
def test_family_yaml_states_its_settings(path, monkeypatch):
    monkeypatch.setattr(validation, "gpu_available", lambda: True)
    raw = load_raw_config([str(path)])
    training = raw["training"]
    validation.check_deepspeed(training)
    family = FAMILY_OF_PLAIN_MODEL_TYPE[path.parent.name]
    assert (training["stage"], training["croc_preset"]) == ("1.5", "paper")
    assert training.get("template") == family.template
    assert {group: training[f"{group}_lr"] for group in ("projector", "prompt_pool", "vtr_head", "language_model")} \
        == {"projector": 1.5e-4, "prompt_pool": 1.5e-4, "vtr_head": 1.5e-4, "language_model": 2e-5}
    assert (training["adam_beta1"], training["adam_beta2"]) == (0.9, 0.98)
    assert (training["global_batch_size"], training["model_max_length"]) == (128, 8192)
    assert not training.get("packing", False)
    assert json.loads((REPO / training["deepspeed"]).read_text())["zero_optimization"]["stage"] == 3
    header = path.read_text().split('stage: "1.5"')[0]
    model_folder = raw["model"]["name_or_path"]
    assert f"--local-dir {model_folder}" in header, "the header fetches the folder the run trains from"
    assert f"-m trainer.train {path.relative_to(REPO)}" in header
    assert f"to-plain {training['output_dir']} " in header
    assert "Where the settings come from" in header
