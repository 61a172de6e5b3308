"""Each stage runs a few steps from its cpu_tiny YAML; exactly the stage's parameter groups change, the Croc metrics
reach the logs, and the saved folder loads with `from_pretrained`."""

from __future__ import annotations

import json
import math

import pytest
import torch
from trainer_helpers import changed_groups, log_history, run_stage

from modeling_croc import CrocForConditionalGeneration


def _assert_folder_loads(folder, trained):
    reloaded = CrocForConditionalGeneration.from_pretrained(folder)
    for name, tensor in trained.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    for name in ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json"):
        assert (folder / name).is_file(), name
    return reloaded


def test_stage1_trains_only_the_projector(tmp_path, data_dir, stage0_dir, initial_state):
    out = tmp_path / "stage1"
    trainer = run_stage("stage1.yaml", out, f"--data.path={data_dir / 'captions.json'}", "--max_steps=2",
                        f"--model.name_or_path={stage0_dir}")
    assert changed_groups(initial_state, trainer.model) == {"projector"}
    assert trainer.optimizer.param_groups[0]["lr"] >= 0 and trainer.args.group_learning_rates == {"projector": 1e-3}
    assert [h["lm_loss"] for h in log_history(out) if "lm_loss" in h]
    _assert_folder_loads(out, trainer.model)


def test_stage1_from_separate_clip_and_llm_checkpoints(tmp_path, data_dir, initial_state):
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from croc_testing.tiny import llama_sentencepiece_tokenizer, tiny_croc_processor

    clip_dir, llm_dir = tmp_path / "clip", tmp_path / "llm"
    CLIPVisionModel(CLIPVisionConfig(hidden_size=24, intermediate_size=48, num_hidden_layers=1,
                                     num_attention_heads=4, image_size=56, patch_size=14)).save_pretrained(clip_dir)
    tiny_croc_processor().image_processor.save_pretrained(clip_dir)
    LlamaForCausalLM(LlamaConfig(vocab_size=32000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=4)).save_pretrained(llm_dir)
    llama_sentencepiece_tokenizer(add_llava_tokens=False).save_pretrained(llm_dir)

    out = tmp_path / "stage1"
    trainer = run_stage("stage1.yaml", out, f"--data.path={data_dir / 'captions.json'}", "--max_steps=1",
                        "--model.name_or_path=null", f"--model.vision_tower={clip_dir}", f"--model.language_model={llm_dir}")
    config = trainer.model.config
    assert (config.image_token_id, config.text_config.vocab_size) == (32000, 32064)  # <image>, <pad>, padded to 64
    assert changed_groups(initial_state, trainer.model) == {"projector"}
    _assert_folder_loads(out, trainer.model)


@pytest.mark.parametrize("preset", ["paper", "paper_literal", "official"])
def test_stage1_5_trains_projector_pool_and_llm(tmp_path, data_dir, stage1_dir, initial_state, preset):
    out = tmp_path / "stage1_5"
    trainer = run_stage("stage1_5.yaml", out, f"--data.path={data_dir / 'detailed.json'}",
                        f"--model.name_or_path={stage1_dir}", f"--croc_preset={preset}", "--max_steps=2")
    has_head = preset != "paper_literal"  # the paper default's linear head; the released BERT-layer head
    assert changed_groups(initial_state, trainer.model) == {"projector", "prompt_pool", "language_model",
                                                            *(["vtr_head"] if has_head else [])}
    config = trainer.model.config
    assert config.croc_pretraining and config.croc_preset == preset
    assert (trainer.model.vtr_head is not None) == has_head
    if preset != "official":
        assert config.prompt_pool_calibrated  # drawn from visual statistics at the start, recorded in the folder
        assert json.loads((out / "config.json").read_text())["prompt_pool_calibrated"] is True
    logged = [entry for entry in log_history(out) if "loss" in entry]
    assert len(logged) == 2
    for entry in logged:
        assert {"lm_loss", "vtr_loss", "pool_utilisation", "pool_entropy", "lr_prompt_pool"} <= set(entry)
        assert ("lr_vtr_head" in entry) == has_head
        assert 0 < entry["pool_utilisation"] <= 1 and entry["pool_entropy"] >= 0
        if preset != "official":  # one-to-one: an image's 12 masked tokens take 12 distinct pool tokens
            assert entry["pool_utilisation"] >= 12 / 64 and entry["pool_entropy"] >= 0.99 * math.log(12)
        weighted = entry["lm_loss"] + config.vtr_loss_weight * entry["vtr_loss"]
        assert entry["loss"] == pytest.approx(weighted, rel=1e-4)
        # The scale diagnostics: the VTR term's share of the loss and the norms it compares.
        assert entry["vtr_share"] == pytest.approx(config.vtr_loss_weight * entry["vtr_loss"] / weighted, rel=1e-4)
        assert entry["vtr_prediction_norm"] > 0 and entry["vtr_target_norm"] > 0
    _assert_folder_loads(out, trainer.model)


