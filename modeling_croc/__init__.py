"""Croc as a transformers model. Importing this package registers it with the Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from .configuration_croc import CrocConfig
from .configuration_croc_onevision import CrocOnevisionConfig
from .constants import IGNORE_INDEX, IMAGE_TOKEN
from .conversation import TEMPLATES, ConversationTemplate, get_template
from .modeling_croc import (
    CrocCausalLMOutputWithPast,
    CrocForConditionalGeneration,
    CrocModel,
    CrocPreTrainedModel,
)
from .modeling_croc_onevision import (
    CrocOnevisionCausalLMOutputWithPast,
    CrocOnevisionForConditionalGeneration,
    CrocOnevisionModel,
    CrocOnevisionPreTrainedModel,
)
from .presets import CROC_PRESET_NAMES, CROC_PRESETS, CrocPreset, get_preset
from .processing_croc import VICUNA_V1_CHAT_TEMPLATE, CrocProcessor, with_image_aspect_ratio
from .processing_croc_onevision import CrocOnevisionProcessor

AutoConfig.register("croc", CrocConfig, exist_ok=True)
AutoModel.register(CrocConfig, CrocModel, exist_ok=True)
AutoModelForImageTextToText.register(CrocConfig, CrocForConditionalGeneration, exist_ok=True)
AutoProcessor.register(CrocConfig, CrocProcessor, exist_ok=True)
AutoConfig.register("croc_onevision", CrocOnevisionConfig, exist_ok=True)
AutoModel.register(CrocOnevisionConfig, CrocOnevisionModel, exist_ok=True)
AutoModelForImageTextToText.register(CrocOnevisionConfig, CrocOnevisionForConditionalGeneration, exist_ok=True)
AutoProcessor.register(CrocOnevisionConfig, CrocOnevisionProcessor, exist_ok=True)

# save_pretrained then copies these modules next to the weights and writes `auto_map`, so a saved folder also
# loads with `trust_remote_code=True` where this package is not installed.
CrocConfig.register_for_auto_class()
CrocModel.register_for_auto_class("AutoModel")
CrocForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
CrocProcessor.register_for_auto_class("AutoProcessor")
CrocOnevisionConfig.register_for_auto_class()
CrocOnevisionModel.register_for_auto_class("AutoModel")
CrocOnevisionForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
CrocOnevisionProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
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
