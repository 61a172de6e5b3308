"""A newcomer's path on Qwen2.5-VL, through the public CLIs: a saved plain Qwen2.5-VL folder (laid out as the Hub's)
-> Croc's stage 1.5 with one command (then stage 2 from it) -> a plain Qwen2.5-VL folder exported back, which the
parent class loads with the trained weights. Also what the run feeds the model: the Qwen2.5-VL chat format with each image's own number of
`<|image_pad|>` tokens, its patches and grid, and images bounded so that their masked tokens fit the pool."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from PIL import Image
from trainer_helpers import CONFIGS, log_history, run_stage
from transformers import Qwen2_5_VLForConditionalGeneration

from croc_testing.families import save_tiny_qwen2_5_vl, tiny_qwen2_5_vl_processor
from modeling_croc import CrocQwen2_5_VLConfig, CrocQwen2_5_VLForConditionalGeneration
from modeling_croc.convert.__main__ import main as convert_main
from modeling_croc.processing_croc_qwen2_5_vl import CrocQwen2_5_VLProcessor
from trainer import train as train_module
from trainer.collator import build_collator
from trainer.data import CrocSupervisedDataset
from trainer.model_loading import fit_images_to_pool


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory):
    return save_tiny_qwen2_5_vl(tmp_path_factory.mktemp("qwen") / "plain")


def test_samples_are_in_qwen2_5_vls_own_format(qwen_folder, data_dir):
    # Laid out as a Hub folder: its processor files name transformers' class, no code of this package.
    assert json.loads((qwen_folder / "processor_config.json").read_text())["processor_class"] == "Qwen2_5_VLProcessor"
    assert not list(qwen_folder.glob("*.py"))
    processor = CrocQwen2_5_VLProcessor.from_pretrained(qwen_folder)
    rows = json.loads((data_dir / "detailed.json").read_text())
    image_rows = [row for row in rows if "image" in row][:2]
    dataset = CrocSupervisedDataset(image_rows, processor, template="qwen2_vl", image_root=data_dir,
                                    model_max_length=4096)
    samples = [dataset[0], dataset[1]]
    tokenizer = processor.tokenizer
    for sample in samples:
        tokens = sample["image_grid_thw"].prod().item() // processor.image_processor.merge_size**2
        ids = sample["input_ids"].tolist()
        start = ids.index(tokenizer.convert_tokens_to_ids("<|vision_start|>"))
        assert ids[start + 1:start + 1 + tokens] == [processor.image_token_id] * tokens
        assert ids[start + 1 + tokens] == tokenizer.convert_tokens_to_ids("<|vision_end|>")
        assert sample["pixel_values"].shape[0] == sample["image_grid_thw"].prod().item()  # all of its patches
        text = tokenizer.decode(sample["input_ids"])
        assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                               "<|vision_start|>")
        supervised = tokenizer.decode(sample["input_ids"][sample["labels"] != -100])
        assert supervised.endswith("<|im_end|>\n") and "<|im_start|>" not in supervised
    # The collator keeps each image's patches, stacks the grids and writes the placeholder types.
    batch = build_collator(processor)(samples)
    assert batch["pixel_values"].shape[0] == int(batch["image_grid_thw"].prod(-1).sum())
    assert torch.equal(batch["mm_token_type_ids"].bool(), batch["input_ids"] == processor.image_token_id)


def test_images_are_bounded_so_their_masked_tokens_fit_the_pool():
    processor = tiny_qwen2_5_vl_processor()
    assert processor.num_image_tokens == 4
    config = CrocQwen2_5_VLConfig(croc_pretraining=True, prompt_pool_size=2, vtr_head="linear")
    fit_images_to_pool(processor, config)
    # 3 tokens mask round(2.25) = 2 <= 2; 4 would mask 3.
    assert processor.num_image_tokens == 3 and config.num_masked_tokens(3) <= 2 < config.num_masked_tokens(4)
    unbounded = tiny_qwen2_5_vl_processor()
    fit_images_to_pool(unbounded, CrocQwen2_5_VLConfig(croc_pretraining=False, prompt_pool_size=2, vtr_head="linear"))
    assert unbounded.num_image_tokens == 4  # no stage-1.5 matching, nothing to bound


def test_stages_from_a_plain_folder_and_export_back(qwen_folder, data_dir, tmp_path, monkeypatch):
    out = tmp_path / "stage1_5"
    run_stage("stage1_5_qwen2_5_vl.yaml", out, f"--model.name_or_path={qwen_folder}",
              f"--data.path={data_dir / 'detailed.json'}", "--max_steps=2")
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_type"] == "croc_qwen2_5_vl" and saved["prompt_pool_calibrated"]
    logged = [entry for entry in log_history(out) if "loss" in entry]
    assert len(logged) == 2
    for entry in logged:  # both objectives ran, weighted as the preset says
        assert entry["lm_loss"] > 0 and entry["vtr_loss"] > 0
        assert entry["loss"] == pytest.approx(entry["lm_loss"] + 10 * entry["vtr_loss"], rel=1e-3)
    croc = CrocQwen2_5_VLForConditionalGeneration.from_pretrained(out).eval()
    start = Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen_folder)
    trained = croc.model.language_model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(trained, start.model.language_model.layers[0].self_attn.q_proj.weight)
    # The saved processor prompts with Qwen2.5-VL's own image placeholder.
    prompt = CrocQwen2_5_VLProcessor.from_pretrained(out).apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]}],
        add_generation_prompt=True, tokenize=False)
    assert "<|vision_start|><|image_pad|><|vision_end|>Describe it.<|im_end|>\n<|im_start|>assistant\n" in prompt

    # Stage 2 from the stage-1.5 folder (LLaVA's stage-2 YAML, no template named): the plain objective in Qwen2.5-VL's
    # own chat format, the family's default; packing is refused in one line.
    run_stage("stage2.yaml", tmp_path / "stage2", f"--model.name_or_path={out}",
              f"--data.path={data_dir / 'qa.json'}", "--max_steps=1")
    (stage2,) = [entry for entry in log_history(tmp_path / "stage2") if "loss" in entry]
    assert stage2["lm_loss"] > 0 and "vtr_loss" not in stage2
    assert json.loads((tmp_path / "stage2" / "croc_run.json").read_text())["template"] == "qwen2_vl"
    monkeypatch.setattr(sys, "argv", ["trainer.train", str(CONFIGS / "stage2.yaml"), f"--output_dir={tmp_path / 'p'}",
                                      f"--model.name_or_path={out}", "--packing=true",
                                      f"--data.path={data_dir / 'qa.json'}"])
    with pytest.raises(SystemExit, match="croc_qwen2_5_vl images have a token count of their own"):
        train_module.cli()

    convert_main(["to-plain", str(out), str(tmp_path / "exported")])
    exported = tmp_path / "exported"
    assert json.loads((exported / "config.json").read_text())["model_type"] == "qwen2_5_vl"
    assert json.loads((exported / "processor_config.json").read_text())["processor_class"] == "Qwen2_5_VLProcessor"
    assert not list(exported.glob("*.py"))  # no remote code: the parent class loads it natively
    plain, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(exported, output_loading_info=True)
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    processor = CrocQwen2_5_VLProcessor.from_pretrained(exported)
    image = Image.open(data_dir / "images" / "000.png")
    inputs = processor(text=["<|vision_start|><|image_pad|><|vision_end|>Describe the image."], images=[image],
                       return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(**inputs).logits, croc(**inputs).logits, rtol=0, atol=0)


def test_a_family_without_its_data_path_is_refused_in_one_line(data_dir, tmp_path, monkeypatch):
    """A family whose data path the trainer does not build (its `families.py` entry's `trainer_data=False`; here
    SmolVLM's, set so on a copy of the table whatever its entry says) keeps its model classes, conversion and export,
    and a run on its folder stops before anything loads, saying so."""
    import dataclasses

    import modeling_croc.families
    import trainer.resolve
    from croc_testing.smolvlm import tiny_croc_smolvlm_config
    from modeling_croc import CrocSmolVLMConfig, CrocSmolVLMForConditionalGeneration
    from modeling_croc.convert import croc_to_llava

    table = dict(modeling_croc.families.FAMILY_OF_CONFIG)
    table[CrocSmolVLMConfig] = dataclasses.replace(table[CrocSmolVLMConfig], trainer_data=False)
    monkeypatch.setattr(modeling_croc.families, "FAMILY_OF_CONFIG", table)
    monkeypatch.setattr(trainer.resolve, "FAMILY_OF_CONFIG", table)
    torch.manual_seed(0)
    croc_to_llava(CrocSmolVLMForConditionalGeneration(tiny_croc_smolvlm_config())).save_pretrained(
        tmp_path / "smolvlm")
    monkeypatch.setattr(sys, "argv", ["trainer.train", str(CONFIGS / "stage1_5.yaml"), f"--output_dir={tmp_path / 'o'}",
                                      f"--model.name_or_path={tmp_path / 'smolvlm'}",
                                      f"--data.path={data_dir / 'detailed.json'}"])
    with pytest.raises(SystemExit) as stop:
        train_module.cli()
    message = str(stop.value.code)
    assert "smolvlm: the trainer's data path" in message and "\n" not in message
    assert not (tmp_path / "o").exists()
