"""Croc processor: a `LlavaProcessor` whose default chat template is Vicuna v1, as in LLaVA-1.5 and Croc."""

from __future__ import annotations

from transformers import LlavaProcessor

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# Renders "{system} USER: <image>\n{question} ASSISTANT: {answer}</s>USER: ..." with every image marker moved to
# the front of its user turn, as LLaVA-1.5 does. Assistant text sits in a {% generation %} block, so
# `return_assistant_tokens_mask=True` marks exactly the supervised tokens. No BOS: the tokenizer adds it.
VICUNA_V1_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] if messages[0]['content'] is string "
    "else messages[0]['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') -%}"
    "{%- set messages = messages[1:] -%}"
    "{%- else -%}{%- set system = '" + VICUNA_V1_SYSTEM.replace("'", "\\'") + "' -%}{%- endif -%}"
    "{{ system + ' ' }}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}"
    "{%- set images = '' -%}{%- set text = message['content'] -%}"
    "{%- else -%}"
    "{%- set images = message['content'] | selectattr('type', 'equalto', 'image') | map(attribute='type') "
    "| map('replace', 'image', '<image>\n') | join('') -%}"
    "{%- set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') "
    "| join(' ') -%}"
    "{%- endif -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{ 'USER: ' + images + text + ' ' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ 'ASSISTANT: ' }}{% generation %}{{ text + '</s>' }}{% endgeneration %}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)


class CrocProcessor(LlavaProcessor):
    """`LlavaProcessor` (image processor + tokenizer, `<image>` expanded to the visual-token count) whose chat
    template defaults to Vicuna v1. Use the PIL image-processor backend where torchvision is not installed."""

    # The full signature is spelled out because ProcessorMixin saves exactly the `__init__` arguments.
    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        patch_size=None,
        vision_feature_select_strategy=None,
        chat_template=None,
        image_token="<image>",
        num_additional_image_tokens=0,
        **kwargs,
    ):
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=patch_size,
            vision_feature_select_strategy=vision_feature_select_strategy,
            chat_template=chat_template if chat_template is not None else VICUNA_V1_CHAT_TEMPLATE,
            image_token=image_token,
            num_additional_image_tokens=num_additional_image_tokens,
            **kwargs,
        )

    @property
    def num_image_tokens(self) -> int:
        """Visual tokens one image expands to (576 for CLIP ViT-L/14 at 336 px with the CLS token dropped)."""
        crop = getattr(self.image_processor, "crop_size", None) or self.image_processor.size
        height, width = crop["height"], crop["width"]
        count = (height // self.patch_size) * (width // self.patch_size) + self.num_additional_image_tokens
        return count - 1 if self.vision_feature_select_strategy == "default" else count


__all__ = ["CrocProcessor", "VICUNA_V1_CHAT_TEMPLATE", "VICUNA_V1_SYSTEM"]
