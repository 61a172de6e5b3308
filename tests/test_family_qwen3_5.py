"""What only Qwen3.5 does on the shared mechanism (the checks every family passes, the full-attention layers' mixed
mask against the slow reference, the linear-attention layers' padding mask, their causality at visual positions
(`test_a_recurrent_layer_is_causal_at_visual_positions_where_a_full_one_is_not`), M-RoPE positions and the packing
refusal included, are `tests/test_families.py`): its hybrid text model. A linear-attention (Gated DeltaNet) layer is
causal by construction, which is the family's documented behaviour (`modeling_croc/modeling_croc_qwen3_5.py`,
docs/MODELS.md), and here on CPU it runs transformers' PyTorch path (no fla or causal-conv1d kernels), whose chunked
form, the one training runs, equals the recurrence.
"""

from __future__ import annotations

import pytest
import torch
from transformers.models.qwen3_5 import modeling_qwen3_5

from croc_testing.family_specs import SPECS_BY_NAME

SPEC = SPECS_BY_NAME["qwen3_5"]


def test_the_pytorch_chunked_path_equals_the_recurrence():
    """Without fla (none on CPU) the linear layers run transformers' PyTorch functions: the chunked form (training and
    prefill, chunks of 64) gives the token-by-token recurrence's output and final state (decoding), over a
    sequence longer than one chunk."""
    torch.manual_seed(0)
    batch, length, heads, dim = 2, 70, 2, 8
    query, key, value = (torch.randn(batch, length, heads, dim) for _ in range(3))
    g = -torch.rand(batch, length, heads)  # log decays, <= 0
    beta = torch.rand(batch, length, heads)
    chunked, chunked_state = modeling_qwen3_5.torch_chunk_gated_delta_rule(
        query, key, value, g=g, beta=beta, output_final_state=True, use_qk_l2norm_in_kernel=True)
    recurrent, recurrent_state = modeling_qwen3_5.torch_recurrent_gated_delta_rule(
        query, key, value, g=g, beta=beta, output_final_state=True, use_qk_l2norm_in_kernel=True)
    torch.testing.assert_close(chunked, recurrent, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(chunked_state, recurrent_state, rtol=1e-4, atol=1e-5)


def test_the_chat_format_is_the_checkpoints_with_thinking_off():
    """`qwen3_5` renders a conversation as Qwen3.5's chat template does with thinking off (its text, written out from
    a copy of Qwen3.5-0.8B's template): no default system message, the image wrapper opening the user turn, an empty
    thinking block before the answer after the last user turn and in the generation prompt, none before earlier
    answers; training supervises the answers and their "<|im_end|>\\n" only."""
    from croc_testing.qwen3_vl import tiny_qwen3_vl_processor
    from modeling_croc.conversation import get_template

    template = get_template("qwen3_5")
    processor = tiny_qwen3_vl_processor()
    processor.chat_template = template.chat_template(processor.tokenizer.eos_token, "<|image_pad|>")
    image, think = "<|vision_start|><|image_pad|><|vision_end|>", "<think>\n\n</think>\n\n"
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
            {"role": "assistant", "content": "A square."}, {"role": "user", "content": "Colour?"}]
    assert processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) == (
        f"<|im_start|>user\n{image}What is it?<|im_end|>\n<|im_start|>assistant\nA square.<|im_end|>\n"
        f"<|im_start|>user\nColour?<|im_end|>\n<|im_start|>assistant\n{think}")
    answered = [*chat, {"role": "assistant", "content": "Red."}]
    assert processor.apply_chat_template(answered, tokenize=False).endswith(
        f"<|im_start|>user\nColour?<|im_end|>\n<|im_start|>assistant\n{think}Red.<|im_end|>\n")
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."}]
    assert processor.apply_chat_template(system, add_generation_prompt=True, tokenize=False) == (
        f"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi.<|im_end|>\n<|im_start|>assistant\n{think}")

    conversation = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A square."},
                    {"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "Red."}]
    assert [(segment.text, segment.supervised) for segment in template.segments(conversation, True, "<|im_end|>")] == [
        ("<|im_start|>user\n<|vision_start|><image><|vision_end|>What is it?<|im_end|>\n<|im_start|>assistant\n", False),
        ("A square.<|im_end|>\n", True),
        (f"<|im_start|>user\nColour?<|im_end|>\n<|im_start|>assistant\n{think}", False), ("Red.<|im_end|>\n", True)]


@pytest.mark.parametrize("kind", ["generation_class", "model_class"], ids=["generation", "base"])
@pytest.mark.parametrize("family", ["qwen3_5", "qwen3_5_moe"])
def test_building_on_real_tensors_leaves_the_random_state_as_the_meta_device_does(family, kind):
    """transformers builds a one-process load on the meta device and a ZeRO-3 load on real tensors (`zero.Init`),
    both under `no_init_weights`; the parent's Gated DeltaNet draws its `A_log` with `uniform_` all the same, which
    on real tensors moved the global random state, so the weights a Hub folder lacks (the VTR head) came out
    otherwise under ZeRO-3 and its run left the one-process curve at the first step (found by a hostile tester).
    Either build leaves the state where it found it."""
    from transformers import initialization

    spec = SPECS_BY_NAME[family]
    model_class, config = getattr(spec, kind), spec.config(croc_pretraining=True)
    after = []
    for device in ("meta", "cpu"):
        torch.manual_seed(0)
        with initialization.no_init_weights(), torch.device(device):
            model_class(config)
        after.append(torch.rand(8))
    torch.testing.assert_close(after[1], after[0], rtol=0, atol=0)


def test_every_turns_text_is_trimmed_as_the_checkpoints_template_trims_it():
    """Qwen3.5's template renders each message's content `| trim`: a question or answer with surrounding whitespace
    trains (and prompts) without it."""
    from modeling_croc.conversation import get_template

    conversation = [{"from": "human", "value": "  Colour?\n"}, {"from": "gpt", "value": " Red.\n\n"}]
    assert [segment.text for segment in get_template("qwen3_5").segments(conversation, False, "<|im_end|>")] == [
        "<|im_start|>user\nColour?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", "Red.<|im_end|>\n"]


def test_a_system_message_is_trimmed_as_the_checkpoints_template_trims_it():
    """Qwen3.5's template writes a system message as "<|im_start|>system\\n" + its content `| trim`: the chat template
    trimmed every message but that one, so a system prompt with surrounding whitespace prompted other tokens."""
    from transformers.utils.chat_template_utils import _compile_jinja_template

    from modeling_croc.conversation import get_template

    messages = [{"role": "system", "content": "  Be brief.\n"}, {"role": "user", "content": " Hi. "}]
    rendered = _compile_jinja_template(get_template("qwen3_5").chat_template("<|im_end|>")).render(
        messages=messages, add_generation_prompt=True)
    assert rendered == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi.<|im_end|>\n"
                        "<|im_start|>assistant\n<think>\n\n</think>\n\n")


