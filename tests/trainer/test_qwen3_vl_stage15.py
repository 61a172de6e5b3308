"""What the trainer feeds Qwen3-VL (its end-to-end path, plain folder -> stage 1.5 -> exported plain folder, is one case
of `test_family_training.py`): Qwen3-VL's chat format (no default system message) with each image's own number of
`<|image_pad|>` tokens, its 16-px patches and grid, images bounded so that their masked tokens fit the pool, and the
mergers (main and DeepStack) training with the projector."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from transformers import Qwen3VLProcessor
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

from croc_testing.qwen3_vl import save_tiny_qwen3_vl, tiny_croc_qwen3_vl_config, tiny_qwen3_vl_processor
from modeling_croc import CrocQwen3VLConfig, CrocQwen3VLForConditionalGeneration
from modeling_croc.conversation import QWEN3_VL, llava_row_to_messages
from modeling_croc.processing_croc_qwen3_vl import CrocQwen3VLProcessor
from trainer.collator import build_collator
from trainer.data import CrocSupervisedDataset
from trainer.model_loading import fit_images_to_pool
from trainer.stages import parameter_group

PROMPT = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe it.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def qwen3_folder(tmp_path_factory):
    return save_tiny_qwen3_vl(tmp_path_factory.mktemp("qwen3") / "plain")


def test_the_family_uses_the_processor_without_video():
    # Qwen3-VL's own processor needs torchvision for its video processor: the Croc config maps to this package's
    # subclass, which an exported folder names by its parent (`__mro__[1]`).
    assert PROCESSOR_MAPPING[CrocQwen3VLConfig] is CrocQwen3VLProcessor
    assert CrocQwen3VLProcessor.__mro__[1] is Qwen3VLProcessor
    assert getattr(tiny_qwen3_vl_processor(), "video_processor", None) is None


def test_the_plain_folder_has_qwen3_vls_patches(qwen3_folder):
    """The plain folder's image processor is Qwen3-VL's (16-px patches, 2 x 2 merge), not Qwen2.5-VL's 14 px (the
    rest of its Hub layout: `test_family_training.py`)."""
    saved = json.loads((qwen3_folder / "processor_config.json").read_text())
    assert (saved["image_processor"]["patch_size"], saved["image_processor"]["merge_size"]) == (16, 2)


def test_samples_are_in_qwen3_vls_own_format(qwen3_folder, data_dir):
    processor = CrocQwen3VLProcessor.from_pretrained(qwen3_folder)
    rows = json.loads((data_dir / "detailed.json").read_text())
    image_rows = [row for row in rows if "image" in row][:2]
    dataset = CrocSupervisedDataset(image_rows, processor, template="qwen3_vl", image_root=data_dir,
                                    model_max_length=4096)
    samples = [dataset[0], dataset[1]]
    tokenizer = processor.tokenizer
    for sample in samples:
        grid = sample["image_grid_thw"]
        tokens = grid.prod().item() // processor.image_processor.merge_size**2
        assert grid.tolist() == [1, 4, 4] or grid.tolist() == [1, 4, 6]  # 56 x 56..72 px in 16-px patches
        ids = sample["input_ids"].tolist()
        start = ids.index(tokenizer.convert_tokens_to_ids("<|vision_start|>"))
        assert ids[start + 1:start + 1 + tokens] == [processor.image_token_id] * tokens
        assert ids[start + 1 + tokens] == tokenizer.convert_tokens_to_ids("<|vision_end|>")
        assert ids.count(processor.image_token_id) == tokens
        assert sample["pixel_values"].shape == (grid.prod().item(), 3 * 2 * 16 * 16)  # all of its patches
        text = tokenizer.decode(sample["input_ids"])
        assert text.startswith("<|im_start|>user\n<|vision_start|>")  # no default system message
        supervised = tokenizer.decode(sample["input_ids"][sample["labels"] != -100])
        assert supervised.endswith("<|im_end|>\n") and "<|im_start|>" not in supervised
    # Training and inference tokenise a row alike: the chat template plus the processor give the sample's ids.
    processor.chat_template = QWEN3_VL.chat_template(tokenizer.eos_token, processor.image_token)
    row = image_rows[0]
    text = processor.apply_chat_template(llava_row_to_messages(row["conversations"], True), tokenize=False)
    image = Image.open(data_dir / row["image"]).convert("RGB")
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    assert torch.equal(inputs["input_ids"][0], samples[0]["input_ids"])
    # The collator keeps each image's patches, stacks the grids and writes the placeholder types.
    batch = build_collator(processor)(samples)
    assert batch["pixel_values"].shape[0] == int(batch["image_grid_thw"].prod(-1).sum())
    assert torch.equal(batch["image_grid_thw"], torch.stack([sample["image_grid_thw"] for sample in samples]))
    assert torch.equal(batch["mm_token_type_ids"].bool(), batch["input_ids"] == processor.image_token_id)


def test_images_are_bounded_so_their_masked_tokens_fit_the_pool():
    processor = tiny_qwen3_vl_processor()
    assert processor.num_image_tokens == 4  # 64 x 64 px: 2 x 2 windows of 32 px
    config = CrocQwen3VLConfig(croc_pretraining=True, prompt_pool_size=2, vtr_head="linear")
    fit_images_to_pool(processor, config)
    # 3 tokens mask round(2.25) = 2 <= 2; 4 would mask 3.
    assert processor.num_image_tokens == 3 and config.num_masked_tokens(3) <= 2 < config.num_masked_tokens(4)
    unbounded = tiny_qwen3_vl_processor()
    fit_images_to_pool(unbounded, CrocQwen3VLConfig(croc_pretraining=False, prompt_pool_size=2, vtr_head="linear"))
    assert unbounded.num_image_tokens == 4  # no stage-1.5 matching, nothing to bound


def test_every_parameter_has_a_group_and_the_mergers_train_with_the_projector():
    model = CrocQwen3VLForConditionalGeneration(tiny_croc_qwen3_vl_config())
    groups = {name: parameter_group(name) for name, _ in model.named_parameters()}
    assert None not in groups.values(), [name for name, group in groups.items() if group is None]
    mergers = [name for name in groups if ".merger." in name or ".deepstack_merger_list." in name]
    assert any("deepstack_merger_list" in name for name in mergers)
    assert {groups[name] for name in mergers} == {"projector"}
    assert {group for name, group in groups.items() if name.startswith("model.visual.blocks.")} == {"vision_tower"}
