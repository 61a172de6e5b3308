"""Croc as a transformers model. Importing this package registers it with the Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from .configuration_croc import CROC_PRESETS, CrocConfig
from .modeling_croc import (
    CrocCausalLMOutputWithPast,
    CrocForConditionalGeneration,
    CrocModel,
    CrocPreTrainedModel,
)
from .processing_croc import VICUNA_V1_CHAT_TEMPLATE, CrocProcessor

AutoConfig.register("croc", CrocConfig, exist_ok=True)
AutoModel.register(CrocConfig, CrocModel, exist_ok=True)
AutoModelForImageTextToText.register(CrocConfig, CrocForConditionalGeneration, exist_ok=True)
AutoProcessor.register(CrocConfig, CrocProcessor, exist_ok=True)

# save_pretrained then copies these modules next to the weights and writes `auto_map`, so a saved folder also
# loads with `trust_remote_code=True` where this package is not installed.
CrocConfig.register_for_auto_class()
CrocModel.register_for_auto_class("AutoModel")
CrocForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
CrocProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "CROC_PRESETS",
    "VICUNA_V1_CHAT_TEMPLATE",
    "CrocCausalLMOutputWithPast",
    "CrocConfig",
    "CrocForConditionalGeneration",
    "CrocModel",
    "CrocPreTrainedModel",
    "CrocProcessor",
]
