"""Croc on Idefics3: `Idefics3ForConditionalGeneration` (Idefics3-8B-Llama3, and the first SmolVLM releases, whose
Hub folders are `idefics3` ones) with the stage-1.5 objectives.

Inference is exactly `Idefics3ForConditionalGeneration`. SmolVLM is built from Idefics3 (transformers'
`models/smolvlm/modular_smolvlm.py`): the same SigLIP tower on fixed-size views, pixel-shuffle connector, `text_model`,
per-row `get_image_features` and token layout (an image's tiles introduced by `<row_r_col_c>`, its global view by
`<global-img>`). What differs does not touch what the mechanism reads: Idefics3 scatters the visual tokens in
`inputs_merger` where SmolVLM has `get_placeholder_mask` (the mechanism replaces the embeddings itself), its
`get_image_features` keeps no empty view for a batch without images (the mechanism calls it only with images), and
its generation model leaves the text model's generation config alone. So the base and generation models declare what
SmolVLM's declare (`CrocSmolVLMModelMixin`, `CrocSmolVLMForConditionalGenerationMixin`); the outputs are Idefics3's
own with the Croc fields. The family's declaration is this file; the mechanism is `stage15.py`.
"""

from dataclasses import dataclass

from transformers import Idefics3ForConditionalGeneration, Idefics3Model
from transformers.models.idefics3.modeling_idefics3 import (
    Idefics3BaseModelOutputWithPast,
    Idefics3CausalLMOutputWithPast,
    Idefics3PreTrainedModel,
)

from .configuration_croc_idefics3 import CrocIdefics3Config
from .modeling_croc_smolvlm import CrocSmolVLMForConditionalGenerationMixin, CrocSmolVLMModelMixin
from .parent_wiring import croc_auto_classes_of, register_croc_checkpoint_renames
from .stage15 import CrocCausalLMOutputFields, CrocModelOutputFields, CrocPreTrainedMixin


@dataclass
class CrocIdefics3ModelOutputWithPast(CrocModelOutputFields, Idefics3BaseModelOutputWithPast):
    """`Idefics3BaseModelOutputWithPast` plus what the stage-1.5 losses need (`CrocModelOutputFields`)."""


@dataclass
class CrocIdefics3CausalLMOutputWithPast(CrocCausalLMOutputFields, Idefics3CausalLMOutputWithPast):
    """`Idefics3CausalLMOutputWithPast` plus the Croc loss terms and the pool assignment."""


class CrocIdefics3PreTrainedModel(CrocPreTrainedMixin, Idefics3PreTrainedModel):
    config: CrocIdefics3Config
    croc_auto_classes = croc_auto_classes_of("idefics3", {
        "Idefics3Model": "CrocIdefics3Model",
        "Idefics3ForConditionalGeneration": "CrocIdefics3ForConditionalGeneration"})


class CrocIdefics3Model(CrocSmolVLMModelMixin, CrocIdefics3PreTrainedModel, Idefics3Model):
    """`Idefics3Model` with the prompt pool and the stage-1.5 input path (`CrocModelMixin`), declared as SmolVLM's
    (`CrocSmolVLMModelMixin`: images split out of the rows' views)."""

    croc_output_class = CrocIdefics3ModelOutputWithPast


class CrocIdefics3ForConditionalGeneration(CrocSmolVLMForConditionalGenerationMixin, CrocIdefics3PreTrainedModel,
                                           Idefics3ForConditionalGeneration):
    """Croc on Idefics3 for generation and the three training stages. With `config.croc_pretraining` off (stages 1
    and 2, inference) this is `Idefics3ForConditionalGeneration`; in a stage-1.5 training forward the output also
    carries `lm_loss`, `vtr_loss` and `pool_ids`, every image counted with all its views' tokens."""

    croc_base_model_class = CrocIdefics3Model
    croc_output_class = CrocIdefics3CausalLMOutputWithPast


register_croc_checkpoint_renames(CrocIdefics3ForConditionalGeneration, Idefics3ForConditionalGeneration)
register_croc_checkpoint_renames(CrocIdefics3Model, Idefics3Model)


__all__ = [
    "CrocIdefics3CausalLMOutputWithPast",
    "CrocIdefics3ForConditionalGeneration",
    "CrocIdefics3Model",
    "CrocIdefics3PreTrainedModel",
]
