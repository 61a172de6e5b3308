"""Croc on GLM-4.6V: `Glm46VForConditionalGeneration` with its dense text model (GLM-4.6V-Flash) and the stage-1.5
objectives.

Inference is exactly `Glm46VForConditionalGeneration`. transformers writes GLM-4.6V as GLM-4.1V under another config:
`Glm46VModel` is a `Glm4vModel` that builds its vision tower and text model from their sub-configs' `model_type`
(GLM-4.1V's `Glm4vVisionModel` and, for the dense text config this family takes, `Glm4vTextModel`), and
`Glm46VForConditionalGeneration` is a `Glm4vForConditionalGeneration`. So the base and generation models declare
what GLM-4.1V's declare (`CrocGlm4vModelMixin`, Qwen2.5-VL's generation mixin; `modeling_croc_glm4v.py`), and tests
compare it with `Glm46VForConditionalGeneration` itself. The family's declaration is this file; the mechanism is
`stage15.py`.
"""

from transformers import Glm46VForConditionalGeneration, Glm46VModel
from transformers.models.glm46v.modeling_glm46v import Glm46VPreTrainedModel

from .configuration_croc_glm46v import CrocGlm46VConfig
from .modeling_croc_glm4v import CrocGlm4vModelMixin
from .modeling_croc_qwen2_5_vl import CrocQwen2_5_VLForConditionalGenerationMixin
from .parent_wiring import croc_auto_classes_of, register_croc_checkpoint_renames
from .stage15 import CrocPreTrainedMixin


class CrocGlm46VPreTrainedModel(CrocPreTrainedMixin, Glm46VPreTrainedModel):
    config: CrocGlm46VConfig
    croc_auto_classes = croc_auto_classes_of("glm46v", {
        "Glm46VModel": "CrocGlm46VModel",
        "Glm46VForConditionalGeneration": "CrocGlm46VForConditionalGeneration"})


class CrocGlm46VModel(CrocGlm4vModelMixin, CrocGlm46VPreTrainedModel, Glm46VModel):
    """`Glm46VModel` with the prompt pool and the stage-1.5 input path (`CrocModelMixin`), declared as GLM-4.1V's
    (`CrocGlm4vModelMixin`)."""


class CrocGlm46VForConditionalGeneration(CrocQwen2_5_VLForConditionalGenerationMixin, CrocGlm46VPreTrainedModel,
                                         Glm46VForConditionalGeneration):
    """Croc on GLM-4.6V for generation and the three training stages: `Glm46VForConditionalGeneration` with
    `config.croc_pretraining` off; in a stage-1.5 training forward the output also carries `lm_loss`, `vtr_loss` and
    `pool_ids`, every image counted with its own merged tokens, as GLM-4.1V's."""

    croc_base_model_class = CrocGlm46VModel


register_croc_checkpoint_renames(CrocGlm46VForConditionalGeneration, Glm46VForConditionalGeneration)
register_croc_checkpoint_renames(CrocGlm46VModel, Glm46VModel)


__all__ = ["CrocGlm46VForConditionalGeneration", "CrocGlm46VModel", "CrocGlm46VPreTrainedModel"]
