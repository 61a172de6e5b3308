"""The processor of the Idefics3 Croc model: transformers' `Idefics3Processor` (image splitting: a large image becomes
a grid of tiles plus a global view, each of `image_seq_len` placeholders; `pixel_values` `(1, views, 3, S, S)` and
`pixel_attention_mask` `(1, views, S, S)`) for images and text. It has no video processor, so `__call__`,
`apply_chat_template` and `replace_image_token` are its own as they are; one thing differs for training: the image
processor returns each image's grid (`rows`, `cols`) when called alone (`Idefics3Processor` asks for it in its
`images_kwargs`; the training dataset calls the image processor itself, then `replace_image_token`). What the
training dataset reads beyond that (the tokenised expansion, the length estimate) is SmolVLM's
(`CrocSmolVLMProcessorMixin`), whose processor and image processor are built from these. The parent class stays the
first base (`__mro__[1]`): an exported plain folder names it (`modeling_croc.convert.to_llava.name_parent_processor`).
"""

from transformers import Idefics3Processor

from .processing_croc_smolvlm import CrocSmolVLMProcessorMixin


class CrocIdefics3Processor(Idefics3Processor, CrocSmolVLMProcessorMixin):
    """`Idefics3Processor` with its image processor returning each image's grid (`CrocSmolVLMProcessorMixin` for the
    rest)."""

    # ProcessorMixin saves exactly the `__init__` arguments and takes its sub-processors from it.
    def __init__(self, image_processor=None, tokenizer=None, image_seq_len: int = 169, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, image_seq_len=image_seq_len, chat_template=chat_template,
                         **kwargs)
        if image_processor is not None:
            image_processor.return_row_col_info = True


__all__ = ["CrocIdefics3Processor"]