def test_stage1_5_from_a_transformers_llava_folder(tmp_path, data_dir, stage1_dir, initial_state):
    from modeling_croc.convert.to_llava import export_llava_folder

    llava_dir = export_llava_folder(stage1_dir, tmp_path / "llava")
    assert json.loads((llava_dir / "config.json").read_text())["model_type"] == "llava"
    out = tmp_path / "stage1_5"
    trainer = run_stage("stage1_5.yaml", out, f"--data.path={data_dir / 'detailed.json'}",
                        f"--model.name_or_path={llava_dir}", "--croc_preset=official", "--max_steps=1")
    assert trainer.model.config.croc_preset == "official" and trainer.model.vtr_head is not None
    assert changed_groups(initial_state, trainer.model) == {"projector", "prompt_pool", "vtr_head", "language_model"}
    reference = CrocForConditionalGeneration.from_pretrained(stage1_dir).state_dict()
    for name, tensor in initial_state.items():  # the llava weights arrived intact
        if name.startswith(("model.language_model.", "model.vision_tower.", "lm_head.")):
            torch.testing.assert_close(tensor, reference[name], rtol=0, atol=0, msg=name)
    # A preset switch draws a fresh pool for the new preset: N(0, 1) for `official`.
    assert 0.8 < float(initial_state["model.prompt_pool.weight"].std()) < 1.2
    _assert_folder_loads(out, trainer.model)


def test_stage2_trains_projector_and_llm_without_croc_objectives(tmp_path, data_dir, stage1_dir, initial_state):
    out = tmp_path / "stage2"
    trainer = run_stage("stage2.yaml", out, f"--data.path={data_dir / 'qa.json'}",
                        f"--model.name_or_path={stage1_dir}", "--max_steps=2")
    assert changed_groups(initial_state, trainer.model) == {"projector", "language_model"}
    assert not trainer.model.config.croc_pretraining
    for entry in (e for e in log_history(out) if "loss" in e):
        assert "vtr_loss" not in entry and entry["lm_loss"] == pytest.approx(entry["loss"], rel=1e-5)
    _assert_folder_loads(out, trainer.model)


def test_stage1_5_victor_on_onevision_images_of_different_sizes(tmp_path, initial_state):
    """ViCToR's setting end to end on the AnyRes model: the images of a batch expand to different token counts, the
    vision tower trains with the projector, pool, linear head and LM, and the step's VTR count is image by image."""
    from PIL import Image

    from croc_testing.tiny import save_tiny_croc_onevision
    from modeling_croc import CrocOnevisionForConditionalGeneration

    rows = []
    for i, size in enumerate([(20, 56), (56, 20), (56, 56), (60, 24)] * 2):  # tall, wide, square: other grids
        Image.new("RGB", size, (40 * i, 120, 200)).save(tmp_path / f"{i}.png")
        rows.append({"id": str(i), "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nPlease generate detailed descriptions of the given image."},
            {"from": "gpt", "value": f"A picture of {size[0]} by {size[1]} pixels."}]})
    (tmp_path / "recap.json").write_text(json.dumps(rows))
    model_dir = save_tiny_croc_onevision(tmp_path / "onevision")
    out = tmp_path / "stage1_5"
    trainer = run_stage("stage1_5.yaml", out, f"--data.path={tmp_path / 'recap.json'}",
                        f"--model.name_or_path={model_dir}", "--croc_preset=victor", "--template=qwen_1_5",
                        "--model.attn_implementation=eager", "--max_steps=2")
    model = trainer.model
    assert type(model) is CrocOnevisionForConditionalGeneration and model.config.matching_scope == "row"
    assert trainer.args.group_learning_rates == {"projector": 1e-5, "prompt_pool": 1.5e-4, "vtr_head": 1e-5,
                                                 "language_model": 1e-5, "vision_tower": 2e-6}
    assert changed_groups(initial_state, model) == {"projector", "prompt_pool", "vtr_head", "language_model",
                                                    "vision_tower"}
    dataset = trainer.train_dataset
    counts = {int((dataset[i]["input_ids"] == model.config.image_token_id).sum()) for i in range(8)}
    assert len(counts) > 1, "the training images expand to different token counts"
    logged = [entry for entry in log_history(out) if "loss" in entry]
    assert len(logged) == 2 and all(entry["vtr_loss"] > 0 and entry["lr_vision_tower"] > 0 for entry in logged)
    reloaded = CrocOnevisionForConditionalGeneration.from_pretrained(out)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
