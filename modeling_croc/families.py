"""The transformers families Croc runs on: one entry each, the one table every part of the package reads (the Auto
registration, loading a folder by its `model_type`, conversion from and export to a plain parent folder).

Adding a family is a config class (`CrocFieldsMixin` + the parent's config), a modelling file declaring the
family's classes on the shared mechanism (`stage15.py`), and an entry here.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path

from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma4Config,
    Gemma4ForConditionalGeneration,
    Glm4vConfig,
    Glm4vForConditionalGeneration,
    Glm46VConfig,
    Glm46VForConditionalGeneration,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    InternVLConfig,
    InternVLForConditionalGeneration,
    Lfm2VlConfig,
    Lfm2VlForConditionalGeneration,
    Lfm2VlProcessor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaOnevision15Config,
    LlavaOnevision15ForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Mistral3Config,
    Mistral3ForConditionalGeneration,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PreTrainedConfig,
    PreTrainedModel,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen3_5Config,
    Qwen3_5ForConditionalGeneration,
    Qwen3_5MoeConfig,
    Qwen3_5MoeForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMoeConfig,
    Qwen3VLMoeForConditionalGeneration,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
)

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
from .modeling_croc import CrocForConditionalGeneration, CrocModel
from .modeling_croc_gemma3 import CrocGemma3ForConditionalGeneration, CrocGemma3Model
from .modeling_croc_gemma4 import CrocGemma4ForConditionalGeneration, CrocGemma4Model
from .modeling_croc_glm4v import CrocGlm4vForConditionalGeneration, CrocGlm4vModel
from .modeling_croc_glm46v import CrocGlm46VForConditionalGeneration, CrocGlm46VModel
from .modeling_croc_idefics3 import CrocIdefics3ForConditionalGeneration, CrocIdefics3Model
from .modeling_croc_internvl import CrocInternVLForConditionalGeneration, CrocInternVLModel
from .modeling_croc_lfm2_vl import CrocLfm2VlForConditionalGeneration, CrocLfm2VlModel
from .modeling_croc_llava_next import CrocLlavaNextForConditionalGeneration, CrocLlavaNextModel
from .modeling_croc_llava_onevision1_5 import (
    CrocLlavaOnevision15ForConditionalGeneration,
    CrocLlavaOnevision15Model,
)
from .modeling_croc_mistral3 import CrocMistral3ForConditionalGeneration, CrocMistral3Model
from .modeling_croc_onevision import CrocOnevisionForConditionalGeneration, CrocOnevisionModel
from .modeling_croc_paligemma import CrocPaliGemmaForConditionalGeneration, CrocPaliGemmaModel
from .modeling_croc_qwen2_5_vl import CrocQwen2_5_VLForConditionalGeneration, CrocQwen2_5_VLModel
from .modeling_croc_qwen2_vl import CrocQwen2VLForConditionalGeneration, CrocQwen2VLModel
from .modeling_croc_qwen3_5 import CrocQwen3_5ForConditionalGeneration, CrocQwen3_5Model
from .modeling_croc_qwen3_5_moe import CrocQwen3_5MoeForConditionalGeneration, CrocQwen3_5MoeModel
from .modeling_croc_qwen3_vl import CrocQwen3VLForConditionalGeneration, CrocQwen3VLModel
from .modeling_croc_qwen3_vl_moe import CrocQwen3VLMoeForConditionalGeneration, CrocQwen3VLMoeModel
from .modeling_croc_smolvlm import CrocSmolVLMForConditionalGeneration, CrocSmolVLMModel
from .processing_croc import CrocProcessor
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
from .processing_croc_qwen2_5_vl import CrocQwen2_5_VLProcessor
from .processing_croc_qwen2_vl import CrocQwen2VLProcessor
from .processing_croc_qwen3_vl import CrocQwen3VLProcessor
from .processing_croc_smolvlm import CrocSmolVLMProcessor


@dataclass(frozen=True)
class CrocFamily:
    """One parent family and its Croc classes.

    Attributes:
        config: the Croc config class (its `model_type` names a saved Croc folder of the family).
        model: the Croc base model class (`AutoModel`).
        generation_model: the Croc generation class (`AutoModelForImageTextToText` and the parent's other Auto
            classes).
        processor: the processor a Croc folder of the family saves and loads.
        processor_is_croc: whether `processor` is this package's class (copied into a saved folder for
            `trust_remote_code`) or transformers' own (named in the folder, loaded natively).
        plain_config, plain_model: the parent's config and generation classes (conversion and export).
        template: the conversation template (`conversation.TEMPLATES`) of the family's own chat format, which the
            trainer's chat stages (1.5 and 2) use unless a run names one; None: the stage's (LLaVA's formats).
        trainer_data: whether the trainer's data path (the family's processor, chat format and batch layout) is
            built for the family; where it is not, a run is refused in one line before anything loads.
    """

    config: type[PreTrainedConfig]
    model: type[PreTrainedModel]
    generation_model: type[PreTrainedModel]
    processor: type
    processor_is_croc: bool
    plain_config: type[PreTrainedConfig]
    plain_model: type[PreTrainedModel]
    template: str | None = None
    trainer_data: bool = True

    @property
    def model_type(self) -> str:
        return self.config.model_type

    @property
    def plain_model_type(self) -> str:
        return self.plain_config.model_type


FAMILIES: tuple[CrocFamily, ...] = (
    CrocFamily(CrocConfig, CrocModel, CrocForConditionalGeneration, CrocProcessor, True,
               LlavaConfig, LlavaForConditionalGeneration),
    CrocFamily(CrocOnevisionConfig, CrocOnevisionModel, CrocOnevisionForConditionalGeneration, CrocOnevisionProcessor,
               True, LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration),
    CrocFamily(CrocQwen2_5_VLConfig, CrocQwen2_5_VLModel, CrocQwen2_5_VLForConditionalGeneration,
               CrocQwen2_5_VLProcessor, True, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
               template="qwen2_vl"),
    # Qwen2.5-VL's declarations (shared mixins) on Qwen2-VL's vision tower; its chat format, whose default system
    # message Qwen2-VL's Instruct checkpoints' chat template has too, is the one the template is named after.
    CrocFamily(CrocQwen2VLConfig, CrocQwen2VLModel, CrocQwen2VLForConditionalGeneration, CrocQwen2VLProcessor, True,
               Qwen2VLConfig, Qwen2VLForConditionalGeneration, template="qwen2_vl"),
    # Qwen2.5-VL's declarations (shared mixins) on LLaVA-OneVision-1.5's RICE-ViT tower and Qwen3 text model, with 1D
    # positions; its processor is transformers' `Exaone4_5_Processor` without videos. Chat format: Qwen2-VL's ChatML
    # with the default system message, which its Instruct checkpoints are said to share (not read here: no network).
    CrocFamily(CrocLlavaOnevision15Config, CrocLlavaOnevision15Model, CrocLlavaOnevision15ForConditionalGeneration,
               CrocLlavaOnevision15Processor, True, LlavaOnevision15Config, LlavaOnevision15ForConditionalGeneration,
               template="qwen2_vl"),
    # No template of its own: LLaVA-NeXT checkpoints chat in their language model's format (v1.6-vicuna: the
    # stage's vicuna_v1; v1.6-mistral's [INST] format has no template in `conversation.TEMPLATES` yet).
    CrocFamily(CrocLlavaNextConfig, CrocLlavaNextModel, CrocLlavaNextForConditionalGeneration,
               CrocLlavaNextProcessor, True, LlavaNextConfig, LlavaNextForConditionalGeneration),
    CrocFamily(CrocMistral3Config, CrocMistral3Model, CrocMistral3ForConditionalGeneration, CrocMistral3Processor,
               True, Mistral3Config, Mistral3ForConditionalGeneration, template="mistral3"),
    CrocFamily(CrocQwen3VLConfig, CrocQwen3VLModel, CrocQwen3VLForConditionalGeneration, CrocQwen3VLProcessor,
               True, Qwen3VLConfig, Qwen3VLForConditionalGeneration, template="qwen3_vl"),
    # Qwen3-VL's processor and chat format (Qwen3-VL-30B-A3B's Hub folder names `Qwen3VLProcessor`).
    CrocFamily(CrocQwen3VLMoeConfig, CrocQwen3VLMoeModel, CrocQwen3VLMoeForConditionalGeneration,
               CrocQwen3VLProcessor, True, Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration, template="qwen3_vl"),
    # Qwen3-VL's processor (transformers maps Qwen3.5 to `Qwen3VLProcessor`) and Qwen3.5's own chat format (its
    # checkpoints' empty thinking block before the last answer and in the generation prompt).
    CrocFamily(CrocQwen3_5Config, CrocQwen3_5Model, CrocQwen3_5ForConditionalGeneration, CrocQwen3VLProcessor, True,
               Qwen3_5Config, Qwen3_5ForConditionalGeneration, template="qwen3_5"),
    # Qwen3.5's processor and chat format (Qwen3.5-35B-A3B's Hub folder names `Qwen3VLProcessor`).
    CrocFamily(CrocQwen3_5MoeConfig, CrocQwen3_5MoeModel, CrocQwen3_5MoeForConditionalGeneration,
               CrocQwen3VLProcessor, True, Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration, template="qwen3_5"),
    # Qwen2.5-VL's declarations (shared mixins) on GLM-4.1V's own vision tower and text model; its processor without
    # the video part, and its chat format (`[gMASK]<sop>`, `<|user|>` / `<|assistant|>` turns, each image as
    # `<|begin_of_image|><|image|><|end_of_image|>`).
    CrocFamily(CrocGlm4vConfig, CrocGlm4vModel, CrocGlm4vForConditionalGeneration, CrocGlm4vProcessor, True,
               Glm4vConfig, Glm4vForConditionalGeneration, template="glm4v"),
    # GLM-4.1V's declarations and chat format on GLM-4.6V's config (its dense text model only) and processor.
    CrocFamily(CrocGlm46VConfig, CrocGlm46VModel, CrocGlm46VForConditionalGeneration, CrocGlm46VProcessor, True,
               Glm46VConfig, Glm46VForConditionalGeneration, template="glm4v"),
    CrocFamily(CrocGemma3Config, CrocGemma3Model, CrocGemma3ForConditionalGeneration, CrocGemma3Processor, True,
               Gemma3Config, Gemma3ForConditionalGeneration, template="gemma3"),
    # Gemma 4's processor for images and text (its video processor and audio feature extractor left out) and its
    # chat format; a batch carries each image's patch positions (`image_position_ids`) and `mm_token_type_ids`.
    CrocFamily(CrocGemma4Config, CrocGemma4Model, CrocGemma4ForConditionalGeneration, CrocGemma4Processor, True,
               Gemma4Config, Gemma4ForConditionalGeneration, template="gemma4"),
    # PaliGemma 1 and 2 (Gemma or Gemma 2 text model, one entry): its processor with the fixed image token count, its
    # prefix -> suffix format (`paligemma`: `<bos>` after the image) and `token_type_ids` marking the suffix.
    CrocFamily(CrocPaliGemmaConfig, CrocPaliGemmaModel, CrocPaliGemmaForConditionalGeneration, CrocPaliGemmaProcessor,
               True, PaliGemmaConfig, PaliGemmaForConditionalGeneration, template="paligemma"),
    CrocFamily(CrocInternVLConfig, CrocInternVLModel, CrocInternVLForConditionalGeneration, CrocInternVLProcessor,
               True, InternVLConfig, InternVLForConditionalGeneration, template="internvl"),
    CrocFamily(CrocSmolVLMConfig, CrocSmolVLMModel, CrocSmolVLMForConditionalGeneration, CrocSmolVLMProcessor,
               True, SmolVLMConfig, SmolVLMForConditionalGeneration, template="smolvlm"),
    # SmolVLM's declarations (shared mixins) on Idefics3's classes, its own processor and chat format (its
    # Idefics3-8B-Llama3 checkpoint's: SmolVLM's with `<|begin_of_text|>` opening the conversation). The first SmolVLM
    # releases' Hub folders are `idefics3` ones and load here too; their chat template is SmolVLM's (a run on them
    # names `template: smolvlm`).
    CrocFamily(CrocIdefics3Config, CrocIdefics3Model, CrocIdefics3ForConditionalGeneration, CrocIdefics3Processor,
               True, Idefics3Config, Idefics3ForConditionalGeneration, template="idefics3"),
    # transformers' own processor (its image processor needs torchvision, which this project runs without: the
    # trainer's data path is not built, a run is refused in one line); the model classes, conversion and export work.
    # Its checkpoints' chat format (ChatML after `<|startoftext|>`, no default system message) is not a template here
    # yet: nothing trains it (docs/MODELS.md).
    CrocFamily(CrocLfm2VlConfig, CrocLfm2VlModel, CrocLfm2VlForConditionalGeneration, Lfm2VlProcessor, False,
               Lfm2VlConfig, Lfm2VlForConditionalGeneration, trainer_data=False),
)

# The family of a saved Croc folder's `model_type`, and of a plain parent folder's.
FAMILY_OF_CROC_MODEL_TYPE: dict[str, CrocFamily] = {family.model_type: family for family in FAMILIES}
FAMILY_OF_PLAIN_MODEL_TYPE: dict[str, CrocFamily] = {family.plain_model_type: family for family in FAMILIES}
# The family of a Croc config class.
FAMILY_OF_CONFIG: dict[type, CrocFamily] = {family.config: family for family in FAMILIES}


@functools.cache
def remote_code_files() -> frozenset[str]:
    """The names of the code files a save of any family's classes writes next to its weights: each registered
    class's module and the modules it imports relatively (transformers' `custom_object_save` copies them for
    `trust_remote_code`). A folder a run saves into gets them at its top level, over same-named files already
    there."""
    from transformers.dynamic_module_utils import get_relative_import_files

    names = set()
    for family in FAMILIES:
        classes = [family.config, family.model, family.generation_model]
        for cls in classes + ([family.processor] if family.processor_is_croc else []):
            module_file = inspect.getfile(cls)
            names |= {Path(module_file).name, *(Path(name).name for name in get_relative_import_files(module_file))}
    return frozenset(names)


__all__ = ["FAMILIES", "FAMILY_OF_CONFIG", "FAMILY_OF_CROC_MODEL_TYPE", "FAMILY_OF_PLAIN_MODEL_TYPE", "CrocFamily",
           "remote_code_files"]
