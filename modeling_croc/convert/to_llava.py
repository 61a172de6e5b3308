"""Export a Croc checkpoint as the plain transformers model it extends (no pool, no VTR head): a `llava` folder for
`CrocForConditionalGeneration`, a `llava_onevision` folder for `CrocOnevisionForConditionalGeneration`.

lmms-eval's `llava_hf` / `llava_onevision`, vLLM and other consumers then load it with the plain class, which gives
the same logits as Croc's inference path.
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    PreTrainedConfig,
    PreTrainedModel,
)

from ..configuration_croc import CROC_FIELD_NAMES, CrocConfig
from ..configuration_croc_onevision import CrocOnevisionConfig
from ..constants import CROC_ONLY_PREFIXES

# Croc config class -> the plain config and model classes it extends.
PLAIN_COUNTERPARTS: dict[type, tuple[type[PreTrainedConfig], type[PreTrainedModel]]] = {
    CrocConfig: (LlavaConfig, LlavaForConditionalGeneration),
    CrocOnevisionConfig: (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration),
}
# Entries of a saved Croc config that describe the Croc class rather than the architecture.
_CLASS_ENTRIES = ("model_type", "auto_map", "architectures")


def croc_config_to_llava(config: CrocConfig | CrocOnevisionConfig) -> LlavaConfig | LlavaOnevisionConfig:
    """The plain config describing the same architecture (every field but the Croc ones). Refuses configs the plain
    model cannot reproduce."""
    if config.normalize_visual_tokens:
        raise ValueError(
            "This Croc model L2-normalises its visual tokens (normalize_visual_tokens=True: the `official` and "
            "`victor` presets, as the released Croc and ViCToR code); the plain llava / llava_onevision model has no "
            "such step, so an exported folder would give different logits. Export is only possible for models with "
            "normalize_visual_tokens=False."
        )
    plain_config_class, _ = PLAIN_COUNTERPARTS[type(config)]
    data = {name: value for name, value in config.to_dict().items()
            if name not in CROC_FIELD_NAMES and name not in _CLASS_ENTRIES}
    return plain_config_class.from_dict(data)


def croc_to_llava(model) -> LlavaForConditionalGeneration | LlavaOnevisionForConditionalGeneration:
    """The plain model holding `model`'s weights (the Croc-only parameters are dropped)."""
    plain_config = croc_config_to_llava(model.config)
    plain_config._attn_implementation = model.config._attn_implementation
    _, plain_model_class = PLAIN_COUNTERPARTS[type(model.config)]
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(CROC_ONLY_PREFIXES)}
    # from_pretrained's own loading path: no random copy of the whole model is built first.
    plain, info = plain_model_class.from_pretrained(None, config=plain_config, state_dict=state, dtype=model.dtype,
                                                    output_loading_info=True)
    gaps = {kind: sorted(info[kind])[:8] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
            if info[kind]}
    if gaps:
        raise ValueError(f"the plain model does not hold exactly the Croc model's weights: {gaps}")
    return plain.eval()


def export_llava_folder(croc_dir: str | Path, out_dir: str | Path) -> Path:
    """Load a Croc folder and write the equivalent plain folder (weights, config, processor files) to `out_dir`."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaProcessor

    from ..processing_croc import CrocProcessor

    model = AutoModelForImageTextToText.from_pretrained(croc_dir)
    plain = croc_to_llava(model)
    out_dir = Path(out_dir)
    plain.save_pretrained(out_dir)
    try:
        processor = AutoProcessor.from_pretrained(croc_dir)
    except (OSError, ValueError):
        processor = None  # a weights-only folder: nothing to carry over
    if isinstance(processor, CrocProcessor):
        LlavaProcessor(
            image_processor=processor.image_processor,
            tokenizer=processor.tokenizer,
            patch_size=processor.patch_size,
            vision_feature_select_strategy=processor.vision_feature_select_strategy,
            chat_template=processor.chat_template,
            num_additional_image_tokens=processor.num_additional_image_tokens,
        ).save_pretrained(out_dir)
    elif processor is not None:  # OneVision's own processor already is the plain one
        processor.save_pretrained(out_dir)
    return out_dir
