"""What the trainer feeds LLaVA-NeXT (its end-to-end path, plain folder -> stage 1.5 -> stage 2 -> exported plain
folder, is one case of `test_family_training.py`): each image's `<image>` expanded to as many tokens as LLaVA-NeXT's
packing gives for its size (AnyRes crops, unpadding, newline tokens), its crops and size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

from croc_testing.llava_next import LLAVA_NEXT_PINPOINTS, save_tiny_llava_next
from modeling_croc import CrocLlavaNextProcessor
from modeling_croc.conversation import VICUNA_V1_SYSTEM
from modeling_croc.loading import load_croc
from trainer.cli import ConfigError
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


def test_images_whose_masked_tokens_outnumber_the_pool_are_refused_in_one_line():
    """AnyRes images cannot be resized to fit the pool: a pool smaller than the largest image's masked tokens is
    refused before the data is read, not by the first large image in the Hungarian matching mid-run."""
    from croc_testing.llava_next import tiny_croc_llava_next_config, tiny_llava_next_processor
    from trainer.model_loading import fit_images_to_pool

    processor = tiny_llava_next_processor()
    most = processor.num_image_tokens
    config = tiny_croc_llava_next_config(croc_pretraining=True, prompt_pool_size=8)
    assert config.num_masked_tokens(most) > 8
    with pytest.raises(ConfigError, match="outnumber the 8-token prompt pool"):
        fit_images_to_pool(processor, config)
    fit_images_to_pool(processor, tiny_croc_llava_next_config(croc_pretraining=True, prompt_pool_size=64))


def test_the_shipped_yaml_pool_holds_the_largest_llava_v1_6_image():
    """trainer/configs/llava_next/stage1_5.yaml on llava-v1.6-vicuna-7b (its processor's grid, crop and feature
    strategy): the largest image, 2928 tokens, has 2196 masked tokens, which the YAML's pool must hold."""
    from transformers import LlavaNextImageProcessorPil

    from croc_testing.tiny import llama_sentencepiece_tokenizer
    from modeling_croc import CrocLlavaNextConfig
    from trainer.cli import load_raw_config
    from trainer.model_loading import fit_images_to_pool

    pinpoints = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]  # llava-v1.6's preprocessor_config.json
    image_processor = LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                                 image_grid_pinpoints=pinpoints)
    processor = CrocLlavaNextProcessor(image_processor=image_processor, tokenizer=llama_sentencepiece_tokenizer(),
                                       patch_size=14, vision_feature_select_strategy="default",
                                       num_additional_image_tokens=1)
    assert processor.num_image_tokens == 2928
    raw = load_raw_config([str(Path(__file__).parents[2] / "trainer/configs/llava_next/stage1_5.yaml")])
    overrides = raw["training"]["croc_overrides"]
    fit_images_to_pool(processor, CrocLlavaNextConfig(croc_pretraining=True, croc_preset="paper", **overrides))
    with pytest.raises(ConfigError, match="2196 masked tokens outnumber the 2048-token prompt pool"):
        fit_images_to_pool(processor, CrocLlavaNextConfig(croc_pretraining=True, croc_preset="paper"))
