"""Start Croc from a transformers `llava` folder (e.g. a llava-1.5 conversion on the Hub, or a stage-1 run saved as
llava): same weights, plus a fresh prompt pool (and VTR head if the preset has one), ready for stage 1.5."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoProcessor, LlavaConfig

from ..configuration_croc import CrocConfig
from ..processing_croc import CrocProcessor
from .common import build_processor

# LlavaConfig fields a CrocConfig takes over unchanged.
LLAVA_FIELDS = (
    "image_token_index",
    "projector_hidden_act",
    "vision_feature_select_strategy",
    "vision_feature_layer",
    "multimodal_projector_bias",
    "tie_word_embeddings",
)


def croc_config_from_llava(llava_config: LlavaConfig, **croc_fields) -> CrocConfig:
    """The `CrocConfig` of the same architecture, with `croc_fields` (preset, pool size, ...) on top."""
    if llava_config.model_type != "llava":
        raise ValueError(f"expected a llava config, got model_type={llava_config.model_type!r}")
    return CrocConfig(
        vision_config=llava_config.vision_config.to_dict(),
        text_config=llava_config.text_config.to_dict(),
        **{name: getattr(llava_config, name) for name in LLAVA_FIELDS},
        **croc_fields,
    )


def llava_processor(source: str | Path, config: CrocConfig) -> CrocProcessor | None:
    """The llava folder's processor as a `CrocProcessor` (its tokenizer and image processor, Croc's chat template), or
    None for a weights-only folder."""
    try:
        source_processor = AutoProcessor.from_pretrained(source)
    except (OSError, ValueError, TypeError):
        return None
    processor = build_processor(source_processor.tokenizer, None, config.vision_config)
    processor.image_processor = source_processor.image_processor
    return processor


def convert_llava_folder(source: str | Path, out_dir: str | Path, **croc_fields) -> Path:
    """Load the llava folder `source` as Croc (transformers' own llava renames apply) and save it to `out_dir`,
    with its processor re-saved as a `CrocProcessor`."""
    from ..loading import load_croc

    model, processor = load_croc(source, croc_fields=croc_fields)
    model.save_pretrained(out_dir)
    if processor is not None:
        processor.save_pretrained(out_dir)
    return Path(out_dir)
