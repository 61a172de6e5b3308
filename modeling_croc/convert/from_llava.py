"""Start Croc from a transformers `llava` or `llava_onevision` folder (e.g. a llava-1.5 or llava-onevision conversion
on the Hub, or a stage-1 run saved as llava): same weights, plus a fresh prompt pool (and VTR head if the preset has
one), ready for stage 1.5."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoProcessor, PreTrainedConfig

from ..configuration_croc import CrocConfig
from ..configuration_croc_onevision import CrocOnevisionConfig
from ..processing_croc_onevision import CrocOnevisionProcessor
from .common import build_processor

# model_type of a plain folder -> the Croc config class that extends it.
CROC_CONFIG_FOR_PLAIN: dict[str, type] = {"llava": CrocConfig, "llava_onevision": CrocOnevisionConfig}
# Entries of a saved config that describe its class rather than the architecture.
_CLASS_ENTRIES = ("model_type", "auto_map", "architectures", "transformers_version")


def croc_config_from_llava(llava_config: PreTrainedConfig, **croc_fields) -> CrocConfig | CrocOnevisionConfig:
    """The Croc config of the same architecture (every field of the llava / llava_onevision config), with
    `croc_fields` (preset, pool size, ...) on top."""
    croc_config_class = CROC_CONFIG_FOR_PLAIN.get(llava_config.model_type)
    if croc_config_class is None:
        raise ValueError(f"expected a llava or llava_onevision config, got model_type={llava_config.model_type!r}")
    data = {name: value for name, value in llava_config.to_dict().items() if name not in _CLASS_ENTRIES}
    return croc_config_class.from_dict({**data, **croc_fields})


def llava_processor(source: str | Path, config: CrocConfig | CrocOnevisionConfig):
    """The llava folder's processor as a `CrocProcessor` (its tokenizer and image processor, Croc's chat template);
    a llava_onevision folder's as a `CrocOnevisionProcessor` (its own, without the video part); None for a
    weights-only folder."""
    processor_class = CrocOnevisionProcessor if isinstance(config, CrocOnevisionConfig) else AutoProcessor
    try:
        source_processor = processor_class.from_pretrained(source)
    except (OSError, ValueError, TypeError):
        return None
    if isinstance(config, CrocOnevisionConfig):
        return source_processor
    processor = build_processor(source_processor.tokenizer, None, config.vision_config)
    processor.image_processor = source_processor.image_processor
    return processor


