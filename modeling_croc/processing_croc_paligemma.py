"""The processor of the PaliGemma Croc model: transformers' `PaliGemmaProcessor` (each `<image>` of a prompt expanded
to `image_seq_length` placeholders, then `<bos>`, the prefix and "\\n"; a suffix and `<eos>` after it) with what Croc's
training dataset and collator read besides.

* `num_image_tokens`: every image is `image_seq_length` placeholders (the tower's fixed patch grid).
* `token_types`: what the `token_type_ids` it returns mark. PaliGemma's are 0 on the prefix (the image, `<bos>`, the
  prefix text and its newline: one bidirectional block) and 1 from the suffix's first token to the end of the sample
  (causal, and the only tokens with labels), not Gemma 3's 1 at image placeholders: the collator writes them so
  (`trainer.collator`), and the chat path gives a scored answer type 1 (`modeling_croc.chat`).
"""

from transformers import PaliGemmaProcessor


class CrocPaliGemmaProcessor(PaliGemmaProcessor):
    """`PaliGemmaProcessor` with the fixed per-image token count the training dataset expands the data files'
    `<image>` marker to. Inference is PaliGemma's own (`__call__`, its `<bos>` after the images)."""

    # Every image expands to `num_image_tokens` placeholders whatever its size (`trainer.data` then needs no image to
    # count a row's tokens).
    fixed_image_tokens = True
    # `token_type_ids` mark the suffix (1 from the answer's first token to the end), not image placeholders.
    token_types = "suffix"

    @property
    def num_image_tokens(self) -> int:
        """Placeholders of one image (`image_seq_length`, the image processor's)."""
        return int(self.image_seq_length)


__all__ = ["CrocPaliGemmaProcessor"]