@pytest.mark.parametrize("family", ["qwen3_5", "qwen3_5_moe"])
def test_a_text_model_without_a_full_attention_layer_is_refused_when_its_config_is_built(family):
    """With every layer `linear_attention` the parent's own forward fails at inference (its cache holds no attention
    layer to size the causal mask from: a ValueError traceback in evaluation and generation), after a stage-1.5 run
    had trained and saved the model without a word, and Croc's span would apply on no layer (found by a tester).
    Refused in one line when the config is built; one full-attention layer among linear ones is accepted."""
    from croc_testing.qwen3_vl import tiny_qwen3_5_fields, tiny_qwen3_5_moe_fields
    from modeling_croc.configuration_croc import CrocConfigError

    spec = SPECS_BY_NAME[family]
    fields = tiny_qwen3_5_moe_fields() if family == "qwen3_5_moe" else tiny_qwen3_5_fields()
    fields["text_config"]["layer_types"] = ["linear_attention", "linear_attention"]
    config_class = type(spec.config())
    with pytest.raises(CrocConfigError, match="text_config.layer_types has no 'full_attention' layer"):
        config_class(**fields, prompt_pool_size=64, vtr_head="linear")
    fields["text_config"]["layer_types"] = ["full_attention", "linear_attention"]
    config_class(**fields, prompt_pool_size=64, vtr_head="linear")


@pytest.mark.parametrize("family", ["qwen3_5", "qwen3_5_moe"])
def test_a_checkpoints_multi_token_prediction_layers_are_said_to_be_dropped_not_claimed(family, tmp_path, caplog):
    """Qwen3.5's checkpoints hold multi-token-prediction layers (`mtp.*` tensors, `mtp_num_hidden_layers: 1` in their
    text config) that transformers skips on load without a word: a Croc model never has them, yet its folders and a
    `to-plain` export kept claiming one MTP layer over weights that hold none (a server reading MTP would trust it).
    Converting such a config says the layers are not loaded and sets `mtp_num_hidden_layers` to 0, which a saved
    folder and its export keep."""
    import logging

    from transformers.utils import logging as transformers_logging

    from croc_testing.qwen3_vl import tiny_qwen3_5_fields, tiny_qwen3_5_moe_fields

    spec = SPECS_BY_NAME[family]
    fields = tiny_qwen3_5_moe_fields() if family == "qwen3_5_moe" else tiny_qwen3_5_fields()
    fields["text_config"]["mtp_num_hidden_layers"] = 1
    config_class = type(spec.config())
    transformers_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            config = config_class(**fields, prompt_pool_size=64, vtr_head="linear")
    finally:
        transformers_logging.disable_propagation()
    assert config.text_config.mtp_num_hidden_layers == 0
    config.save_pretrained(tmp_path)
    assert type(config).from_pretrained(tmp_path).text_config.mtp_num_hidden_layers == 0
    assert "multi-token-prediction layer(s) (its mtp.* tensors) are not loaded" in caplog.text
