"""What the trainer feeds LLaVA-NeXT (its end-to-end path, plain folder -> stage 1.5 -> stage 2 -> exported plain
folder, is one case of `test_family_training.py`): each image's `<image>` expanded to as many tokens as LLaVA-NeXT's
packing gives for its size (AnyRes crops, unpadding, newline tokens), its crops and size."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

from croc_testing.llava_next import LLAVA_NEXT_PINPOINTS, save_tiny_llava_next
from modeling_croc import CrocLlavaNextProcessor
from modeling_croc.conversation import VICUNA_V1_SYSTEM
from modeling_croc.loading import load_croc
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
