"""What the trainer feeds Gemma 4 (its end-to-end path, plain folder -> stage 1.5 -> stage 2 -> exported plain folder,
is one case of `test_family_training.py`): Gemma 4's chat format, each image as the block `Gemma4Processor` expands
`<|image|>` to (its own soft-token count), its patch positions (`image_position_ids`), `mm_token_type_ids` marking the
placeholders (Gemma 4's bidirectional image attention reads them), and images bounded to the pool in the steps
Gemma 4's image processor takes (`max_soft_tokens`)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from croc_testing.gemma4 import (
    GEMMA4_MAX_SOFT_TOKENS,
    save_tiny_gemma4,
    tiny_croc_gemma4_config,
    tiny_gemma4_processor,
)
from croc_testing.optional import image_processor_backend
from modeling_croc import CrocGemma4ForConditionalGeneration, CrocGemma4Processor
from modeling_croc.constants import IGNORE_INDEX
from modeling_croc.conversation import get_template
from trainer.calibration import first_images
from trainer.cli import ConfigError
from trainer.collator import build_collator
from trainer.data import CrocSupervisedDataset
from trainer.model_loading import fit_images_to_pool
from trainer.stages import parameter_group

MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
# As the checkpoints' chat template renders an image item: its placeholder between blank lines.
PROMPT = "<|turn>user\n\n\n<|image|>\n\nDescribe the image.<turn|>\n<|turn>model\n"


@pytest.fixture(scope="module")
def gemma_folder(tmp_path_factory):
    return save_tiny_gemma4(tmp_path_factory.mktemp("gemma4") / "plain")


def _image_rows(data_dir, count=3):
    rows = json.loads((data_dir / "detailed.json").read_text())
    return [row for row in rows if "image" in row][:count]


def _soft_tokens(positions: torch.Tensor) -> int:
    """An image's soft tokens from its patch positions: its real patches over the 2x2 pooling."""
    return int((positions != -1).all(dim=-1).sum()) // 4


def test_the_processor_loads_images_and_text_only(gemma_folder, tmp_path):
    processor = CrocGemma4Processor.from_pretrained(gemma_folder)
    assert type(processor.image_processor).__name__ == image_processor_backend("Gemma4ImageProcessor")
    # No video processor (it needs torchvision) and no audio feature extractor.
    assert CrocGemma4Processor.get_attributes() == ["image_processor", "tokenizer"]
    assert type(processor).__mro__[1].__name__ == "Gemma4Processor"  # what an exported folder names
    config = json.loads((gemma_folder / "config.json").read_text())
    assert processor.image_token_id == config["image_token_id"] != processor.tokenizer.boi_token_id
    assert processor.num_image_tokens == processor.max_visual_tokens == GEMMA4_MAX_SOFT_TOKENS
    with pytest.raises(ValueError, match="images and text only"):
        CrocGemma4Processor.__mro__[2].__init__(processor, video_processor=object())
    # What a Croc folder saves loads back the same (its chat template, its image budget).
    processor.save_pretrained(tmp_path)
    loaded = CrocGemma4Processor.from_pretrained(tmp_path)
    assert (loaded.chat_template, loaded.max_visual_tokens) == (processor.chat_template, GEMMA4_MAX_SOFT_TOKENS)


