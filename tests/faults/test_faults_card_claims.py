"""The card of a real LoRA run names what its adapter folder holds (found by a hostile tester): a stage-2 folder said
it carried "the fully trained projector, prompt pool and head", and stage 2 trains no pool or head."""

from __future__ import annotations

import json

import torch
from huggingface_hub import ModelCard
from publish_cases import REPO
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


def test_a_stage15_lora_card_gives_the_peft_route_that_equals_the_merged_model(tiny_model, tmp_path):
    """With the `official` preset stage 1.5 sets `normalize_visual_tokens`, which the base folder's config lacks:
    PEFT on the base the adapter names gave a model 0.58 away in logits from the run's merged folder, without a word.
    The card names the route that equals it: the base built with the folder's `base_config/`."""
    from peft import PeftModel
    from PIL import Image
    from transformers import AutoConfig, AutoModelForImageTextToText

    from modeling_croc.loading import load_processor

    out = tmp_path / "out"
    train_module.main([str(REPO / "trainer" / "configs" / "cpu_tiny" / "stage1_5.yaml"), f"--output_dir={out}",
                       f"--model.name_or_path={tiny_model}", f"--data.path={_data(tmp_path / 'data')}",
                       "--disable_tqdm=true", "--group_by_modality_length=false", "--max_steps=1",
                       "--per_device_train_batch_size=2", "--global_batch_size=2", "--model.use_peft=true",
                       "--croc_preset=official"])
    card = ModelCard.load(out / "README.md").text
    assert ('config=AutoConfig.from_pretrained(FOLDER, subfolder="base_config", trust_remote_code=True)' in card)
    config = AutoConfig.from_pretrained(out, subfolder="base_config", trust_remote_code=True)
    assert config.normalize_visual_tokens and not AutoConfig.from_pretrained(tiny_model).normalize_visual_tokens
    base = AutoModelForImageTextToText.from_pretrained(tiny_model, config=config, trust_remote_code=True)
    peft_model = PeftModel.from_pretrained(base, str(out)).eval()
    merged = AutoModelForImageTextToText.from_pretrained(f"{out}-merged").eval()
    processor = load_processor(out)
    inputs = processor(images=[Image.new("RGB", (40, 30), (200, 40, 40))], text=["<image>\nWhat colour?"],
                       return_tensors="pt")
    naive = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny_model), str(out)).eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(**inputs).logits, merged(**inputs).logits, atol=1e-5, rtol=1e-5)
        assert (naive(**inputs).logits - merged(**inputs).logits).abs().max() > 1e-3  # why the card says it
