"""What the trainer feeds Qwen2.5-VL (its end-to-end path, plain folder -> stage 1.5 -> stage 2 -> exported plain
folder, is one case of `test_family_training.py`): the Qwen2.5-VL chat format with each image's own number of
`<|image_pad|>` tokens, its patches and grid, and images bounded so that their masked tokens fit the pool."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from trainer_helpers import CONFIGS

from croc_testing.families import save_tiny_qwen2_5_vl, tiny_qwen2_5_vl_processor
from modeling_croc import CrocQwen2_5_VLConfig
from modeling_croc.processing_croc_qwen2_5_vl import CrocQwen2_5_VLProcessor
from trainer import train as train_module
from trainer.collator import build_collator
from trainer.data import CrocSupervisedDataset
from trainer.model_loading import fit_images_to_pool


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory):
    return save_tiny_qwen2_5_vl(tmp_path_factory.mktemp("qwen") / "plain")


def test_samples_are_in_qwen2_5_vls_own_format(qwen_folder, data_dir):
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


def test_a_thin_image_with_more_tokens_than_the_pool_serves_is_replaced_not_a_traceback(tmp_path):
    """Qwen's resize keeps one merge window on a thin image's short side, so a 28 x 4200 image (aspect 150, under
    max_aspect_ratio) takes 24 merged tokens under a 4-token budget: its 18 masked tokens outnumbered a 3-token pool
    and the Hungarian matching ended the run mid-way. The row is now one the dataset cannot use (replaced, counted)."""
    from PIL import Image

    processor = tiny_qwen2_5_vl_processor()
    fit_images_to_pool(processor, CrocQwen2_5_VLConfig(croc_pretraining=True, prompt_pool_size=3, vtr_head="linear"))
    Image.new("RGB", (28, 4200), (9, 9, 9)).save(tmp_path / "thin.png")
    row = {"id": "thin", "image": "thin.png",
           "conversations": [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "A strip."}]}
    dataset = CrocSupervisedDataset([row], processor, template="qwen2_vl", image_root=tmp_path, model_max_length=4096)
    sample, problem = dataset._sample(row)
    assert sample is None and problem[0] == "image_too_large" and "24 visual tokens" in problem[1]


@pytest.mark.parametrize("mask_ratio", [0.0, 0.2, 0.75, 0.95])
def test_the_pools_token_limit_is_the_largest_count_it_serves(mask_ratio):
    # The search's upper end was 4 x the pool: under mask_ratio 0.25 the largest count served is beyond it, and the
    # limit came out None ("no limit") where images of more tokens overflowed the pool.
    processor = tiny_qwen2_5_vl_processor()
    config = CrocQwen2_5_VLConfig(croc_pretraining=True, prompt_pool_size=3, vtr_head="linear", mask_ratio=mask_ratio)
    fit_images_to_pool(processor, config)
    limit = processor.pool_visual_token_limit
    if mask_ratio == 0.0:
        assert limit is None
    else:
        assert config.num_masked_tokens(limit) <= 3 < config.num_masked_tokens(limit + 1), limit


def test_a_family_without_its_data_path_is_refused_in_one_line(data_dir, tmp_path, monkeypatch):
    """A family whose data path the trainer does not build (its `families.py` entry's `trainer_data=False`:
    LFM2-VL's, whose image processor needs torchvision) keeps its model classes, conversion and export, and a run on
    its folder stops before anything loads, saying so."""
    from croc_testing.lfm2_vl import tiny_croc_lfm2_vl_config
    from modeling_croc import CrocLfm2VlForConditionalGeneration
    from modeling_croc.convert import croc_to_llava
    from modeling_croc.families import FAMILY_OF_PLAIN_MODEL_TYPE

    torch.manual_seed(0)
    family = "lfm2_vl"
    assert not FAMILY_OF_PLAIN_MODEL_TYPE[family].trainer_data
    croc = CrocLfm2VlForConditionalGeneration(tiny_croc_lfm2_vl_config())
    croc_to_llava(croc).save_pretrained(tmp_path / family)
    monkeypatch.setattr(sys, "argv", ["trainer.train", str(CONFIGS / "stage1_5.yaml"), f"--output_dir={tmp_path / 'o'}",
                                      f"--model.name_or_path={tmp_path / family}",
                                      f"--data.path={data_dir / 'detailed.json'}"])
    with pytest.raises(SystemExit) as stop:
        train_module.cli()
    message = str(stop.value.code)
    assert f"{family}: the trainer's data path" in message and "\n" not in message
    assert not (tmp_path / "o").exists()
