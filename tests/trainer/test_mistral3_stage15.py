"""A newcomer's path on Mistral 3, through the public CLIs: a saved plain Mistral 3 folder (laid out as the Hub's) ->
Croc's stage 1.5 with one command -> stage 2 from its output -> a plain Mistral 3 folder exported back, which the
parent class loads with the trained weights. Also what the runs feed the model: Mistral 3's [INST] chat format, each
image as Pixtral's processor expands it (rows of `[IMG]` closed by `[IMG_BREAK]`, the last by `[IMG_END]`), images at
their own size, padded to the batch's largest, with `image_sizes`."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from trainer_helpers import log_history, run_stage
from transformers import Mistral3ForConditionalGeneration

from croc_testing.mistral3 import MISTRAL3_LONGEST_EDGE, save_tiny_mistral3
from modeling_croc import CrocMistral3ForConditionalGeneration, CrocMistral3Processor
from modeling_croc.constants import IGNORE_INDEX
from modeling_croc.conversation import get_template
from modeling_croc.convert.__main__ import main as convert_main
from trainer.collator import build_collator
from trainer.data import CrocSupervisedDataset

MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
PROMPT = "[INST][IMG]Describe the image.[/INST]"


@pytest.fixture(scope="module")
def mistral3_folder(tmp_path_factory):
    return save_tiny_mistral3(tmp_path_factory.mktemp("mistral3") / "plain")


def _rows(tmp_path):
    """Image rows on images of different shapes (so of different sizes after resizing), and a text row."""
    sizes = {"wide.png": (64, 16), "square.png": (16, 16), "tall.png": (20, 44)}
    for index, (name, size) in enumerate(sizes.items()):
        Image.new("RGB", size, (40 * index, 200, 90)).save(tmp_path / name)
    rows = [{"id": name, "image": name, "conversations": [
        {"from": "human", "value": "<image>\nDescribe the image."},
        {"from": "gpt", "value": f"A picture {index}."}]} for index, name in enumerate(sizes)]
    rows.append({"id": "text", "conversations": [{"from": "human", "value": "Name a prime."},
                                                 {"from": "gpt", "value": "Seven."}]})
    return rows


def test_samples_are_the_processors_own(mistral3_folder, tmp_path):
    config = json.loads((mistral3_folder / "processor_config.json").read_text())
    assert config["processor_class"] == "PixtralProcessor" and not list(mistral3_folder.glob("*.py"))
    processor = CrocMistral3Processor.from_pretrained(mistral3_folder)
    assert type(processor.image_processor).__name__ == "PixtralImageProcessorPil"
    window = processor.patch_size * processor.spatial_merge_size
    assert processor.image_processor.patch_size == {"height": window, "width": window}  # merged when called alone
    side = MISTRAL3_LONGEST_EDGE // window
    assert processor.num_image_tokens == side * (side + 1)
    tokenizer = processor.tokenizer
    rows = _rows(tmp_path)
    dataset = CrocSupervisedDataset(rows, processor, template="mistral3", image_root=tmp_path, model_max_length=512)
    assert [fit.verdict for fit in dataset.fit_rows(rows)] == ["unknown"] * 3 + ["whole"]

    # The template's chat template is the processor's; answered, the processor turns it into the sample's ids.
    own = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert own == PROMPT
    assert processor.chat_template == get_template("mistral3").chat_template(tokenizer.eos_token, "[IMG]")
    model = CrocMistral3ForConditionalGeneration.from_pretrained(mistral3_folder)
    samples, shapes = [], []
    for index, row in enumerate(rows[:3]):
        sample = dataset[index]
        answered = own + row["conversations"][1]["value"] + tokenizer.eos_token
        inputs = processor(text=[answered], images=[Image.open(tmp_path / row["image"])], return_tensors="pt")
        assert sample["input_ids"].tolist() == inputs["input_ids"][0].tolist()
        assert sample["input_ids"][0] == tokenizer.bos_token_id
        torch.testing.assert_close(sample["pixel_values"], inputs["pixel_values"][0])
        assert sample["image_sizes"].tolist() == inputs["image_sizes"][0].tolist()
        supervised = tokenizer.decode(sample["input_ids"][sample["labels"] != IGNORE_INDEX])
        assert supervised == row["conversations"][1]["value"] + tokenizer.eos_token
        # The model's count from `image_sizes` is the sample's `[IMG]` count; the break tokens come in between.
        ids = sample["input_ids"]
        count = model.image_token_counts(None, 1, image_sizes=sample["image_sizes"][None])
        assert count.tolist() == [int((ids == processor.image_token_id).sum())]
        height, width = sample["image_sizes"].tolist()
        assert int((ids == processor.image_break_token_id).sum()) == height // window - 1
        assert int((ids == processor.image_end_token_id).sum()) == 1
        samples.append(sample)
        shapes.append(tuple(sample["pixel_values"].shape))
    assert len(set(shapes)) == 3  # images of their own sizes

    # The collator pads every image to the batch's largest height and width (top-left), as Pixtral's image processor
    # pads a batch; text rows add none.
    batch = build_collator(processor)([samples[0], dataset[3], samples[1], samples[2]])
    assert set(batch) == {"input_ids", "labels", "attention_mask", "pixel_values", "image_sizes"}
    height, width = (max(shape[axis] for shape in shapes) for axis in (1, 2))
    assert batch["pixel_values"].shape == (3, 3, height, width)
    images = [Image.open(tmp_path / row["image"]) for row in rows[:3]]
    together = processor.image_processor(images, return_tensors="pt")
    torch.testing.assert_close(batch["pixel_values"], together["pixel_values"])
    assert batch["image_sizes"].tolist() == together["image_sizes"].tolist()
    counts = model.image_token_counts(batch["input_ids"], 3, image_sizes=batch["image_sizes"])
    assert counts.tolist() == [int((sample["input_ids"] == processor.image_token_id).sum()) for sample in samples]
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


def test_stage15_then_stage2_from_a_plain_folder_and_export_back(mistral3_folder, data_dir, tmp_path):
    out = tmp_path / "stage1_5"
    run_stage("stage1_5_mistral3.yaml", out, f"--model.name_or_path={mistral3_folder}",
              f"--data.path={data_dir / 'detailed.json'}", "--max_steps=2")
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_type"] == "croc_mistral3" and saved["prompt_pool_calibrated"]
    logged = [entry for entry in log_history(out) if "loss" in entry]
    assert len(logged) == 2
    for entry in logged:  # both objectives ran, weighted as the preset says
        assert entry["lm_loss"] > 0 and entry["vtr_loss"] > 0
        assert entry["loss"] == pytest.approx(entry["lm_loss"] + 10 * entry["vtr_loss"], rel=1e-3)
    croc = CrocMistral3ForConditionalGeneration.from_pretrained(out).eval()
    start = Mistral3ForConditionalGeneration.from_pretrained(mistral3_folder)
    trained = croc.model.language_model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(trained, start.model.language_model.layers[0].self_attn.q_proj.weight)
    processor = CrocMistral3Processor.from_pretrained(out)
    assert processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False) == PROMPT

    stage2 = tmp_path / "stage2"
    run_stage("stage2.yaml", stage2, f"--model.name_or_path={out}", f"--data.path={data_dir / 'qa.json'}",
              "--max_steps=2")
    saved = json.loads((stage2 / "config.json").read_text())
    assert saved["model_type"] == "croc_mistral3" and not saved["croc_pretraining"]
    assert json.loads((stage2 / "croc_run.json").read_text())["template"] == "mistral3"
    assert all(entry["loss"] > 0 for entry in log_history(stage2) if "loss" in entry)

    exported = tmp_path / "exported"
    convert_main(["to-plain", str(out), str(exported)])
    assert json.loads((exported / "config.json").read_text())["model_type"] == "mistral3"
    assert json.loads((exported / "processor_config.json").read_text())["processor_class"] == "PixtralProcessor"
    assert not list(exported.glob("*.py"))  # no remote code: the parent classes load it natively
    plain, info = Mistral3ForConditionalGeneration.from_pretrained(exported, output_loading_info=True)
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    plain_processor = CrocMistral3Processor.from_pretrained(exported)  # transformers' needs torchvision
    image = Image.open(data_dir / "images" / "000.png")
    inputs = plain_processor(text=[PROMPT], images=[image], return_tensors="pt")
    assert (inputs["input_ids"] == plain_processor.image_break_token_id).any()
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(**inputs).logits, croc(**inputs).logits, rtol=0, atol=0)
