"""The processor of the SmolVLM Croc model: transformers' `SmolVLMProcessor` (image splitting: a large image becomes a
grid of tiles plus a global view, each of `image_seq_len` placeholders; `pixel_values` `(1, views, 3, S, S)` and
`pixel_attention_mask` `(1, views, S, S)`) for images and text.

Four things differ for training:

* no video processor: SmolVLM's needs torchvision, which this project runs without (the image processor is
  SmolVLM's PIL backend), and stage 1.5 trains on images;
* `SmolVLMProcessor.__init__` requires `num2words`, which only its video prompts use: this class sets the same
  attributes without that check;
* `apply_chat_template` is `ProcessorMixin`'s, without `SmolVLMProcessor`'s video-frame defaults;
* the image processor returns each image's grid (`rows`, `cols`) when called alone: `SmolVLMProcessor` asks for it
  (its `images_kwargs`), and the training dataset calls the image processor itself, then `replace_image_token`.

An image's expansion holds more than placeholders (`<fake_token_around_image>`, `<row_r_col_c>`, newlines,
`<global-img>`): `image_expansion_has_structure` makes the training dataset insert that expansion, tokenised.
That and the length estimate are `CrocSmolVLMProcessorMixin`'s, shared with Idefics3's processor
(`processing_croc_idefics3.py`), whose image processor and expansion SmolVLM's are.
"""

from transformers import SmolVLMProcessor
from transformers.processing_utils import ProcessorMixin


class CrocSmolVLMProcessorMixin:
    """What the training dataset reads of a processor of split images (SmolVLM's, Idefics3's): the expansion it
    inserts tokenised, and the largest per-image placeholder count (`num_image_tokens`) it estimates row lengths
    from."""

    # The training dataset tokenises `replace_image_token`'s expansion (tile markers included) as the image's ids.
    image_expansion_has_structure = True

    @property
    def num_image_tokens(self) -> int:
        """`<image>` placeholders of an image with the most views (the largest grid, `size["longest_edge"]` over
        `max_image_size["longest_edge"]` tiles a side, plus the global view; one view without splitting): the length
        estimate of an image row before its image is read (the exact count is `replace_image_token`'s)."""
        processor = self.image_processor
        views = 1
        if processor.do_image_splitting:
            side = -(-int(processor.size["longest_edge"]) // int(processor.max_image_size["longest_edge"]))
            views = side * side + 1 if side > 1 else 1
        return views * int(self.image_seq_len)

    # What stage 1.5 matches against the pool (`trainer.model_loading.fit_images_to_pool`): an image's whole
    # expansion is visual tokens.
    max_visual_tokens = num_image_tokens


class CrocSmolVLMProcessor(SmolVLMProcessor, CrocSmolVLMProcessorMixin):
    """`SmolVLMProcessor` without the video processor, its image processor returning each image's grid, with the
    largest per-image placeholder count (`num_image_tokens`) the training dataset estimates row lengths from
    (`CrocSmolVLMProcessorMixin`)."""

    # ProcessorMixin saves exactly the `__init__` arguments and takes its sub-processors from it.
    def __init__(self, image_processor=None, tokenizer=None, image_seq_len: int = 169, chat_template=None, **kwargs):
        # `SmolVLMProcessor.__init__`'s attributes, without its `num2words` requirement (video prompts only).
        self.fake_image_token = getattr(tokenizer, "fake_image_token", "<fake_token_around_image>")
        self.image_token = getattr(tokenizer, "image_token", "<image>")
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.end_of_utterance_token = getattr(tokenizer, "end_of_utterance_token", "<end_of_utterance>")
        self.global_image_token = getattr(tokenizer, "global_image_token", "<global-img>")
        self.image_seq_len = image_seq_len
        self.video_token = getattr(tokenizer, "video_token", "<video>")
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)
        if image_processor is not None:
            image_processor.return_row_col_info = True

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        """`ProcessorMixin.apply_chat_template`: `SmolVLMProcessor`'s adds only its video processor's frame
        defaults (and its video chat template), and there is no video processor here."""
        return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)


__all__ = ["CrocSmolVLMProcessor", "CrocSmolVLMProcessorMixin"]
