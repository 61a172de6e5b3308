"""Croc as a transformers model. Importing this package registers it with the Auto classes."""

import transformers
from transformers import AutoConfig, AutoProcessor

from .configuration_croc import CrocConfig
from .configuration_croc_gemma3 import CrocGemma3Config
from .configuration_croc_gemma4 import CrocGemma4Config
from .configuration_croc_glm4v import CrocGlm4vConfig
from .configuration_croc_glm46v import CrocGlm46VConfig
from .configuration_croc_idefics3 import CrocIdefics3Config
from .configuration_croc_internvl import CrocInternVLConfig
from .configuration_croc_lfm2_vl import CrocLfm2VlConfig
from .configuration_croc_llava_next import CrocLlavaNextConfig
from .configuration_croc_llava_onevision1_5 import CrocLlavaOnevision15Config
from .configuration_croc_mistral3 import CrocMistral3Config
from .configuration_croc_onevision import CrocOnevisionConfig
from .configuration_croc_paligemma import CrocPaliGemmaConfig
from .configuration_croc_qwen2_5_vl import CrocQwen2_5_VLConfig
from .configuration_croc_qwen2_vl import CrocQwen2VLConfig
from .configuration_croc_qwen3_5 import CrocQwen3_5Config
from .configuration_croc_qwen3_5_moe import CrocQwen3_5MoeConfig
from .configuration_croc_qwen3_vl import CrocQwen3VLConfig
from .configuration_croc_qwen3_vl_moe import CrocQwen3VLMoeConfig
from .configuration_croc_smolvlm import CrocSmolVLMConfig
from .constants import AUTO_MODEL_CLASSES, IGNORE_INDEX, IMAGE_TOKEN
from .conversation import TEMPLATES, ConversationTemplate, get_template
from .families import FAMILIES, CrocFamily
from .modeling_croc import (
    CrocCausalLMOutputWithPast,
    CrocForConditionalGeneration,
    CrocModel,
    CrocPreTrainedModel,
)
from .modeling_croc_gemma3 import (
    CrocGemma3CausalLMOutputWithPast,
    CrocGemma3ForConditionalGeneration,
    CrocGemma3Model,
    CrocGemma3PreTrainedModel,
)
from .modeling_croc_gemma4 import (
    CrocGemma4CausalLMOutputWithPast,
    CrocGemma4ForConditionalGeneration,
    CrocGemma4Model,
    CrocGemma4PreTrainedModel,
)
from .modeling_croc_glm4v import CrocGlm4vForConditionalGeneration, CrocGlm4vModel, CrocGlm4vPreTrainedModel
from .modeling_croc_glm46v import (
    CrocGlm46VForConditionalGeneration,
    CrocGlm46VModel,
    CrocGlm46VPreTrainedModel,
)
from .modeling_croc_idefics3 import (
    CrocIdefics3CausalLMOutputWithPast,
    CrocIdefics3ForConditionalGeneration,
    CrocIdefics3Model,
    CrocIdefics3PreTrainedModel,
)
from .modeling_croc_internvl import (
    CrocInternVLCausalLMOutputWithPast,
    CrocInternVLForConditionalGeneration,
    CrocInternVLModel,
    CrocInternVLPreTrainedModel,
)
from .modeling_croc_lfm2_vl import (
    CrocLfm2VlCausalLMOutputWithPast,
    CrocLfm2VlForConditionalGeneration,
    CrocLfm2VlModel,
    CrocLfm2VlPreTrainedModel,
)
from .modeling_croc_llava_next import (
    CrocLlavaNextCausalLMOutputWithPast,
    CrocLlavaNextForConditionalGeneration,
    CrocLlavaNextModel,
    CrocLlavaNextPreTrainedModel,
)
from .modeling_croc_llava_onevision1_5 import (
    CrocLlavaOnevision15CausalLMOutputWithPast,
    CrocLlavaOnevision15ForConditionalGeneration,
    CrocLlavaOnevision15Model,
    CrocLlavaOnevision15PreTrainedModel,
)
from .modeling_croc_mistral3 import (
    CrocMistral3CausalLMOutputWithPast,
    CrocMistral3ForConditionalGeneration,
    CrocMistral3Model,
    CrocMistral3PreTrainedModel,
)
from .modeling_croc_onevision import (
    ONEVISION_AUTO_MODEL_CLASSES,
    CrocOnevisionCausalLMOutputWithPast,
    CrocOnevisionForConditionalGeneration,
    CrocOnevisionModel,
    CrocOnevisionPreTrainedModel,
)
from .modeling_croc_paligemma import (
    CrocPaliGemmaCausalLMOutputWithPast,
    CrocPaliGemmaForConditionalGeneration,
    CrocPaliGemmaModel,
    CrocPaliGemmaPreTrainedModel,
)
from .modeling_croc_qwen2_5_vl import (
    CrocQwen2_5_VLCausalLMOutputWithPast,
    CrocQwen2_5_VLForConditionalGeneration,
    CrocQwen2_5_VLModel,
    CrocQwen2_5_VLPreTrainedModel,
)
from .modeling_croc_qwen2_vl import (
    CrocQwen2VLCausalLMOutputWithPast,
    CrocQwen2VLForConditionalGeneration,
    CrocQwen2VLModel,
    CrocQwen2VLPreTrainedModel,
)
from .modeling_croc_qwen3_5 import (
    CrocQwen3_5ForConditionalGeneration,
    CrocQwen3_5Model,
    CrocQwen3_5PreTrainedModel,
)
from .modeling_croc_qwen3_5_moe import (
    CrocQwen3_5MoeForConditionalGeneration,
    CrocQwen3_5MoeModel,
    CrocQwen3_5MoePreTrainedModel,
)
from .modeling_croc_qwen3_vl import (
    CrocQwen3VLCausalLMOutputWithPast,
    CrocQwen3VLForConditionalGeneration,
    CrocQwen3VLModel,
    CrocQwen3VLPreTrainedModel,
)
from .modeling_croc_qwen3_vl_moe import (
    CrocQwen3VLMoeCausalLMOutputWithPast,
    CrocQwen3VLMoeForConditionalGeneration,
    CrocQwen3VLMoeModel,
    CrocQwen3VLMoePreTrainedModel,
)
from .modeling_croc_smolvlm import (
    CrocSmolVLMCausalLMOutputWithPast,
    CrocSmolVLMForConditionalGeneration,
    CrocSmolVLMModel,
    CrocSmolVLMPreTrainedModel,
)
from .presets import CROC_PRESET_NAMES, CROC_PRESETS, CrocPreset, get_preset
from .processing_croc import VICUNA_V1_CHAT_TEMPLATE, CrocProcessor, with_image_aspect_ratio
from .processing_croc_gemma3 import CrocGemma3Processor
from .processing_croc_gemma4 import CrocGemma4Processor
from .processing_croc_glm4v import CrocGlm4vProcessor
from .processing_croc_glm46v import CrocGlm46VProcessor
from .processing_croc_idefics3 import CrocIdefics3Processor
from .processing_croc_internvl import CrocInternVLProcessor
from .processing_croc_llava_next import CrocLlavaNextProcessor
from .processing_croc_llava_onevision1_5 import CrocLlavaOnevision15Processor
from .processing_croc_mistral3 import CrocMistral3Processor
from .processing_croc_onevision import CrocOnevisionProcessor
from .processing_croc_paligemma import CrocPaliGemmaProcessor
from .processing_croc_qwen2_vl import CrocQwen2VLProcessor
from .processing_croc_qwen3_vl import CrocQwen3VLProcessor
from .processing_croc_smolvlm import CrocSmolVLMProcessor


