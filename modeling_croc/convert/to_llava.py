"""Export a Croc checkpoint as a plain transformers `llava` folder (no pool, no VTR head).

lmms-eval's `llava_hf`, vLLM and other llava consumers then load it with `LlavaForConditionalGeneration`, which gives
the same logits as Croc's inference path.
"""

from __future__ import annotations

from pathlib import Path

from transformers import LlavaConfig, LlavaForConditionalGeneration

from ..configuration_croc import CrocConfig
from ..constants import CROC_ONLY_PREFIXES


def croc_config_to_llava(config: CrocConfig) -> LlavaConfig:
    """The `LlavaConfig` describing the same architecture. Refuses configs Llava cannot reproduce."""
    if config.normalize_visual_tokens:
        raise ValueError(
            "This Croc model L2-normalises its visual tokens (normalize_visual_tokens=True, the `official` preset); "
            "LlavaForConditionalGeneration has no such step, so an exported llava folder would give different "
            "logits. Export is only possible for models with normalize_visual_tokens=False."
        )
    return LlavaConfig(
        vision_config=config.vision_config.to_dict(),
        text_config=config.text_config.to_dict(),
        image_token_index=config.image_token_id,
        image_seq_length=config.image_seq_length,
        projector_hidden_act=config.projector_hidden_act,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        vision_feature_layer=config.vision_feature_layer,
        multimodal_projector_bias=config.multimodal_projector_bias,
        tie_word_embeddings=config.tie_word_embeddings,
    )


def croc_to_llava(model) -> LlavaForConditionalGeneration:
    """A `LlavaForConditionalGeneration` holding `model`'s weights (the Croc-only parameters are dropped)."""
    llava_config = croc_config_to_llava(model.config)
    llava_config._attn_implementation = model.config._attn_implementation
    llava = LlavaForConditionalGeneration(llava_config).to(model.dtype)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(CROC_ONLY_PREFIXES)}
    llava.load_state_dict(state, strict=True)
    return llava.eval()


def export_llava_folder(croc_dir: str | Path, out_dir: str | Path) -> Path:
    """Load a Croc folder and write the equivalent llava folder (weights, config, processor files) to `out_dir`."""
    from transformers import AutoProcessor

    from ..modeling_croc import CrocForConditionalGeneration

    model = CrocForConditionalGeneration.from_pretrained(croc_dir)
    llava = croc_to_llava(model)
    out_dir = Path(out_dir)
    llava.save_pretrained(out_dir)
    try:
        processor = AutoProcessor.from_pretrained(croc_dir)
    except (OSError, ValueError):
        processor = None  # a weights-only folder: nothing to carry over
    if processor is not None:
        from transformers import LlavaProcessor

        LlavaProcessor(
            image_processor=processor.image_processor,
            tokenizer=processor.tokenizer,
            patch_size=processor.patch_size,
            vision_feature_select_strategy=processor.vision_feature_select_strategy,
            chat_template=processor.chat_template,
            num_additional_image_tokens=processor.num_additional_image_tokens,
        ).save_pretrained(out_dir)
    return out_dir
