"""A tiny Gemma 3 for Croc, built in code (nothing downloaded): config and batch builders of the Gemma 3 family."""

from __future__ import annotations

from typing import Any

import torch

from modeling_croc import CrocGemma3Config

# Gemma 3's special tokens in a 160-entry vocabulary: padding, bos, the image placeholder (`<image_soft_token>`) and
# the begin / end-of-image tokens that wrap each image's placeholders.
GEMMA3_TOKENS = {"pad_token_id": 0, "bos_token_id": 2, "image_token_index": 150, "boi_token_index": 151,
                 "eoi_token_index": 152}
# The sliding window of the text model's sliding layer: shorter than the test rows, so the window shows in the masks.
GEMMA3_SLIDING_WINDOW = 6
# Visual tokens per image: the tower's 4x4 patch grid average-pooled 2x2.
GEMMA3_TOKENS_PER_IMAGE = 4


def tiny_gemma3_fields() -> dict[str, Any]:
    """Gemma 3 config fields of a tiny model: a 2-layer text model of width 32 (4 heads of 8, 2 KV heads), its first
    layer sliding (window `GEMMA3_SLIDING_WINDOW`) and its second global, as Gemma 3 alternates them; a 1-layer
    SigLIP tower of width 16 on 16x16 images of 4x4 patches, pooled to `GEMMA3_TOKENS_PER_IMAGE` tokens."""
    text = {"vocab_size": 160, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "query_pre_attn_scalar": 8,
            "sliding_window": GEMMA3_SLIDING_WINDOW, "layer_types": ["sliding_attention", "full_attention"],
            "pad_token_id": GEMMA3_TOKENS["pad_token_id"], "bos_token_id": GEMMA3_TOKENS["bos_token_id"],
            "eos_token_id": 1}
    vision = {"model_type": "siglip_vision_model", "hidden_size": 16, "intermediate_size": 32,
              "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 16, "patch_size": 4}
    return {"text_config": text, "vision_config": vision, "mm_tokens_per_image": GEMMA3_TOKENS_PER_IMAGE,
            **{name: value for name, value in GEMMA3_TOKENS.items() if name.endswith("_index")}}


def tiny_croc_gemma3_config(**croc_fields: Any) -> CrocGemma3Config:
    """A tiny `CrocGemma3Config` (`tiny_gemma3_fields`) with `croc_fields` on top (pool of 64 by default)."""
    croc_fields.setdefault("prompt_pool_size", 64)
    croc_fields.setdefault("vtr_head", "linear")
    return CrocGemma3Config(**tiny_gemma3_fields(), **croc_fields)


@torch.no_grad()
def randomize_gemma3_projector(model: torch.nn.Module, seed: int = 0) -> None:
    """Draw the projector's weight: Gemma 3 initialises it to zeros, which would make every visual token zero and
    let tests about visual tokens pass on zeros."""
    projector = model.model.multi_modal_projector if hasattr(model, "lm_head") else model.multi_modal_projector
    generator = torch.Generator().manual_seed(seed)
    weight = projector.mm_input_projection_weight
    weight.copy_(torch.randn(weight.shape, generator=generator) * 0.5)


def make_gemma3_batch(config, images_per_row: list[int], text_lengths: list[int], left_pad: int = 0,
                      seed: int = 0) -> dict[str, torch.Tensor]:
    """A left-padded batch in Gemma 3's layout: `<bos>`, then per image `<start_of_image>`, its
    `mm_tokens_per_image` placeholders and `<end_of_image>`, then `text_lengths[row]` text tokens, all supervised.
    Rows may hold several images (as pan-and-scan crops do: each crop is an image of its own).

    Returns what its processor returns (`input_ids`, `attention_mask`, `pixel_values` `(num_images, 3, H, W)`,
    `token_type_ids`: 1 at image placeholders) plus `labels`."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for num_images, text_length in zip(images_per_row, text_lengths):
        image = [config.boi_token_index] + [config.image_token_index] * config.mm_tokens_per_image \
            + [config.eoi_token_index]
        text = torch.randint(10, 140, (text_length,), generator=generator).tolist()
        rows.append([GEMMA3_TOKENS["bos_token_id"]] + image * num_images + text)
    length = max(map(len, rows)) + left_pad
    input_ids = torch.full((len(rows), length), GEMMA3_TOKENS["pad_token_id"])
    attention_mask = torch.zeros(len(rows), length, dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, length - len(row):] = torch.tensor(row)
        attention_mask[index, length - len(row):] = 1
    labels = torch.where(attention_mask.bool() & (input_ids >= 10) & (input_ids < 140), input_ids, -100)
    vision = config.vision_config
    pixel_values = torch.randn(sum(images_per_row), vision.num_channels, vision.image_size, vision.image_size,
                               generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "pixel_values": pixel_values,
            "token_type_ids": (input_ids == config.image_token_index).long()}


# Gemma 3's special tokens, as its tokenizer names them: padding, end and start of text, unknown, the turn markers, the
# image block's begin / end and its placeholder.
GEMMA3_SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                         "<end_of_image>", "<image_soft_token>")

# A chat template in the format of Gemma 3's instruction-tuned checkpoints (written here; transformers ships none):
# BOS, a system message folded into the first user turn, roles user / model, each image as `<start_of_image>` (which
# the processor expands), text trimmed, turns closed by "<end_of_turn>\n".
GEMMA3_HUB_STYLE_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = (messages[0]['content'] if messages[0]['content'] is string "
    "else messages[0]['content'][0]['text']) + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def gemma_bpe_tokenizer(special_tokens: tuple[str, ...], named_tokens: dict[str, str], vocab_size: int = 300):
    """A Gemma-style tokenizer available offline: byte-level BPE trained here in milliseconds on a fixed English text
    (as `croc_testing.tiny.chatml_bpe_tokenizer`), with `special_tokens` first (ids 0.., `<pad>`, `<eos>`, `<bos>`,
    `<unk>` among them; the others special), BOS added in front of every encoded text as Gemma's tokenizer does, and
    `named_tokens` under the names the family's processor reads (`boi_token`, `image_token`, ...)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [
        "A red square on grey. Two blue circles. The picture shows a small cat sitting on a wooden table.",
        "Describe the image in detail.\n\nWhat is in the picture? What colour is it? And the shape? Seven. Yes.",
    ] * 20
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(corpus, trainer)
    bos_id = special_tokens.index("<bos>")
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B",
                                                           special_tokens=[("<bos>", bos_id)])
    basic = ("<pad>", "<eos>", "<bos>", "<unk>")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        additional_special_tokens=[token for token in special_tokens
                                   if token not in basic and token not in named_tokens.values()],
        extra_special_tokens=dict(named_tokens))
    tokenizer.model_max_length = 2048
    return tokenizer


