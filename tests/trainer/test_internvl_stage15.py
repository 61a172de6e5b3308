"""What the trainer feeds InternVL (its end-to-end path, plain folder -> stage 1.5 -> stage 2 -> exported plain folder,
is one case of `test_family_training.py`): InternVL's chat format, each image as the `<img>` + tiles x placeholders +
`</img>` block its processor writes, and every tile of every image in `pixel_values`."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from trainer_helpers import shaped_image_rows

from croc_testing.internvl import INTERNVL_MAX_TILES, save_tiny_internvl, tiny_internvl_processor
from croc_testing.optional import image_processor_backend
from modeling_croc import CrocInternVLForConditionalGeneration, CrocInternVLProcessor
from modeling_croc.constants import IGNORE_INDEX
from modeling_croc.conversation import get_template
from trainer.calibration import first_images
from trainer.collator import build_collator
from trainer.data import CrocSupervisedDataset

MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
TILE_TOKENS = 4


@pytest.fixture(scope="module")
def internvl_folder(tmp_path_factory):
    return save_tiny_internvl(tmp_path_factory.mktemp("internvl") / "plain")


SIZES = {"wide.png": (64, 16), "square.png": (16, 16), "tall.png": (20, 44)}  # (width, height): different shapes, so different tile counts


def test_samples_are_the_processors_own(internvl_folder, tmp_path):
    config = json.loads((internvl_folder / "processor_config.json").read_text())
    processor = CrocInternVLProcessor.from_pretrained(internvl_folder)
    assert type(processor.image_processor).__name__ == image_processor_backend("GotOcr2ImageProcessor")
    # The Hub's files leave tiling to the processor's default; called alone, the image processor tiles alike.
    assert not config["image_processor"]["crop_to_patches"] and processor.image_processor.crop_to_patches
    assert processor.num_image_tokens == (INTERNVL_MAX_TILES + 1) * TILE_TOKENS
    tokenizer = processor.tokenizer
    rows = shaped_image_rows(tmp_path, SIZES)
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




def test_tiny_processor_round_trips(tmp_path):
    processor = tiny_internvl_processor()
    processor.save_pretrained(tmp_path)
    loaded = CrocInternVLProcessor.from_pretrained(tmp_path)
    assert (loaded.image_token_id, loaded.num_image_tokens) == (processor.image_token_id, processor.num_image_tokens)
    loaded.limit_visual_tokens(3 * TILE_TOKENS)
    assert loaded.num_image_tokens == 3 * TILE_TOKENS
