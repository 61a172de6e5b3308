"""`--hub_dry_run DIR` writes exactly what `push_to_hub` would upload: config, safetensors, processor files and a
model card with the Croc metadata. No network."""

from __future__ import annotations

import pytest
from huggingface_hub import ModelCard
from trainer_helpers import log_history, run_stage

from modeling_croc import CrocForConditionalGeneration, CrocProcessor
from modeling_croc.publish_folder import PUBLISH_MARKER
from trainer.hub import files_to_upload


def test_hub_dry_run_folder(tmp_path, data_dir, stage1_dir):
    out, dry = tmp_path / "stage2", tmp_path / "to_upload"
    run_stage("stage2.yaml", out, f"--data.path={data_dir / 'qa.json'}", f"--model.name_or_path={stage1_dir}",
              "--max_steps=2", "--save_strategy=steps", "--save_steps=1", f"--hub_dry_run={dry}",
              "--hub_model_id=someone/croc-tiny-stage2", "--hub_license=llama2",
              "--hub_datasets=[liuhaotian/LLaVA-Instruct-150K]",
              "--model.base_models=[lmsys/vicuna-7b-v1.5, openai/clip-vit-large-patch14-336]")
    uploaded = sorted(p.relative_to(dry).as_posix() for p in dry.rglob("*") if p.is_file() and p.name != PUBLISH_MARKER)
    assert uploaded == files_to_upload(out)  # the same selection push_to_hub makes from output_dir
    for name in ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json",
                 "tokenizer_config.json", "chat_template.jinja", "README.md"):
        assert name in uploaded, name
    assert not any(name.startswith("checkpoint-") for name in uploaded)  # checkpoints stay local

    card = ModelCard.load(dry / "README.md")
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "image-text-to-text" and data["library_name"] == "transformers"
    assert data["license"] == "llama2"
    assert data["base_model"] == ["lmsys/vicuna-7b-v1.5", "openai/clip-vit-large-patch14-336"]
    assert data["datasets"] == ["liuhaotian/LLaVA-Instruct-150K"]
    assert data["croc_stage"] == "2" and "croc-stage-2" in data["tags"]
    assert data["croc_config"]["croc_preset"] == "paper" and data["croc_config"]["croc_pretraining"] is False
    hyper = data["training_hyperparameters"]
    assert hyper["learning_rates"] == {"projector": 2e-5, "language_model": 2e-5}
    assert hyper["adam_betas"] == [0.9, 0.98] and hyper["global_batch_size"] == 8
    last = [entry for entry in log_history(out) if "loss" in entry][-1]
    assert data["final_losses"]["loss"] == pytest.approx(last["loss"], rel=1e-5)
    assert "train_loss" in data["final_losses"]
    assert "# to_upload" not in card.text and "stage 2" in card.text

    # What would be uploaded is a working model folder.
    CrocForConditionalGeneration.from_pretrained(dry)
    assert CrocProcessor.from_pretrained(dry).num_image_tokens == 16
