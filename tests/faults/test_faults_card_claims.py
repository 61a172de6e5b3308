"""The card of a real LoRA run names what its adapter folder holds (found by a hostile tester): a stage-2 folder said
it carried "the fully trained projector, prompt pool and head", and stage 2 trains no pool or head."""

from __future__ import annotations

import json

from huggingface_hub import ModelCard
from publish_cases import run_argv as _argv
from publish_cases import write_data as _data
from safetensors import safe_open

from trainer import train as train_module


def test_a_stage2_lora_runs_card_names_only_the_projector_its_folder_holds(tiny_model, tmp_path):
    out = tmp_path / "out"
    train_module.main(_argv(out, tiny_model, _data(tmp_path / "data"), "--model.use_peft=true"))
    line = next(line for line in ModelCard.load(out / "README.md").text.split("\n")
                if line.startswith("This folder holds LoRA adapters"))
    assert "with the fully trained projector, for the Croc base folder" in line, line
    assert "prompt pool" not in line and "head" not in line, line
    # What the line says is what the folder holds: the adapters and the projector, kept whole by PEFT.
    assert json.loads((out / "adapter_config.json").read_text())["modules_to_save"] == ["model.multi_modal_projector"]
    with safe_open(out / "adapter_model.safetensors", "pt") as weights:
        whole = {name for name in weights.keys() if "lora_" not in name}
    assert whole and all("multi_modal_projector" in name for name in whole), whole
