"""Croc on Qwen3.5: a `Qwen3_5Config` (Qwen3-VL's vision side without DeepStack, M-RoPE positions, a hybrid text
model of Gated DeltaNet and full-attention layers) with the Croc fields of `CrocFieldsMixin`; what it declares
beyond them is Qwen3-VL's (`CrocQwen3VLConfigMixin`)."""

from huggingface_hub.dataclasses import strict
from transformers import Qwen3_5Config
from transformers.utils import logging

from .configuration_croc import CrocConfigError, CrocFieldsMixin
from .configuration_croc_qwen3_vl import CrocQwen3VLConfigMixin

logger = logging.get_logger(__name__)


class CrocQwen3_5ConfigMixin(CrocQwen3VLConfigMixin):
    """What a Qwen3.5 Croc config declares beyond Qwen3-VL's, shared by the dense and the MoE families (the same
    hybrid text model): at least one full-attention layer, and no multi-token-prediction layers."""

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # Qwen3.5's checkpoints hold multi-token-prediction layers (`mtp.*` tensors, `mtp_num_hidden_layers` in the
        # text config) that transformers' class has no module for and skips on load without a word: a Croc model
        # never has them, so they are neither trained nor saved nor exported. The config says so rather than
        # claiming layers its folders (and a `to-plain` export, which a server reading MTP would trust) lack.
        layers = getattr(self.text_config, "mtp_num_hidden_layers", 0)
        if layers:
            logger.warning_once(
                f"{self.model_type}: the checkpoint's {layers} multi-token-prediction layer(s) (its mtp.* tensors) "
                "are not loaded: Croc trains, saves and exports the model without them (mtp_num_hidden_layers 0)")
            self.text_config.mtp_num_hidden_layers = 0

    def _check_croc_fields(self) -> None:
        super()._check_croc_fields()
        if "full_attention" not in self.text_config.layer_types:
            # With no full-attention layer the parent's own forward fails at inference (its cache holds no attention
            # layer to size the causal mask from: a ValueError traceback in evaluation and generation), and Croc's
            # bidirectional span would apply on no layer at all.
            raise CrocConfigError(
                f"{self.model_type}: text_config.layer_types has no 'full_attention' layer "
                f"({len(self.text_config.layer_types)} 'linear_attention' ones); Qwen3.5's parent cannot run "
                "inference without one, and Croc's bidirectional span applies on those layers only")


@strict
class CrocQwen3_5Config(CrocQwen3_5ConfigMixin, CrocFieldsMixin, Qwen3_5Config):
    r"""
    Configuration of a Croc model on `Qwen3_5ForConditionalGeneration` (Qwen3.5's image-text checkpoints): the
    Qwen3.5 fields plus the Croc fields of `CrocFieldsMixin`. Images and their merged-token counts are Qwen3-VL's
    (`CrocQwen3VLConfig`); there is no DeepStack. The text model's `text_config.layer_types` mixes
    `"linear_attention"` (Gated DeltaNet, a causal recurrence) and `"full_attention"` layers: Croc's bidirectional
    span applies on the full-attention layers only (`modeling_croc_qwen3_5.py`).
    """

    model_type = "croc_qwen3_5"


__all__ = ["CrocQwen3_5Config", "CrocQwen3_5ConfigMixin"]