def test_samples_are_in_gemma4s_own_format(gemma_folder, data_dir):
    processor = CrocGemma4Processor.from_pretrained(gemma_folder)
    tokenizer = processor.tokenizer
    rows = _image_rows(data_dir)
    dataset = CrocSupervisedDataset(rows, processor, template="gemma4", image_root=data_dir, model_max_length=512)
    # An image's token count depends on its aspect ratio: decided when it is read.
    assert all(fit.verdict == "unknown" for fit in dataset.fit_rows(rows))
    samples = [dataset[index] for index in range(len(rows))]
    counts = []
    for sample, row in zip(samples, rows):
        ids = sample["input_ids"].tolist()
        tokens = _soft_tokens(sample["image_position_ids"])
        counts.append(tokens)
        assert ids[0] == tokenizer.bos_token_id
        start = ids.index(tokenizer.boi_token_id)
        assert ids[start + 1:start + 1 + tokens] == [processor.image_token_id] * tokens
        assert ids[start + 1 + tokens] == tokenizer.eoi_token_id
        assert ids.count(processor.image_token_id) == tokens
        assert tokenizer.decode(ids).startswith("<bos><|turn>user\n\n\n<|image><|image|>")
        supervised = tokenizer.decode(sample["input_ids"][sample["labels"] != IGNORE_INDEX])
        assert supervised == row["conversations"][1]["value"] + "<turn|>\n"
        assert sample["pixel_values"].shape == (4 * GEMMA4_MAX_SOFT_TOKENS, 3 * 4 * 4)
        assert sample["image_position_ids"].shape == (4 * GEMMA4_MAX_SOFT_TOKENS, 2)
    assert len(set(counts)) > 1  # the data images' aspect ratios give their own counts (56, 64 and 72 px wide)

    # The template's chat template is the prompt the saved processor renders, and the processor turns that prompt,
    # answered, into the training sample's tokens, pixels and patch positions.
    processor.chat_template = get_template("gemma4").chat_template(tokenizer.eos_token, processor.image_token)
    prompt = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert prompt == PROMPT
    answered = prompt + rows[2]["conversations"][1]["value"] + "<turn|>\n"
    inputs = processor(text=[answered], images=[Image.open(data_dir / rows[2]["image"])], return_tensors="pt")
    assert inputs["input_ids"][0].tolist() == samples[2]["input_ids"].tolist()
    torch.testing.assert_close(inputs["pixel_values"][0], samples[2]["pixel_values"])
    assert torch.equal(inputs["image_position_ids"][0], samples[2]["image_position_ids"])

    # The collator pads and stacks each image's patches and positions, and writes `mm_token_type_ids` as the
    # processor does: 1 at the placeholders only (not at `<|image>` / `<image|>`), 0 on a text row.
    text_row = json.loads((data_dir / "detailed.json").read_text())[-1]
    text_sample = CrocSupervisedDataset([text_row], processor, template="gemma4")[0]
    batch = build_collator(processor)([samples[0], text_sample, samples[2]])
    assert batch["pixel_values"].shape == (2, 4 * GEMMA4_MAX_SOFT_TOKENS, 48)
    assert torch.equal(batch["image_position_ids"][1], inputs["image_position_ids"][0])
    assert batch["mm_token_type_ids"].sum() == counts[0] + counts[2] and not batch["mm_token_type_ids"][1].any()
    width = inputs["mm_token_type_ids"].shape[1]
    assert torch.equal(batch["mm_token_type_ids"][2, :width], inputs["mm_token_type_ids"][0].long())
    # A text-only batch carries no image inputs (Gemma 4 is then causal with or without the types).
    assert "mm_token_type_ids" not in build_collator(processor)([text_sample])

    # Pool calibration reads the images as the collator batches them.
    images = first_images(dataset, 2)
    assert set(images) == {"pixel_values", "image_position_ids"}
    assert torch.equal(images["image_position_ids"], torch.stack([samples[0]["image_position_ids"],
                                                                  samples[1]["image_position_ids"]]))


