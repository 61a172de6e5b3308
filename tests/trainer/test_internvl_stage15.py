"""A newcomer's path on InternVL, through the public CLIs: a saved plain InternVL folder (laid out as the Hub's -hf
checkpoints) -> Croc's stage 1.5 with one command -> stage 2 from its output -> a plain InternVL folder exported back,
which the parent class loads with the trained weights. Also what the runs feed the model: InternVL's chat format, each
image as the `<img>` + tiles x placeholders + `</img>` block its processor writes, and every tile of every image in
`pixel_values`."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from trainer_helpers import log_history, run_stage
from transformers import InternVLForConditionalGeneration

from croc_testing.internvl import INTERNVL_MAX_TILES, save_tiny_internvl, tiny_internvl_processor
from modeling_croc import CrocInternVLForConditionalGeneration, CrocInternVLProcessor
from modeling_croc.constants import IGNORE_INDEX
from modeling_croc.conversation import get_template
from modeling_croc.convert.__main__ import main as convert_main
from trainer.calibration import first_images
from trainer.collator import build_collator
from trainer.data import CrocSupervisedDataset

MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
TILE_TOKENS = 4


@pytest.fixture(scope="module")
def internvl_folder(tmp_path_factory):
    return save_tiny_internvl(tmp_path_factory.mktemp("internvl") / "plain")


def _rows(tmp_path):
    """Image rows on images of different shapes (so of different tile counts), and a text row."""
    sizes = {"wide.png": (64, 16), "square.png": (16, 16), "tall.png": (20, 44)}
    for index, (name, size) in enumerate(sizes.items()):
        Image.new("RGB", size, (40 * index, 200, 90)).save(tmp_path / name)
    rows = [{"id": name, "image": name, "conversations": [
        {"from": "human", "value": "<image>\nDescribe the image."},
        {"from": "gpt", "value": f"A picture {index}."}]} for index, name in enumerate(sizes)]
    rows.append({"id": "text", "conversations": [{"from": "human", "value": "Name a prime."},
                                                 {"from": "gpt", "value": "Seven."}]})
    return rows


def test_samples_are_the_processors_own(internvl_folder, tmp_path):
    config = json.loads((internvl_folder / "processor_config.json").read_text())
    assert config["processor_class"] == "InternVLProcessor" and not list(internvl_folder.glob("*.py"))
    processor = CrocInternVLProcessor.from_pretrained(internvl_folder)
    assert type(processor.image_processor).__name__ == "GotOcr2ImageProcessorPil"
    # The Hub's files leave tiling to the processor's default; called alone, the image processor tiles alike.
    assert not config["image_processor"]["crop_to_patches"] and processor.image_processor.crop_to_patches
    assert processor.num_image_tokens == (INTERNVL_MAX_TILES + 1) * TILE_TOKENS
    tokenizer = processor.tokenizer
    rows = _rows(tmp_path)
    dataset = CrocSupervisedDataset(rows, processor, template="internvl", image_root=tmp_path, model_max_length=512)
    assert [fit.verdict for fit in dataset.fit_rows(rows)] == ["unknown"] * 3 + ["whole"]

    # The template's chat template renders what InternVL's own renders; answered, the processor turns it into the
    # training sample's ids and tiles.
    template = get_template("internvl")
    own = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    ours = template.chat_template(tokenizer.eos_token, processor.image_token)
    assert processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False,
                                         chat_template=ours) == own
    assert own == "<|im_start|>user\n<IMG_CONTEXT>\nDescribe the image.<|im_end|>\n<|im_start|>assistant\n"
    # `InternVLProcessor.__call__` (transformers' own cannot load here: its video processor needs torchvision)
    plain = processor
    samples, tiles = [], []
    for index, row in enumerate(rows[:3]):
        sample = dataset[index]
        answered = own + row["conversations"][1]["value"] + "<|im_end|>\n"
        image = Image.open(tmp_path / row["image"])
        inputs = plain(text=[answered], images=[image], return_tensors="pt")
        assert sample["input_ids"].tolist() == inputs["input_ids"][0].tolist()
        torch.testing.assert_close(sample["pixel_values"], inputs["pixel_values"])
        supervised = tokenizer.decode(sample["input_ids"][sample["labels"] != IGNORE_INDEX])
        assert supervised == row["conversations"][1]["value"] + "<|im_end|>\n"
        count = int((sample["input_ids"] == processor.image_token_id).sum())
        assert count == TILE_TOKENS * sample["pixel_values"].shape[0]
        samples.append(sample)
        tiles.append(sample["pixel_values"].shape[0])
    assert len(set(tiles)) > 1  # images of their own tile counts

    # The collator concatenates every image's tiles in row order (no padding); text rows add none.
    batch = build_collator(processor)([samples[0], dataset[3], samples[1], samples[2]])
    assert batch["pixel_values"].shape == (sum(tiles), 3, 16, 16)
    torch.testing.assert_close(batch["pixel_values"], torch.cat([sample["pixel_values"] for sample in samples]))
    assert set(batch) == {"input_ids", "labels", "attention_mask", "pixel_values"}
    # The model joins tiles into images by their placeholder runs, and the trainer's VTR count (which passes the
    # tiles as `num_images`) counts images.
    model = CrocInternVLForConditionalGeneration.from_pretrained(internvl_folder)
    counts = model.image_token_counts(batch["input_ids"], batch["pixel_values"].shape[0])
    assert counts.tolist() == [TILE_TOKENS * count for count in tiles]
    assert model.num_vtr_items(batch["input_ids"], batch["pixel_values"].shape[0]) \
        == int(model.config.num_masked_tokens_per_image(counts).sum())
    # The pool calibration reads every tile of the first images.
    assert first_images(dataset, 3)["pixel_values"].shape == (sum(tiles), 3, 16, 16)


def test_stage15_then_stage2_from_a_plain_folder_and_export_back(internvl_folder, data_dir, tmp_path):
    out = tmp_path / "stage1_5"
    run_stage("stage1_5_internvl.yaml", out, f"--model.name_or_path={internvl_folder}",
              f"--data.path={data_dir / 'detailed.json'}", "--max_steps=2")
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_type"] == "croc_internvl" and saved["prompt_pool_calibrated"]
    logged = [entry for entry in log_history(out) if "loss" in entry]
    assert len(logged) == 2
    for entry in logged:  # both objectives ran, weighted as the preset says
        assert entry["lm_loss"] > 0 and entry["vtr_loss"] > 0
        assert entry["loss"] == pytest.approx(entry["lm_loss"] + 10 * entry["vtr_loss"], rel=1e-3)
    croc = CrocInternVLForConditionalGeneration.from_pretrained(out).eval()
    start = InternVLForConditionalGeneration.from_pretrained(internvl_folder)
    trained = croc.model.language_model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(trained, start.model.language_model.layers[0].self_attn.q_proj.weight)
    processor = CrocInternVLProcessor.from_pretrained(out)
    assert processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False) \
        == "<|im_start|>user\n<IMG_CONTEXT>\nDescribe the image.<|im_end|>\n<|im_start|>assistant\n"

    stage2 = tmp_path / "stage2"
    run_stage("stage2.yaml", stage2, f"--model.name_or_path={out}", f"--data.path={data_dir / 'qa.json'}",
              "--max_steps=2")
    saved = json.loads((stage2 / "config.json").read_text())
    assert saved["model_type"] == "croc_internvl" and not saved["croc_pretraining"]
    assert json.loads((stage2 / "croc_run.json").read_text())["template"] == "internvl"
    assert all(entry["loss"] > 0 for entry in log_history(stage2) if "loss" in entry)

    exported = tmp_path / "exported"
    convert_main(["to-plain", str(out), str(exported)])
    assert json.loads((exported / "config.json").read_text())["model_type"] == "internvl"
    assert json.loads((exported / "processor_config.json").read_text())["processor_class"] == "InternVLProcessor"
    assert not list(exported.glob("*.py"))  # no remote code: the parent classes load it natively
    plain, info = InternVLForConditionalGeneration.from_pretrained(exported, output_loading_info=True)
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    plain_processor = CrocInternVLProcessor.from_pretrained(exported)  # the parent's needs torchvision (video)
    image = Image.open(data_dir / "images" / "000.png")
    inputs = plain_processor(text=["<IMG_CONTEXT>\nDescribe the image."], images=[image], return_tensors="pt")
    assert inputs["pixel_values"].shape[0] > 1  # tiled
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(**inputs).logits, croc(**inputs).logits, rtol=0, atol=0)


def test_tiny_processor_round_trips(tmp_path):
    processor = tiny_internvl_processor()
    processor.save_pretrained(tmp_path)
    loaded = CrocInternVLProcessor.from_pretrained(tmp_path)
    assert (loaded.image_token_id, loaded.num_image_tokens) == (processor.image_token_id, processor.num_image_tokens)
    loaded.limit_visual_tokens(3 * TILE_TOKENS)
    assert loaded.num_image_tokens == 3 * TILE_TOKENS
