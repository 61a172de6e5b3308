"""Read separate checkpoints, a vision tower and a causal LM (e.g. `openai/clip-vit-large-patch14-336` +
`lmsys/vicuna-7b-v1.5`, or `google/siglip2-so400m-patch14-384` + `Qwen/Qwen2.5-7B-Instruct`), as one Croc model with a
fresh projector: the stage 0 that stage 1 starts from. Towers: CLIP, SigLIP and fixed-resolution SigLIP2 (full model
or vision-only folders); language models: any causal LM transformers' Llava takes (Llama, Mistral, Qwen2/3, Gemma 2/3
text, ...)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer

from ..configuration_croc import CrocConfig
from ..model_folders import reading_weights
from ..processing_croc import CrocProcessor
from .common import (
    add_llava_tokens,
    build_processor,
    fit_vocabulary,
    read_state_dict,
    read_vision_tower,
    tower_has_cls_token,
    vision_tower_config,
)

# Croc's in-memory prefix for each part of a `LlamaForCausalLM` checkpoint.
LM_PREFIXES = {"model.": "model.language_model.", "lm_head.": "lm_head."}


def read_parts(
    vision_tower: str | Path,
    language_model: str | Path,
    vocab_multiple: int = 64,
    image_aspect_ratio: str = "square",
    vision_feature_layer: int = -2,
    vision_feature_select_strategy: str | None = None,
    **croc_fields,
) -> tuple[CrocConfig, dict[str, torch.Tensor], CrocProcessor]:
    """(Croc config, state dict, processor) from a vision-tower folder and a causal-LM folder, with `<image>` (and
    `<pad>` where the tokenizer has none) appended to the vocabulary, padded to a multiple of `vocab_multiple` with
    mean rows (never shrunk: Qwen's embeddings already hold spare rows), and a fresh projector.

    Args:
        vision_feature_layer: the tower layer LLaVA reads (-2, the second-to-last, as LLaVA-1.5, LLaVA-OneVision and
            ViCToR do).
        vision_feature_select_strategy: "default" drops CLIP's class token, "full" keeps every token; None picks
            "default" for towers with a class token and "full" for SigLIP / SigLIP2 (patch tokens only).
    """
    vision_tower, language_model = Path(vision_tower), Path(language_model)
    tower_config = vision_tower_config(vision_tower)  # first: an unusable tower fails before anything else
    check_feature_layer(vision_tower, tower_config, vision_feature_layer)
    if vision_feature_select_strategy is None:
        vision_feature_select_strategy = "default" if tower_has_cls_token(tower_config) else "full"
    text_config = AutoConfig.from_pretrained(language_model)
    # The Croc fields next, from the configs alone: a value the towers cannot run with fails before any weight is read.
    CrocConfig(text_config=text_config.to_dict(), vision_config=tower_config.to_dict(),
               vision_feature_layer=vision_feature_layer, vision_feature_select_strategy=vision_feature_select_strategy,
               **croc_fields)
    with reading_weights(vision_tower):
        vision_config, state = read_vision_tower(vision_tower)
    tokenizer, image_token_id, pad_token_id = _parts_tokenizer(language_model)
    with reading_weights(language_model):
        language_state = read_state_dict(language_model)
    for name, tensor in language_state.items():
        for prefix, target in LM_PREFIXES.items():
            if name.startswith(prefix):
                state[target + name[len(prefix):]] = tensor
                break
    if "lm_head.weight" not in state:  # tied LMs store only the embedding
        state["lm_head.weight"] = state["model.language_model.embed_tokens.weight"]
    text_config.vocab_size = fit_vocabulary(state, len(tokenizer), vocab_multiple)
    text_config.pad_token_id = pad_token_id
    config = CrocConfig(
        text_config=text_config.to_dict(),
        vision_config=vision_config.to_dict(),
        image_token_index=image_token_id,
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=vision_feature_select_strategy,
        **croc_fields,
    )
    state.update(_fresh_projector_state(config, state["lm_head.weight"].dtype))
    processor = build_processor(tokenizer, vision_tower, config.vision_config, image_aspect_ratio,
                                vision_feature_select_strategy)
    return config, state, processor


def check_feature_layer(folder: str | Path, tower_config, vision_feature_layer: int | list[int]) -> None:
    """Refuse a `vision_feature_layer` the tower does not have: LLaVA indexes the tower's hidden states (the
    embeddings, then each of its n layers: n + 1 of them) with it, so -(n + 1)..n are valid (negative ones count
    from the end). Another wrote a folder whose every image raised IndexError, at inference."""
    count = tower_config.num_hidden_layers
    for layer in vision_feature_layer if isinstance(vision_feature_layer, list) else [vision_feature_layer]:
        if not -(count + 1) <= layer <= count:
            raise ValueError(f"vision feature layer {layer} is not in the tower {folder}: its {count} layer(s) give "
                             f"{count + 1} hidden states, indexed {-(count + 1)}..{count} (the default -2 is the "
                             "second to last)")


def _parts_tokenizer(language_model: Path):
    """The LM's tokenizer with `<image>` (and `<pad>`) appended; returns (tokenizer, image token id, pad token id)."""
    tokenizer = AutoTokenizer.from_pretrained(language_model)
    image_token_id, pad_token_id = add_llava_tokens(tokenizer)
    return tokenizer, image_token_id, pad_token_id


