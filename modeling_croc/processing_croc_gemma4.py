"""The processor of the Gemma 4 Croc model: transformers' `Gemma4Processor` for images and text (each `<|image|>` of a
prompt expanded to `"<|image>" + n x "<|image|>" + "<image|>"`, n the image's own soft tokens: its patch grid, kept at
its aspect ratio under `max_soft_tokens`, pooled `pooling_kernel_size`^2 to one).

Gemma 4's own processor also holds a video processor, which needs torchvision, and an audio feature extractor; this
project runs without torchvision (the PIL image-processor backend, `Gemma4ImageProcessorPil`) and stage 1.5 trains on
images, so this subclass leaves both out, as `CrocQwen2_5_VLProcessor` leaves Qwen's video processor out. The parent
class stays the first base (`__mro__[1]`): an exported plain folder names it
(`modeling_croc.convert.to_llava.name_parent_processor`).

Training reads besides:

* `image_expansion_has_structure`: an image's ids are its expansion (`replace_image_token`, the begin and end-of-image
  tokens around its placeholders), tokenised, as the processor writes them inside a prompt.
* `max_visual_tokens` / `limit_visual_tokens`: the pool bound of stage 1.5 (`trainer.model_loading.
  fit_images_to_pool`). The image processor takes only the `max_soft_tokens` of `GEMMA4_SOFT_TOKEN_BUDGETS` (its
  `_SUPPORTED_SOFT_TOKENS`, checked when it preprocesses), so a bound is the largest of them under the limit.
"""

from transformers import Gemma4Processor, ProcessorMixin

# The `max_soft_tokens` values Gemma 4's image processor accepts (`image_processing_pil_gemma4._SUPPORTED_SOFT_TOKENS`
# in transformers 5.x; any other value is refused when an image is preprocessed).
GEMMA4_SOFT_TOKEN_BUDGETS: tuple[int, ...] = (70, 140, 280, 560, 1120)


class _ImagesAndTextOnly(ProcessorMixin):
    """`ProcessorMixin` between `Gemma4Processor` and itself: `Gemma4Processor.__init__` passes its four parts by
    keyword, which `ProcessorMixin` refuses where the class (whose `__init__` names its parts) has no such part; the
    absent ones (None) are dropped here."""

    def __init__(self, *args, feature_extractor=None, video_processor=None, **kwargs) -> None:
        if feature_extractor is not None or video_processor is not None:
            raise ValueError("this processor takes images and text only: no feature extractor, no video processor")
        super().__init__(*args, **kwargs)


class CrocGemma4Processor(Gemma4Processor, _ImagesAndTextOnly):
    """`Gemma4Processor` without the video processor and the audio feature extractor: images and text only."""

    # An image's ids are the tokenised `replace_image_token` (`<|image>`, its placeholders, `<image|>`), which
    # `trainer.data` inserts where the data files' `<image>` marker is.
    image_expansion_has_structure = True

    # ProcessorMixin saves exactly the `__init__` arguments and takes its sub-processors from it.
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs) -> None:
        super().__init__(feature_extractor=None, image_processor=image_processor, tokenizer=tokenizer,
                         video_processor=None, chat_template=chat_template, **kwargs)

    @property
    def max_visual_tokens(self) -> int:
        """Soft tokens of the largest image (`max_soft_tokens`: the image processor resizes every image to at most
        that many pooled patches)."""
        return int(self.image_processor.max_soft_tokens)

    # The length estimate of an image row before its image is read (the exact count is `replace_image_token`'s).
    num_image_tokens = max_visual_tokens

    def limit_visual_tokens(self, max_tokens: int) -> None:
        """Resize images to at most `max_tokens` soft tokens: `max_soft_tokens` becomes the largest accepted budget
        (`GEMMA4_SOFT_TOKEN_BUDGETS`) not above it, or the smallest where none is (the caller checks the result,
        `fit_images_to_pool`); larger limits than the current one change nothing."""
        processor = self.image_processor
        fitting = [budget for budget in GEMMA4_SOFT_TOKEN_BUDGETS if budget <= max_tokens]
        budget = max(fitting) if fitting else min(GEMMA4_SOFT_TOKEN_BUDGETS)
        if budget < int(processor.max_soft_tokens):
            processor.max_soft_tokens = budget


__all__ = ["GEMMA4_SOFT_TOKEN_BUDGETS", "CrocGemma4Processor"]
