"""Start Croc from a transformers folder of a parent family (`families.FAMILIES`: llava, llava_onevision, qwen2_5_vl;
e.g. a llava-1.5 or llava-onevision conversion on the Hub, Qwen2.5-VL-7B-Instruct, or a stage-1 run saved as llava):
same weights, plus a fresh prompt pool (and VTR head if the preset has one), ready for stage 1.5."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoProcessor, PreTrainedConfig

from ..configuration_croc import CrocConfig, CrocFieldsMixin
from ..constants import IMAGE_TOKEN
from ..families import FAMILIES, FAMILY_OF_CONFIG
from ..model_folders import ModelFolderError, folder_processor
from .common import build_processor

# model_type of a plain folder -> the Croc config class that extends it.
CROC_CONFIG_FOR_PLAIN: dict[str, type] = {family.plain_model_type: family.config for family in FAMILIES}
# Entries of a saved config that describe its class rather than the architecture.
_CLASS_ENTRIES = ("model_type", "auto_map", "architectures", "transformers_version")


def croc_config_from_llava(llava_config: PreTrainedConfig, **croc_fields) -> CrocFieldsMixin:
    """The Croc config of the same architecture (every field of the llava / llava_onevision config), with
    `croc_fields` (preset, pool size, ...) on top."""
    croc_config_class = CROC_CONFIG_FOR_PLAIN.get(llava_config.model_type)
    if croc_config_class is None:
        raise ValueError(f"expected the config of one of {sorted(CROC_CONFIG_FOR_PLAIN)}, got "
                         f"model_type={llava_config.model_type!r}")
    data = {name: value for name, value in llava_config.to_dict().items() if name not in _CLASS_ENTRIES}
    return croc_config_class.from_dict({**data, **croc_fields})


def llava_processor(source: str | Path, config: CrocFieldsMixin):
    """The parent folder's processor for Croc: a llava folder's as a `CrocProcessor` (its tokenizer and image
    processor, Croc's chat template); a llava_onevision or qwen2_5_vl folder's as the family's Croc processor
    (its own, without the video part); any other family's as transformers loads it; None for a weights-only folder
    (or one whose processor needs what is not installed)."""
    family = FAMILY_OF_CONFIG[type(config)]
    # The project's own processor classes leave out what needs torchvision (video processors); LLaVA-1.5's is
    # rebuilt from the folder's parts below.
    own = family.processor_is_croc and not isinstance(config, CrocConfig)
    processor_class = family.processor if own else AutoProcessor
    source_processor = folder_processor(source, processor_class.from_pretrained,
                                        (OSError, ValueError, TypeError, ImportError))
    if source_processor is None:
        return None
    if not isinstance(config, CrocConfig):
        return source_processor
    # The processor expands `<image>` to the model's image token: a tokenizer without it (or with another id) would
    # give a folder whose every image row fails, after the conversion or a run's model load.
    vocabulary = source_processor.tokenizer.get_vocab()
    if vocabulary.get(IMAGE_TOKEN) != config.image_token_id:
        found = "has no" if IMAGE_TOKEN not in vocabulary else f"gives id {vocabulary[IMAGE_TOKEN]} to its"
        raise ModelFolderError(source, f"its tokenizer {found} {IMAGE_TOKEN} token, which config.json's "
                                       f"image_token_id ({config.image_token_id}) must be: save the tokenizer the "
                                       "model was trained with")
    # The folder's own strategy: a CLIP tower read with `full` keeps its class token, one more `<image>` token.
    processor = build_processor(source_processor.tokenizer, None, config.vision_config,
                                vision_feature_select_strategy=config.vision_feature_select_strategy)
    processor.image_processor = source_processor.image_processor
    return processor