def _register_family(family: CrocFamily) -> None:
    """Register one Croc family with transformers: its config with AutoConfig, its classes with every Auto class
    its parent is registered with (`croc_auto_classes`; one the installed transformers lacks is skipped), its
    processor with AutoProcessor. `save_pretrained` then copies the Croc modules next to the weights and writes
    `auto_map` (every Auto class, see `CrocPreTrainedMixin.save_pretrained`), so a saved folder also loads with
    `trust_remote_code=True` where this package is not installed. A processor of transformers' own (Qwen2.5-VL's)
    is not marked for remote code: a saved folder names it and transformers loads it natively."""
    AutoConfig.register(family.model_type, family.config, exist_ok=True)
    classes = {family.model.__name__: family.model, family.generation_model.__name__: family.generation_model}
    for auto_name, class_name in family.generation_model.croc_auto_classes.items():
        if hasattr(transformers, auto_name):
            getattr(transformers, auto_name).register(family.config, classes[class_name], exist_ok=True)
    AutoProcessor.register(family.config, family.processor, exist_ok=True)
    family.config.register_for_auto_class()
    family.model.register_for_auto_class("AutoModel")
    family.generation_model.register_for_auto_class("AutoModelForImageTextToText")
    if family.processor_is_croc:
        family.processor.register_for_auto_class("AutoProcessor")


for _family in FAMILIES:
    _register_family(_family)