def gemma3_bpe_tokenizer(vocab_size: int = 300):
    """A Gemma-3-style tokenizer available offline (`gemma_bpe_tokenizer`) with Gemma 3's special tokens
    (`GEMMA3_SPECIAL_TOKENS`, ids 0-8) and the image tokens under the names `Gemma3Processor` reads (`boi_token`,
    `eoi_token`, `image_token`)."""
    return gemma_bpe_tokenizer(GEMMA3_SPECIAL_TOKENS, {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                                       "image_token": "<image_soft_token>"}, vocab_size)


def tiny_gemma3_processor():
    """A `CrocGemma3Processor` available offline: `gemma3_bpe_tokenizer`, Gemma 3's PIL image processor at the tiny
    tower's 16x16 (pan-and-scan off), `GEMMA3_TOKENS_PER_IMAGE` placeholders per image, the Gemma-3-style chat
    template."""
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    from modeling_croc.processing_croc_gemma3 import CrocGemma3Processor

    image_processor = Gemma3ImageProcessorPil(size={"height": 16, "width": 16}, do_pan_and_scan=False)
    return CrocGemma3Processor(image_processor=image_processor, tokenizer=gemma3_bpe_tokenizer(),
                               chat_template=GEMMA3_HUB_STYLE_CHAT_TEMPLATE,
                               image_seq_length=GEMMA3_TOKENS_PER_IMAGE)


def save_tiny_gemma3(folder, seed: int = 0):
    """Write a random tiny plain Gemma 3 folder (`Gemma3ForConditionalGeneration`, its projector drawn at random, and
    the files of a `Gemma3Processor` with `tiny_gemma3_processor`'s parts), laid out as a Hub checkpoint is: what a
    user starts Croc's stage 1.5 from."""
    from pathlib import Path

    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor

    folder = Path(folder)
    parts = tiny_gemma3_processor()
    tokenizer = parts.tokenizer
    fields = tiny_gemma3_fields()
    fields.update(image_token_index=tokenizer.image_token_id, boi_token_index=tokenizer.boi_token_id,
                  eoi_token_index=tokenizer.convert_tokens_to_ids("<end_of_image>"))
    fields["text_config"].update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(Gemma3Config(**fields))
    randomize_gemma3_projector(model, seed)
    model.save_pretrained(folder)
    Gemma3Processor(image_processor=parts.image_processor, tokenizer=tokenizer, chat_template=parts.chat_template,
                    image_seq_length=parts.image_seq_length).save_pretrained(folder)
    return folder


__all__ = ["GEMMA3_HUB_STYLE_CHAT_TEMPLATE", "GEMMA3_SLIDING_WINDOW", "GEMMA3_SPECIAL_TOKENS", "GEMMA3_TOKENS",
           "GEMMA3_TOKENS_PER_IMAGE", "gemma3_bpe_tokenizer", "gemma_bpe_tokenizer", "make_gemma3_batch",
           "randomize_gemma3_projector", "save_tiny_gemma3", "tiny_croc_gemma3_config", "tiny_gemma3_fields", "tiny_gemma3_processor"]
