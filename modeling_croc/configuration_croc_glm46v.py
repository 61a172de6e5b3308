"""Croc on GLM-4.6V: a `Glm46VConfig` (GLM-4.1V's vision tower and text model under another config class, whose
sub-configs are read by their own `model_type`) with the Croc fields of `CrocFieldsMixin`; what it declares beyond
them is Qwen2.5-VL's (`CrocQwen2_5_VLConfigMixin`), as GLM-4.1V's does. Only the dense text model (`glm4v_text`, as
GLM-4.6V-Flash's) is a Croc model here: `Glm46VModel` builds whatever its text config names, and a mixture-of-experts
one (`glm4v_moe_text`) has a router loss no test here covers, so it is refused in one line."""

from huggingface_hub.dataclasses import strict
from transformers import Glm46VConfig

from .configuration_croc import CrocConfigError, CrocFieldsMixin
from .configuration_croc_qwen2_5_vl import CrocQwen2_5_VLConfigMixin

# The text model a Croc GLM-4.6V config takes: GLM-4.1V's dense one, the model the family's tests compare.
GLM46V_TEXT_MODEL_TYPE = "glm4v_text"


@strict
class CrocGlm46VConfig(CrocQwen2_5_VLConfigMixin, CrocFieldsMixin, Glm46VConfig):
    r"""
    Configuration of a Croc model on `Glm46VForConditionalGeneration` (GLM-4.6V with a dense text model, as
    GLM-4.6V-Flash): the GLM-4.6V fields (GLM-4.1V's vision and text sub-configs, the `<|image|>` token and its
    wrapper) plus the Croc fields of `CrocFieldsMixin`. Images are counted as GLM-4.1V's (`CrocGlm4vConfig`).
    """

    model_type = "croc_glm46v"

    def _check_croc_fields(self) -> None:
        super()._check_croc_fields()
        if self.text_config.model_type != GLM46V_TEXT_MODEL_TYPE:
            raise CrocConfigError(
                f"Croc takes GLM-4.6V with its dense text model ({GLM46V_TEXT_MODEL_TYPE!r}, as GLM-4.6V-Flash); this "
                f"config's text model is {self.text_config.model_type!r}, whose router loss Croc does not cover")


__all__ = ["GLM46V_TEXT_MODEL_TYPE", "CrocGlm46VConfig"]