def parts_processor(
    vision_tower: str | Path,
    language_model: str | Path,
    image_aspect_ratio: str = "square",
    vision_feature_select_strategy: str | None = None,
) -> CrocProcessor:
    """The processor `read_parts` builds, from the parts' configs and tokenizer alone (no weights read): what a run
    needs to tokenise and check its rows before the model loads."""
    vision_tower, language_model = Path(vision_tower), Path(language_model)
    tower_config = vision_tower_config(vision_tower)
    if vision_feature_select_strategy is None:
        vision_feature_select_strategy = "default" if tower_has_cls_token(tower_config) else "full"
    tokenizer, _, _ = _parts_tokenizer(language_model)
    return build_processor(tokenizer, vision_tower, tower_config, image_aspect_ratio, vision_feature_select_strategy)


def stage0_card(vision_tower: str | Path, language_model: str | Path, base_models: list[str] | None = None):
    """The card of a stage-0 folder: the Hub ids it is built from (`base_models`, or the parts' own names when they
    are Hub ids) and the licence of every part whose card states one, which stage 1 and the stages after inherit
    (`modeling_croc.provenance`)."""
    from huggingface_hub import ModelCard, ModelCardData

    from ..provenance import STAGE0_TAG, Provenance, is_hub_id

    parts = [Provenance.of_model_folder(part, hub_id=str(part) if is_hub_id(str(part)) else None)
             for part in (language_model, vision_tower)]
    provenance = Provenance().merged(*parts)
    if base_models:
        provenance.base_models = list(base_models)
    data = ModelCardData(**provenance.license_metadata(), library_name="transformers",
                         pipeline_tag="image-text-to-text", base_model=provenance.base_models or None,
                         tags=["croc", "llava", STAGE0_TAG], croc_licenses=provenance.licenses or None)
    body = (f"# Croc stage 0\n\nUntrained projector on {Path(language_model).name} + {Path(vision_tower).name} "
            "(`python -m modeling_croc.convert from-parts`): the starting point of Croc stage 1. Licences of the parts: "
            + (", ".join(f"`{name}`" for name in provenance.licenses) or "none stated in their cards") + ".\n")
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _fresh_projector_state(config: CrocConfig, dtype) -> dict:
    """A randomly initialised LLaVA projector (only it is built for real; the rest stays on the meta device)."""
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    projector = LlavaMultiModalProjector(config).to(dtype)
    return {f"model.multi_modal_projector.{k}": v for k, v in projector.state_dict().items()}