__all__ = [
    "AUTO_MODEL_CLASSES",
    "ONEVISION_AUTO_MODEL_CLASSES",
    "CROC_PRESETS",
    "CROC_PRESET_NAMES",
    "FAMILIES",
    "CrocFamily",
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
    "CrocPaliGemmaCausalLMOutputWithPast",
    "CrocPaliGemmaConfig",
    "CrocPaliGemmaForConditionalGeneration",
    "CrocPaliGemmaModel",
    "CrocPaliGemmaPreTrainedModel",
    "CrocPaliGemmaProcessor",
    "CrocLlavaNextProcessor",
    "CrocInternVLProcessor",
    "CrocMistral3Processor",
    "CrocSmolVLMProcessor",
    "CrocOnevisionProcessor",
    "CrocForConditionalGeneration",
    "CrocModel",
    "CrocPreTrainedModel",
    "CrocProcessor",
    "CrocQwen2_5_VLCausalLMOutputWithPast",
    "CrocQwen2_5_VLConfig",
    "CrocQwen2_5_VLForConditionalGeneration",
    "CrocQwen2_5_VLModel",
    "CrocQwen2_5_VLPreTrainedModel",
    "CrocLlavaOnevision15CausalLMOutputWithPast",
    "CrocLlavaOnevision15Config",
    "CrocLlavaOnevision15ForConditionalGeneration",
    "CrocLlavaOnevision15Model",
    "CrocLlavaOnevision15PreTrainedModel",
    "CrocLlavaOnevision15Processor",
    "CrocQwen2VLCausalLMOutputWithPast",
    "CrocQwen2VLConfig",
    "CrocQwen2VLForConditionalGeneration",
    "CrocQwen2VLModel",
    "CrocQwen2VLPreTrainedModel",
    "CrocQwen2VLProcessor",
    "CrocLlavaNextCausalLMOutputWithPast",
    "CrocLlavaNextConfig",
    "CrocLlavaNextForConditionalGeneration",
    "CrocLlavaNextModel",
    "CrocLlavaNextPreTrainedModel",
    "CrocMistral3CausalLMOutputWithPast",
    "CrocMistral3Config",
    "CrocMistral3ForConditionalGeneration",
    "CrocMistral3Model",
    "CrocMistral3PreTrainedModel",
    "CrocQwen3VLCausalLMOutputWithPast",
    "CrocQwen3VLConfig",
    "CrocQwen3VLForConditionalGeneration",
    "CrocQwen3VLModel",
    "CrocQwen3VLPreTrainedModel",
    "CrocQwen3VLProcessor",
    "CrocQwen3VLMoeCausalLMOutputWithPast",
    "CrocQwen3VLMoeConfig",
    "CrocQwen3VLMoeForConditionalGeneration",
    "CrocQwen3VLMoeModel",
    "CrocQwen3VLMoePreTrainedModel",
    "CrocQwen3_5Config",
    "CrocQwen3_5ForConditionalGeneration",
    "CrocQwen3_5Model",
    "CrocQwen3_5PreTrainedModel",
    "CrocQwen3_5MoeConfig",
    "CrocQwen3_5MoeForConditionalGeneration",
    "CrocQwen3_5MoeModel",
    "CrocQwen3_5MoePreTrainedModel",
    "CrocGemma3CausalLMOutputWithPast",
    "CrocGemma3Config",
    "CrocGemma3ForConditionalGeneration",
    "CrocGemma3Model",
    "CrocGemma3PreTrainedModel",
    "CrocGemma3Processor",
    "CrocGemma4CausalLMOutputWithPast",
    "CrocGemma4Config",
    "CrocGemma4ForConditionalGeneration",
    "CrocGemma4Model",
    "CrocGemma4PreTrainedModel",
    "CrocGemma4Processor",
    "CrocGlm4vConfig",
    "CrocGlm4vForConditionalGeneration",
    "CrocGlm4vModel",
    "CrocGlm4vPreTrainedModel",
    "CrocGlm4vProcessor",
    "CrocGlm46VConfig",
    "CrocGlm46VForConditionalGeneration",
    "CrocGlm46VModel",
    "CrocGlm46VPreTrainedModel",
    "CrocGlm46VProcessor",
    "CrocInternVLCausalLMOutputWithPast",
    "CrocInternVLConfig",
    "CrocInternVLForConditionalGeneration",
    "CrocInternVLModel",
    "CrocInternVLPreTrainedModel",
    "CrocIdefics3CausalLMOutputWithPast",
    "CrocIdefics3Config",
    "CrocIdefics3ForConditionalGeneration",
    "CrocIdefics3Model",
    "CrocIdefics3PreTrainedModel",
    "CrocIdefics3Processor",
    "CrocLfm2VlCausalLMOutputWithPast",
    "CrocLfm2VlConfig",
    "CrocLfm2VlForConditionalGeneration",
    "CrocLfm2VlModel",
    "CrocLfm2VlPreTrainedModel",
    "CrocSmolVLMCausalLMOutputWithPast",
    "CrocSmolVLMConfig",
    "CrocSmolVLMForConditionalGeneration",
    "CrocSmolVLMModel",
    "CrocSmolVLMPreTrainedModel",
]