def test_gemma4_turns_system_and_answers():
    """Google's Gemma 4 format: every turn "<|turn>{role}\\n...<turn|>\\n" (roles system, user, model), a system
    message as its own first turn, no default one; each answer and its "<turn|>\\n" supervised, the next user turn
    not."""
    template = get_template("gemma4")
    conversation = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A square."},
                    {"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "Red."}]
    segments = template.segments(conversation, has_image=True)
    assert [(segment.text, segment.supervised) for segment in segments] == [
        ("<|turn>user\n\n\n<image>\n\nWhat is it?<turn|>\n<|turn>model\n", False), ("A square.<turn|>\n", True),
        ("<|turn>user\nColour?<turn|>\n<|turn>model\n", False), ("Red.<turn|>\n", True)]
    processor = tiny_gemma4_processor()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello."}]
    assert processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == (
        "<|turn>system\nBe brief.<turn|>\n<|turn>user\nHello.<turn|>\n<|turn>model\n")
    # An image item between blank lines, the text trimmed, past answers right after "<|turn>model\n": the
    # checkpoints' chat template's rendering of the same conversation.
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " What is it?\n"}]},
            {"role": "assistant", "content": "A square."}, {"role": "user", "content": "Colour?"}]
    assert processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) == (
        "<|turn>user\n\n\n<|image|>\n\nWhat is it?<turn|>\n<|turn>model\nA square.<turn|>\n"
        "<|turn>user\nColour?<turn|>\n<|turn>model\n")


def test_patch_positions_of_uneven_images_pad_as_their_processor_pads(gemma_folder, data_dir):
    """Images of different patch budgets in one batch (a sample from a processor before its pool bound) keep (-1, -1)
    at every padding patch: zeros would read as the patch at (0, 0)."""
    processor = CrocGemma4Processor.from_pretrained(gemma_folder)
    rows = _image_rows(data_dir, 1)
    small = CrocSupervisedDataset(rows, processor, template="gemma4", image_root=data_dir)[0]
    processor.image_processor.max_soft_tokens = 140
    large = CrocSupervisedDataset(rows, processor, template="gemma4", image_root=data_dir)[0]
    batch = build_collator(processor)([small, large])
    assert batch["image_position_ids"].shape == (2, 4 * 140, 2)
    assert (batch["image_position_ids"][0, 4 * GEMMA4_MAX_SOFT_TOKENS:] == -1).all()
    assert _soft_tokens(batch["image_position_ids"][0]) == _soft_tokens(small["image_position_ids"])


def test_images_are_bounded_to_the_pool_in_gemma4s_steps():
    """Stage 1.5's one-to-one matching needs every image's masked tokens within the pool: the bound is the largest
    `max_soft_tokens` Gemma 4's image processor accepts under the limit; a pool its smallest (70) does not fit is
    refused in one line."""
    config = tiny_croc_gemma4_config(croc_pretraining=True, token_matching="hungarian", prompt_pool_size=300)
    processor = tiny_gemma4_processor()
    processor.image_processor.max_soft_tokens = 1120
    fit_images_to_pool(processor, config)  # 400 tokens fit 300 masked; 560 (420 masked) would not
    assert processor.max_visual_tokens == 280 and config.num_masked_tokens(280) <= 300
    image = Image.new("RGB", (400, 300), (10, 200, 30))
    (count,) = processor.image_processor(image, return_tensors="pt")["num_soft_tokens_per_image"]
    assert 0 < int(count) <= 280
    processor.limit_visual_tokens(600)
    assert processor.max_visual_tokens == 280  # a larger limit changes nothing
    unbounded = tiny_gemma4_processor()
    unbounded.image_processor.max_soft_tokens = 1120
    unbounded.limit_visual_tokens(600)
    assert unbounded.max_visual_tokens == 560

    tight = tiny_croc_gemma4_config(croc_pretraining=True, token_matching="hungarian", prompt_pool_size=16)
    with pytest.raises(ConfigError, match="at least 70 visual tokens at its smallest size") as refused:
        fit_images_to_pool(tiny_gemma4_processor(), tight)
    assert "\n" not in str(refused.value)


def test_every_gemma4_parameter_has_a_group():
    """Gemma 4's vision embedder trains as its projector; its audio tower and embedder (E2B / E4B) sit with the
    frozen encoder side: a parameter of no group stops the run."""
    model = CrocGemma4ForConditionalGeneration(tiny_croc_gemma4_config(audio=True))
    groups = {name: parameter_group(name) for name, _ in model.named_parameters()}
    assert None not in groups.values()
    assert {group for name, group in groups.items() if "embed_vision" in name} == {"projector"}
    assert {group for name, group in groups.items() if "audio" in name} == {"vision_tower"}
