"""Croc as a transformers model. Importing this package registers it with the Auto classes."""

import transformers
from transformers import AutoConfig, AutoProcessor

from . import modeling_croc as _modeling
from . import modeling_croc_onevision as _modeling_onevision
from .configuration_croc import CrocConfig
from .configuration_croc_onevision import CrocOnevisionConfig
from .constants import AUTO_MODEL_CLASSES, IGNORE_INDEX, IMAGE_TOKEN
from .conversation import TEMPLATES, ConversationTemplate, get_template
from .modeling_croc import (
    CrocCausalLMOutputWithPast,
    CrocForConditionalGeneration,
    CrocModel,
    CrocPreTrainedModel,
)
from .modeling_croc_onevision import (
    ONEVISION_AUTO_MODEL_CLASSES,
    CrocOnevisionCausalLMOutputWithPast,
    CrocOnevisionForConditionalGeneration,
    CrocOnevisionModel,
    CrocOnevisionPreTrainedModel,
)
from .presets import CROC_PRESET_NAMES, CROC_PRESETS, CrocPreset, get_preset
from .processing_croc import VICUNA_V1_CHAT_TEMPLATE, CrocProcessor, with_image_aspect_ratio
from .processing_croc_onevision import CrocOnevisionProcessor

AutoConfig.register("croc", CrocConfig, exist_ok=True)
# Every Auto class Llava is registered with (constants.AUTO_MODEL_CLASSES); one the installed transformers does not
# have yet is skipped.
for _auto_name, _class_name in AUTO_MODEL_CLASSES.items():
    if hasattr(transformers, _auto_name):
        getattr(transformers, _auto_name).register(CrocConfig, getattr(_modeling, _class_name), exist_ok=True)
AutoProcessor.register(CrocConfig, CrocProcessor, exist_ok=True)
AutoConfig.register("croc_onevision", CrocOnevisionConfig, exist_ok=True)
# The Auto classes llava_onevision is registered with: the same table, with OneVision's classes.
for _auto_name, _class_name in ONEVISION_AUTO_MODEL_CLASSES.items():
    if hasattr(transformers, _auto_name):
        getattr(transformers, _auto_name).register(CrocOnevisionConfig, getattr(_modeling_onevision, _class_name),
                                                   exist_ok=True)
AutoProcessor.register(CrocOnevisionConfig, CrocOnevisionProcessor, exist_ok=True)

# save_pretrained then copies these modules next to the weights and writes `auto_map` (every Auto class above, see
# CrocPreTrainedModel.save_pretrained), so a saved folder also loads with `trust_remote_code=True` where this
# package is not installed.
CrocConfig.register_for_auto_class()
CrocModel.register_for_auto_class("AutoModel")
CrocForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
CrocProcessor.register_for_auto_class("AutoProcessor")
CrocOnevisionConfig.register_for_auto_class()
CrocOnevisionModel.register_for_auto_class("AutoModel")
CrocOnevisionForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
CrocOnevisionProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "AUTO_MODEL_CLASSES",
    "CROC_PRESETS",
    "CROC_PRESET_NAMES",
    "IGNORE_INDEX",
    "IMAGE_TOKEN",
    "TEMPLATES",
    "ConversationTemplate",
    "CrocPreset",
    "get_preset",
    "get_template",
    "with_image_aspect_ratio",
    "VICUNA_V1_CHAT_TEMPLATE",
    "CrocCausalLMOutputWithPast",
    "CrocConfig",
    "CrocOnevisionCausalLMOutputWithPast",
    "CrocOnevisionConfig",
    "CrocOnevisionForConditionalGeneration",
    "CrocOnevisionModel",
    "CrocOnevisionPreTrainedModel",
    "CrocOnevisionProcessor",
    "CrocForConditionalGeneration",
    "CrocModel",
    "CrocPreTrainedModel",
    "CrocProcessor",
]
