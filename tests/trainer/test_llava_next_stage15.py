"""A newcomer's path on LLaVA-NeXT, through the public CLIs: a saved plain LLaVA-NeXT folder (laid out as the Hub's)
-> Croc's stage 1.5 with one command (then stage 2 from it) -> a plain LLaVA-NeXT folder exported back, which the
parent class loads with the trained weights. Also what the run feeds the model: each image's `<image>` expanded to as
many tokens as LLaVA-NeXT's packing gives for its size (AnyRes crops, unpadding, newline tokens), its crops and size."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from PIL import Image
from trainer_helpers import CONFIGS, log_history, run_stage
from transformers import LlavaNextForConditionalGeneration, LlavaNextProcessor
from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

from croc_testing.llava_next import LLAVA_NEXT_PINPOINTS, save_tiny_llava_next
from modeling_croc import CrocLlavaNextForConditionalGeneration, CrocLlavaNextProcessor
from modeling_croc.conversation import VICUNA_V1_SYSTEM
from modeling_croc.convert.__main__ import main as convert_main
from modeling_croc.loading import load_croc
from trainer import train as train_module
from trainer.collator import build_collator
from trainer.data import CrocSupervisedDataset

# (height, width) of images of several aspect ratios (wide, tall, large, square, mildly wide): different AnyRes grids
# and unpadded token counts.
SIZES = [(20, 50), (60, 30), (90, 80), (28, 28), (37, 53)]


@pytest.fixture(scope="module")
def next_folder(tmp_path_factory):
    return save_tiny_llava_next(tmp_path_factory.mktemp("llava_next") / "plain")


@pytest.fixture
def aspect_rows(tmp_path):
    rows = []
    for index, (height, width) in enumerate(SIZES):
        Image.new("RGB", (width, height), (40 * index, 120, 200)).save(tmp_path / f"{index}.png")
        rows.append({"id": f"img-{index}", "image": f"{index}.png", "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image."},
            {"from": "gpt", "value": f"A blue picture number {index}."}]})
    return rows


def test_samples_carry_the_models_token_count_for_every_image_size(next_folder, aspect_rows, tmp_path):
    # Laid out as a Hub folder: its processor files name transformers' class, no code of this package.
    assert json.loads((next_folder / "processor_config.json").read_text())["processor_class"] == "LlavaNextProcessor"
    assert not list(next_folder.glob("*.py"))
    processor = CrocLlavaNextProcessor.from_pretrained(next_folder)
    croc, _ = load_croc(next_folder, croc_fields={"croc_pretraining": True})
    assert processor.image_token_id == croc.config.image_token_id
    dataset = CrocSupervisedDataset(aspect_rows, processor, template="vicuna_v1", image_root=tmp_path,
                                    model_max_length=512)
    samples = [dataset[index] for index in range(len(aspect_rows))]
    tokenizer = processor.tokenizer
    counts = []
    for (height, width), sample in zip(SIZES, samples):
        assert sample["image_sizes"].tolist() == [height, width]
        crops = image_size_to_num_patches((height, width), LLAVA_NEXT_PINPOINTS, 28)
        assert sample["pixel_values"].shape == (crops, 3, 28, 28)
        # One contiguous run of image tokens, as many as the model packs for this size.
        expected = int(croc.image_token_counts(None, 1, image_sizes=sample["image_sizes"][None])[0])
        ids = sample["input_ids"]
        positions = (ids == processor.image_token_id).nonzero().flatten()
        assert len(positions) == expected and int(positions[-1] - positions[0]) + 1 == expected
        assert expected <= processor.num_image_tokens  # the length estimate bounds every image
        counts.append(expected)
        text = tokenizer.decode(ids[ids != processor.image_token_id], skip_special_tokens=False)
        assert text.startswith(f"<s> {VICUNA_V1_SYSTEM} USER:")
        supervised = tokenizer.decode(ids[sample["labels"] != -100], skip_special_tokens=False)
        assert supervised.strip().startswith("A blue picture number") and supervised.endswith("</s>")
        assert "USER" not in supervised and "ASSISTANT" not in supervised
    assert len(set(counts)) >= 3  # the sizes do pack differently

    # The collator pads the crops to the batch's most and stacks the sizes; the stage-1.5 forward accepts it (it
    # raises where a row's image tokens and the packed count disagree) and computes both objectives.
    batch = build_collator(processor)(samples)
    most = max(sample["pixel_values"].shape[0] for sample in samples)
    assert batch["pixel_values"].shape == (len(samples), most, 3, 28, 28)
    assert batch["image_sizes"].tolist() == [list(size) for size in SIZES]
    for row, sample in enumerate(samples):
        crops = sample["pixel_values"].shape[0]
        assert torch.equal(batch["pixel_values"][row, :crops], sample["pixel_values"])
        assert not batch["pixel_values"][row, crops:].any()
    torch.manual_seed(0)
    output = croc.train()(**batch)
    assert torch.isfinite(output.lm_loss) and output.vtr_loss > 0


def test_stages_from_a_plain_folder_and_export_back(next_folder, data_dir, tmp_path, monkeypatch):
    out = tmp_path / "stage1_5"
    run_stage("stage1_5_llava_next.yaml", out, f"--model.name_or_path={next_folder}",
              f"--data.path={data_dir / 'detailed.json'}", "--max_steps=2")
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_type"] == "croc_llava_next" and saved["prompt_pool_calibrated"]
    logged = [entry for entry in log_history(out) if "loss" in entry]
    assert len(logged) == 2
    for entry in logged:  # both objectives ran, weighted as the preset says
        assert entry["lm_loss"] > 0 and entry["vtr_loss"] > 0
        assert entry["loss"] == pytest.approx(entry["lm_loss"] + 10 * entry["vtr_loss"], rel=1e-3)
    # No template of its own: the stage's (Vicuna v1, the format of the tiny folder's Llama LM).
    assert json.loads((out / "croc_run.json").read_text())["template"] == "vicuna_v1"
    croc = CrocLlavaNextForConditionalGeneration.from_pretrained(out).eval()
    start = LlavaNextForConditionalGeneration.from_pretrained(next_folder)
    trained = croc.model.language_model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(trained, start.model.language_model.layers[0].self_attn.q_proj.weight)

    # Stage 2 from the stage-1.5 folder: the plain objective; packing is refused in one line.
    run_stage("stage2.yaml", tmp_path / "stage2", f"--model.name_or_path={out}",
              f"--data.path={data_dir / 'qa.json'}", "--max_steps=1")
    (stage2,) = [entry for entry in log_history(tmp_path / "stage2") if "loss" in entry]
    assert stage2["lm_loss"] > 0 and "vtr_loss" not in stage2
    monkeypatch.setattr(sys, "argv", ["trainer.train", str(CONFIGS / "stage2.yaml"), f"--output_dir={tmp_path / 'p'}",
                                      f"--model.name_or_path={out}", "--packing=true",
                                      f"--data.path={data_dir / 'qa.json'}"])
    with pytest.raises(SystemExit, match="croc_llava_next images have a token count of their own"):
        train_module.cli()

    convert_main(["to-plain", str(out), str(tmp_path / "exported")])
    exported = tmp_path / "exported"
    assert json.loads((exported / "config.json").read_text())["model_type"] == "llava_next"
    assert json.loads((exported / "processor_config.json").read_text())["processor_class"] == "LlavaNextProcessor"
    assert not list(exported.glob("*.py"))  # no remote code: the parent class loads it natively
    plain, info = LlavaNextForConditionalGeneration.from_pretrained(exported, output_loading_info=True)
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    processor = LlavaNextProcessor.from_pretrained(exported)
    assert type(processor) is LlavaNextProcessor
    images = [Image.open(data_dir / "images" / "000.png"), Image.new("RGB", (50, 20), (10, 200, 30))]
    inputs = processor(text=["<image>\nDescribe the image.", "<image>\nWhat is it?"], images=images,
                       padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(**inputs).logits, croc(**inputs).logits, rtol=0, atol=0)
