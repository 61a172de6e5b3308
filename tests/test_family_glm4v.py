"""What only GLM-4.1V and GLM-4.6V do on the shared mechanism (the checks every family passes, logits and generate
against `Glm4vForConditionalGeneration` / `Glm46VForConditionalGeneration`, the stage-1.5 losses, masks against the
slow reference, M-RoPE positions, round trips and the packing refusal, are `tests/test_families.py`; stages 1.5 and 2
from a plain folder, `tests/trainer/test_family_training.py`): their chat format, their image processor's pixel
budget, which counts an image as `temporal_patch_size` frames, and GLM-4.6V's text model, which Croc takes dense
only."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from croc_testing.glm4v import tiny_croc_glm4v_config, tiny_glm4v_fields, tiny_glm4v_processor
from modeling_croc import IGNORE_INDEX, get_template
from modeling_croc.configuration_croc import CrocConfigError
from modeling_croc.conversation import llava_row_to_messages
from trainer.data import CrocSupervisedDataset

IMAGE = "<|begin_of_image|><|image|><|end_of_image|>"


@pytest.fixture(scope="module")
def processor():
    processor = tiny_glm4v_processor()
    processor.chat_template = get_template("glm4v").chat_template(processor.tokenizer.eos_token,
                                                                  processor.image_token)
    return processor


def test_the_chat_format_is_the_checkpoints_prompt(processor):
    """`glm4v` prompts as GLM-4.1V-9B-Thinking's chat template does in transformers' integration test (its ids
    spell "[gMASK]<sop><|user|>\\n<|begin_of_image|><|image|>...", the question right after the image block, the
    generation prompt "<|assistant|>\\n"); a system message is its own "<|system|>\\n" turn after "[gMASK]<sop>", as
    the checkpoint's chat template renders it (ms-swift's GLM-4.1V class meant to drop the newline, but without
    @dataclass its override is dead); each
    answer ends with the EOS, which training supervises with the answer."""
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
            {"role": "assistant", "content": "A square."}, {"role": "user", "content": "Colour?"}]
    assert processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) == (
        f"[gMASK]<sop><|user|>\n{IMAGE}What is it?<|assistant|>\nA square.<|endoftext|><|user|>\nColour?"
        "<|assistant|>\n")
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."}]
    assert processor.apply_chat_template(system, add_generation_prompt=True, tokenize=False) == (
        "[gMASK]<sop><|system|>\nBe brief.<|user|>\nHi.<|assistant|>\n")
    conversation = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A square."},
                    {"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "Red."}]
    segments = get_template("glm4v").segments(conversation, True, "<|endoftext|>")
    assert [(segment.text, segment.supervised) for segment in segments] == [
        ("[gMASK]<sop><|user|>\n<|begin_of_image|><image><|end_of_image|>What is it?<|assistant|>\n", False),
        ("A square.<|endoftext|>", True), ("<|user|>\nColour?<|assistant|>\n", False), ("Red.<|endoftext|>", True)]


@pytest.mark.parametrize("turns", [
    ["<image>\nWhat is in the picture?", "A red square on grey."],
    ["What colour is it?\n<image>", "Red.", "And the shape?", "A square, small."],
    ["Name a prime number.", "Seven."],
], ids=["single_turn", "multi_turn", "text_only"])
def test_training_inputs_equal_inference_inputs(processor, tmp_path, turns):
    """The dataset's ids and pixels of a row equal the processor's on the chat template's text (the image block
    expanded to the image's own `<|image|>` count), and the supervised tokens are the template's generation spans."""
    has_image = "<image>" in turns[0]
    if has_image:
        Image.new("RGB", (90, 40), (200, 30, 30)).save(tmp_path / "wide.png")
    row = {"id": "r", "image": "wide.png" if has_image else None,
           "conversations": [{"from": "human" if i % 2 == 0 else "gpt", "value": value}
                             for i, value in enumerate(turns)]}
    trained = CrocSupervisedDataset([row], processor, get_template("glm4v"), image_root=tmp_path)[0]
    messages = llava_row_to_messages(row["conversations"], has_image=has_image)
    images = [Image.open(tmp_path / "wide.png").convert("RGB")] if has_image else None
    prompted = processor(images=images, text=[processor.apply_chat_template(messages)], return_tensors="pt")
    assert trained["input_ids"].tolist() == prompted["input_ids"][0].tolist()
    if has_image:
        assert int((prompted["input_ids"] == processor.image_token_id).sum()) > 1  # expanded, not the marker
        # Native-resolution patches of the one image: the processor flattens them, not one tensor per row.
        torch.testing.assert_close(trained["pixel_values"], prompted["pixel_values"], rtol=0, atol=0)
    with_pixels = [{**message, "content": [{**item, "image": images[0]} if item["type"] == "image" else item
                                           for item in message["content"]]} for message in messages]
    marked = processor.apply_chat_template(with_pixels, tokenize=True, return_dict=True,
                                           return_assistant_tokens_mask=True)
    supervised = (trained["labels"] != IGNORE_INDEX).tolist()
    assert supervised == [bool(flag) for flag in marked["assistant_masks"][0]]
    assert processor.tokenizer.decode(trained["labels"][trained["labels"] != IGNORE_INDEX]).endswith("<|endoftext|>")


@pytest.mark.parametrize("glm46v", [False, True], ids=["glm4v", "glm46v"])
@pytest.mark.parametrize("size", [(56, 56), (120, 90), (90, 120), (300, 200)])
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_the_pool_bound_holds_for_a_budget_counting_two_frames(size, limit, glm46v):
    """GLM-4.1V's resize counts an image as `temporal_patch_size` (2) frames against `size["longest_edge"]`: the
    largest image has `longest_edge / (2 * 28**2)` merged tokens (4 at the tiny processor's 2 * 56**2 pixels), half
    of what Qwen2-VL's budget would give, and `limit_visual_tokens(n)` keeps every image within n tokens."""
    processor = tiny_glm4v_processor(glm46v)
    assert processor.num_image_tokens == processor.max_visual_tokens == 4
    grid = processor.image_processor(Image.new("RGB", (112, 112)), return_tensors="pt")["image_grid_thw"]
    assert int(grid.prod()) // 4 == 4  # the largest size reaches the estimate exactly
    processor.limit_visual_tokens(limit)
    assert processor.max_visual_tokens == limit
    grid = processor.image_processor(Image.new("RGB", size), return_tensors="pt")["image_grid_thw"]
    assert 1 <= int(grid.prod()) // 4 <= limit


def test_glm46v_takes_its_dense_text_model_only():
    """`Glm46VModel` builds whatever text model its config names; a mixture-of-experts one (`glm4v_moe_text`), whose
    router loss no check here covers, is refused in one line when the config is built, and the dense one is the one
    the family's checks compare with the parent."""
    assert tiny_croc_glm4v_config(glm46v=True).text_config.model_type == "glm4v_text"
    fields = tiny_glm4v_fields()
    fields["text_config"] = {**fields["text_config"], "model_type": "glm4v_moe_text", "n_routed_experts": 4}
    from modeling_croc import CrocGlm46VConfig

    with pytest.raises(CrocConfigError, match="dense text model .*'glm4v_moe_text'") as refused:
        CrocGlm46VConfig(**fields, prompt_pool_size=64, vtr_head="linear")
    assert "\n" not in str(refused.value)
