"""The processor of the Gemma 3 Croc model: transformers' `Gemma3Processor` (each `<start_of_image>` in a prompt
expanded to `"\\n\\n<start_of_image>" + image_seq_length x "<image_soft_token>" + "<end_of_image>\\n\\n"`) with what
Croc's training dataset reads besides.

Gemma 3's own processor works here without torchvision (its image processor has a PIL backend,
`Gemma3ImageProcessorPil`, which `AutoImageProcessor` picks when torchvision is missing). Two things differ for
training:

* `image_token_id`: `Gemma3Processor` sets it to the id of `<start_of_image>` (the text marker a prompt carries),
  while the model's placeholder, which the image's visual tokens replace and which the dataset repeats
  `num_image_tokens` times, is `<image_soft_token>` (the config's `image_token_index`); here it is that one.
* `num_image_tokens`: every image is `image_seq_length` (the config's `mm_tokens_per_image`) placeholders. Pan-and-scan
  (`do_pan_and_scan`) would add crops, each its own block of placeholders wrapped in text the training template does
  not render; training keeps it off, and asking for the count with it on is refused.
"""

from transformers import Gemma3Processor


class CrocGemma3Processor(Gemma3Processor):
    """`Gemma3Processor` whose `image_token_id` is the placeholder (`<image_soft_token>`), with the fixed per-image
    token count the training dataset expands the data files' `<image>` marker to. Inference is Gemma 3's: the prompt
    carries `<start_of_image>` (`image_token`), which `__call__` expands as `Gemma3Processor` does."""

    # Every image expands to `num_image_tokens` placeholders whatever its size (`trainer.data` then needs no image to
    # count a row's tokens).
    fixed_image_tokens = True

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, image_seq_length: int = 256,
                 **kwargs):
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template,
                         image_seq_length=image_seq_length, **kwargs)
        self.image_token_id = tokenizer.image_token_id

    @property
    def num_image_tokens(self) -> int:
        """Placeholders of one image (`image_seq_length`); refused with pan-and-scan on, whose crops add blocks."""
        if getattr(self.image_processor, "do_pan_and_scan", None):
            raise ValueError("pan-and-scan (do_pan_and_scan) adds a block of image tokens per crop, wrapped in text "
                             "the training template does not render: turn it off for training")
        return int(self.image_seq_length)


__all__ = ["CrocGemma3Processor"]
