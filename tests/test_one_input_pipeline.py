"""Training and inference prepare inputs one way: for every stage and image aspect ratio, the dataset's token ids,
labels and pixel values equal what `processor.apply_chat_template` + `processor(...)` give for the same row."""

from __future__ import annotations

import math
import types

import pytest
import torch
from PIL import Image

from croc_testing.tiny import tiny_croc_processor
from modeling_croc import IGNORE_INDEX, get_template, with_image_aspect_ratio
from modeling_croc.chat import continuation_logprob
from modeling_croc.conversation import llava_row_to_messages
from trainer.data import CrocSupervisedDataset
from trainer.stages import STAGES

ROWS = {
    "single_turn": (["<image>\nWhat is in the picture?", "A red square on grey."], "wide.png"),
    "multi_turn": (["What colour is it?\n<image>", "Red.", "And the shape?", "A square, small.", "Sure?", "Yes."],
                   "tall.png"),
    "marker_in_a_later_turn": (["Hello.", "Hi!", "<image>\nDescribe it.", "Two blue circles."], "wide.png"),
    "image_only_question": (["<image>", "A caption of the image."], "square.png"),
    "text_only": (["Name a prime number.", "Seven.", "Another one?", "Eleven."], None),
}
IMAGES = {"wide.png": ((90, 40), (200, 30, 30)), "tall.png": ((30, 80), (20, 60, 210)),
          "square.png": ((64, 64), (30, 160, 60))}


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline_images")
    for name, (size, colour) in IMAGES.items():
        image = Image.new("RGB", size, colour)
        image.paste((250, 250, 250), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
        image.save(root / name)
    return root


@pytest.fixture(scope="module")
def base_processor():
    return tiny_croc_processor()


def _row(turns, image):
    conversations = [{"from": "human" if i % 2 == 0 else "gpt", "value": value} for i, value in enumerate(turns)]
    return {"id": "r", "image": image, "conversations": conversations}


@pytest.fixture(scope="module")
def chatml_processor():
    """A Qwen-style setup: byte-level BPE with ChatML's special tokens (no BOS, EOS <|im_end|>) and a SigLIP-style
    image processor (resize to the square, no class token)."""
    from transformers import SiglipVisionConfig

    from croc_testing.tiny import chatml_bpe_tokenizer
    from modeling_croc.convert.common import add_llava_tokens, build_processor

    tokenizer = chatml_bpe_tokenizer()
    add_llava_tokens(tokenizer)
    vision = SiglipVisionConfig(image_size=56, patch_size=14)
    return build_processor(tokenizer, None, vision, "square")


@pytest.mark.parametrize("aspect_ratio", ["square", "pad"])
@pytest.mark.parametrize("stage", sorted(STAGES) + ["qwen_1_5", "qwen3_5"])
@pytest.mark.parametrize("case", sorted(ROWS))
def test_training_inputs_equal_inference_inputs(base_processor, chatml_processor, image_root, stage, aspect_ratio,
                                                case):
    """Every stage's template on the Llama tokenizer, and ViCToR's ChatML template (`qwen_1_5`) and Qwen3.5's (its
    thinking block before the answers after the last user turn) on a Qwen-style one."""
    qwen = stage in ("qwen_1_5", "qwen3_5")
    processor = with_image_aspect_ratio(chatml_processor if qwen else base_processor, aspect_ratio)
    template = get_template(stage if qwen else STAGES[stage].template)
    turns, image_name = ROWS[case]
    row = _row(turns, image_name)
    dataset = CrocSupervisedDataset([row], processor, template, image_root=image_root)
    why = template.cannot_render(row["conversations"], has_image=image_name is not None)
    if why is not None:
        # Stage 1's `plain` trains one image and its caption a row: a text row or several exchanges is rejected
        # before training, never rendered into inputs.
        assert dataset.fit_row(row) == ("rejected", "template_cannot_render", why, 0)
        return
    trained = dataset[0]

    messages = llava_row_to_messages(row["conversations"], has_image=image_name is not None)
    chat_template = template.chat_template(processor.tokenizer.eos_token)
    text = processor.apply_chat_template(messages, chat_template=chat_template)
    images = [Image.open(image_root / image_name).convert("RGB")] if image_name else None
    prompted = processor(images=images, text=[text], return_tensors="pt")
    assert trained["input_ids"].tolist() == prompted["input_ids"][0].tolist()
    if image_name is None:
        assert trained["pixel_values"] is None and "pixel_values" not in prompted
    else:
        torch.testing.assert_close(trained["pixel_values"], prompted["pixel_values"][0], rtol=0, atol=0)

    # The supervised tokens are exactly the chat template's {% generation %} spans (the answers and their EOS).
    with_pixels = [{**message, "content": [{**item, "image": images[0]} if item["type"] == "image" else item
                                           for item in message["content"]]} for message in messages]
    marked = processor.apply_chat_template(with_pixels, chat_template=chat_template, tokenize=True, return_dict=True,
                                           return_assistant_tokens_mask=True)
    assert list(marked["input_ids"][0]) == prompted["input_ids"][0].tolist()
    supervised = (trained["labels"] != IGNORE_INDEX).tolist()
    assert supervised == [bool(flag) for flag in marked["assistant_masks"][0]]


def test_the_default_chat_template_is_vicuna_v1(base_processor):
    assert base_processor.chat_template == get_template("vicuna_v1").chat_template(base_processor.tokenizer.eos_token)


def test_pad_and_square_differ_on_a_wide_image(base_processor, image_root):
    """The aspect-ratio setting matters (so the equality above is not vacuous): padding keeps the whole image."""
    image = Image.open(image_root / "wide.png").convert("RGB")
    square = with_image_aspect_ratio(base_processor, "square").image_processor(image, return_tensors="pt")
    pad = with_image_aspect_ratio(base_processor, "pad").image_processor(image, return_tensors="pt")
    assert not torch.equal(square["pixel_values"], pad["pixel_values"])
    assert with_image_aspect_ratio(base_processor, "square") is base_processor  # already square: no copy


def _qwen2_processor():
    """Qwen2.5-VL's processor on Qwen2's own tokenizer class, whose pre-tokenizer keeps a run of newlines in one piece
    (the offline ChatML tokenizer splits them as GPT-2 does)."""
    from croc_testing.families import qwen2_bpe_tokenizer, tiny_qwen2_5_vl_processor

    processor = tiny_qwen2_5_vl_processor(qwen2_bpe_tokenizer())
    processor.chat_template = get_template("qwen2_vl").chat_template(processor.tokenizer.eos_token,
                                                                     processor.image_token)
    return processor


class _RecordingModel(torch.nn.Module):
    """Records the ids it is given; uniform logits."""

    device, dtype = torch.device("cpu"), torch.float32

    def forward(self, input_ids, **kwargs):
        self.input_ids = input_ids
        return types.SimpleNamespace(logits=torch.zeros(*input_ids.shape, 8192))


@pytest.mark.parametrize("continuation", ["Red.", "\n\nred", "\n1. red"])
@pytest.mark.parametrize("with_image", [False, True], ids=["text", "image"])
def test_continuation_is_scored_on_the_tokens_training_supervises(image_root, continuation, with_image):
    """Qwen2's tokenizer merges the generation prompt's closing newline with an answer's leading ones when the whole
    conversation is tokenised; training tokenises the answer after the prompt (what `generate` continues from), and
    the scored tokens must be those: every one of them, the answer's first newline included."""
    processor = _qwen2_processor()
    row = _row(["<image>\nWhat is it?" if with_image else "What is it?", continuation], "wide.png" if with_image else None)
    trained = CrocSupervisedDataset([row], processor, "qwen2_vl", image_root=image_root)[0]
    images = [Image.open(image_root / "wide.png").convert("RGB")] if with_image else []
    model = _RecordingModel()
    score, _ = continuation_logprob(model, processor, images, "What is it?", continuation)
    assert model.input_ids[0].tolist() == trained["input_ids"].tolist()
    supervised = int((trained["labels"] != IGNORE_INDEX).sum())
    assert score == pytest.approx(-supervised * math.log(8192))
