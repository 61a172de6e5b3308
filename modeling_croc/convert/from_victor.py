"""Read a released ViCToR checkpoint (github.com/deepglint/Victor, its LLaVA-NeXT fork: `model_type` `llava_qwen`) as
a Croc config, state dict and processor; `modeling_croc.conversion.convert_original_checkpoint` (any released fork layout) writes it as a Croc
folder.

Source layout (`llava/model/language_model/llava_qwen.py`, `llava/model/llava_arch.py` of the fork): a Qwen2 causal
LM (`model.embed_tokens`, `model.layers.*`, `model.norm`, `lm_head`), the projector `model.mm_projector.{0,2}`
(`mlp2x_gelu`), the SigLIP tower `model.vision_tower.vision_tower.vision_model.*` with its top encoder layer deleted
and no head (`siglip_encoder.py` L570-571: the features are that truncated tower's last hidden states), the pool
`model.token_pool`, an unused `model.pool_weight` (dropped), the VTR head `img_head` (one linear layer), and for
AnyRes configurations `model.image_newline`. The fork splices features in at a sentinel id, so `<image>` is appended
to the tokenizer; Qwen's embedding has spare rows, so the vocabulary only grows if it must.

Architecture, from the fork's own config: `image_aspect_ratio` `anyres_max_N` with a `spatial..unpad` merge (the
LLaVA-OneVision layout) becomes `CrocOnevisionForConditionalGeneration`; `pad` / `square` with the `flat` merge (what
ViCToR's released scripts train with: one 729-token view per image, no newline) is LLaVA-1.5's layout and becomes
`CrocForConditionalGeneration`, since OneVision would add a base view and a newline token the fork never computes.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlavaOnevisionImageProcessorPil, Qwen2Config

from ..configuration_croc import CrocConfig
from ..configuration_croc_onevision import CrocOnevisionConfig
from ..constants import PROMPT_POOL_PREFIX
from ..conversation import get_template
from ..presets import preset_for_released_model_type
from ..processing_croc_onevision import CrocOnevisionProcessor
from .common import (
    LLAVA_FORK_RENAMES,
    add_llava_tokens,
    build_processor,
    fit_vocabulary,
    read_json,
    read_state_dict,
    read_vision_tower,
    renamed,
    text_config_fields,
    vision_tower_config,
)

logger = logging.getLogger(__name__)

# (source regex, target) renames from the fork's parameter names to Croc's in-memory names.
VICTOR_RENAMES: list[tuple[str, str]] = [
    *LLAVA_FORK_RENAMES,
    (r"^model\.token_pool$", "model.prompt_pool.weight"),
    (r"^img_head\.", "vtr_head.proj."),
]
# Saved by the fork but used by no forward: the pool's linear layer (only given a learning rate, llava_trainer.py
# L412) and rotary caches.
DROPPED = re.compile(r"^model\.pool_weight\.|rotary_emb\.inv_freq$")
TOWER_LAYER = re.compile(r"^model\.vision_tower\.encoder\.layers\.(\d+)\.")
# The chat format of ViCToR's stages 1.5 and 2 (`--version qwen_1_5`; train.py `preprocess_qwen`).
VICTOR_TEMPLATE = "qwen_1_5"


def rename_victor_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fork's tensors under Croc's names, without the unused ones."""
    kept = {renamed(name, VICTOR_RENAMES): tensor for name, tensor in state.items() if not DROPPED.search(name)}
    if len(kept) < len(state):
        logger.info("dropped %d unused tensors (pool_weight, rotary caches)", len(state) - len(kept))
    return kept


def _truncated_tower(state: dict[str, torch.Tensor], vision_folder: Path):
    """The vision config of the fork's tower (top layer deleted, no head) and its weights: the checkpoint's own when
    it saved them (ViCToR trains the tower), else the tower folder's minus its top layer."""
    config = vision_tower_config(vision_folder)
    layers = {int(match.group(1)) for name in state if (match := TOWER_LAYER.match(name))}
    if not layers:
        config, tower_state = read_vision_tower(vision_folder)
        kept = config.num_hidden_layers - 1
        state.update({name: tensor for name, tensor in tower_state.items()
                      if not name.startswith("model.vision_tower.head.") and not _layer_at_least(name, kept)})
        layers = set(range(kept))
    config.num_hidden_layers = len(layers)
    config.vision_use_head = False
    return config


def _layer_at_least(name: str, index: int) -> bool:
    match = TOWER_LAYER.match(name)
    return bool(match) and int(match.group(1)) >= index


def _is_anyres(original: dict) -> bool:
    aspect = str(original.get("image_aspect_ratio", "pad"))
    merge = str(original.get("mm_patch_merge_type", "flat"))
    if not aspect.startswith("anyres"):
        return False
    if not re.fullmatch(r"anyres_max_\d+", aspect) or "unpad" not in merge:
        raise ValueError(
            f"image_aspect_ratio={aspect!r} with mm_patch_merge_type={merge!r}: only the OneVision layout "
            "(anyres_max_N with a spatial_unpad merge) and the single-view layout (pad / square, flat) convert"
        )
    return True


def read_victor_checkpoint(
    source: str | Path,
    vision_tower: str | Path | None = None,
    vocab_multiple: int = 64,
    **croc_fields,
) -> tuple[CrocConfig | CrocOnevisionConfig, dict[str, torch.Tensor], object]:
    """`source` (ViCToR's fork layout, with its tokenizer files) as (Croc config, state dict under Croc's names,
    processor).

    Args:
        vision_tower: local folder of the SigLIP tower (e.g. a download of `google/siglip2-so400m-patch14-384`) for
            its config and image preprocessing; defaults to the checkpoint's `mm_vision_tower` when that is a folder.
        vocab_multiple: pad the vocabulary grown by `<image>` to a multiple of this with mean rows, if it must grow.
        croc_fields: `CrocConfig` fields; the preset defaults to `victor`. The checkpoint's pool is kept when it can
            serve the preset (ViCToR's stage 2 recreates it with a single untrained row: `--mm_pool_size 1`,
            stage2_finetune_siglip_qwen.sh L55; such a pool is replaced by a fresh one of the preset's size).
    """
    source = Path(source)
    original = read_json(source / "config.json")
    if original.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise ValueError(f"only the mlp2x_gelu projector converts, got {original['mm_projector_type']!r}")
    vision_folder = Path(vision_tower or original.get("mm_vision_tower", ""))
    if not (vision_folder / "config.json").exists():
        raise FileNotFoundError(
            f"vision tower config not found at {vision_folder}: pass vision_tower=<local folder of "
            f"{original.get('mm_vision_tower', 'the SigLIP checkpoint')}>"
        )
    state = rename_victor_state_dict(read_state_dict(source))
    vision_config = _truncated_tower(state, vision_folder)

    tokenizer = AutoTokenizer.from_pretrained(source)
    image_token_id, pad_token_id = add_llava_tokens(tokenizer)
    vocab_size = fit_vocabulary(state, len(tokenizer), vocab_multiple)
    text_fields = text_config_fields(original, Qwen2Config)
    text_fields.update(vocab_size=vocab_size, pad_token_id=pad_token_id, rope_scaling=None)  # llava_qwen.py L53
    text_config = Qwen2Config(**text_fields)

    croc_fields.setdefault("croc_preset", preset_for_released_model_type(original.get("model_type")))
    if "vtr_head.proj.weight" in state:
        croc_fields.setdefault("vtr_head", "linear")
    anyres = _is_anyres(original)
    architecture = {
        "text_config": text_config.to_dict(),
        "vision_config": vision_config.to_dict(),
        "image_token_index": image_token_id,
        # The truncated tower's last layer (siglip_encoder.py L581), every token (SigLIP has no class token).
        "vision_feature_layer": -1,
        "vision_feature_select_strategy": "full",
        "tie_word_embeddings": bool(original.get("tie_word_embeddings", False)),
    }
    if anyres:
        # The fork lists pinpoints as (width, height) (mm_utils.py L125, L135); transformers as (height, width).
        architecture["image_grid_pinpoints"] = [[height, width] for width, height in original["image_grid_pinpoints"]]
        architecture["vision_aspect_ratio"] = original["image_aspect_ratio"]
    config_class = CrocOnevisionConfig if anyres else CrocConfig
    config = config_class(**architecture, **croc_fields)
    pool = state.get(PROMPT_POOL_PREFIX + "weight")
    if pool is not None:
        masked = config.num_masked_tokens(config.visual_tokens_per_image())
        if config.token_matching == "nearest" or pool.shape[0] >= masked:
            croc_fields.setdefault("prompt_pool_size", pool.shape[0])
            croc_fields.setdefault("prompt_pool_calibrated", True)
            config = config_class(**architecture, **croc_fields)
        else:
            logger.warning("the checkpoint's pool has %d rows, fewer than the %d masked tokens of an image under "
                           "one-to-one matching (ViCToR's stage 2 recreates it with one untrained row): a fresh "
                           "pool of %d starts instead", pool.shape[0], masked, config.prompt_pool_size)
            del state[PROMPT_POOL_PREFIX + "weight"]
    chat_template = get_template(VICTOR_TEMPLATE).chat_template(tokenizer.eos_token)
    if anyres:
        processor = _onevision_processor(tokenizer, vision_folder, config, chat_template)
    else:
        processor = build_processor(tokenizer, vision_folder, config.vision_config,
                                    original.get("image_aspect_ratio", "pad"), "full", chat_template)
    return config, state, processor


def _onevision_processor(tokenizer, vision_folder: Path, config: CrocOnevisionConfig,
                         chat_template: str) -> CrocOnevisionProcessor:
    """OneVision's processor with the tower folder's normalisation and the model's pinpoints."""
    settings = {}
    if (vision_folder / "preprocessor_config.json").exists():
        saved = read_json(vision_folder / "preprocessor_config.json")
        settings = {key: saved[key] for key in ("image_mean", "image_std", "rescale_factor") if key in saved}
    size = config.vision_config.image_size
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": size, "width": size}, image_grid_pinpoints=config.image_grid_pinpoints, **settings)
    return CrocOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        num_image_tokens=config.visual_tokens_per_image(),
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        chat_template=chat_template,
        vision_aspect_ratio=config.vision_aspect_ratio,
    )


__all__ = ["VICTOR_RENAMES", "read_victor_checkpoint", "rename_victor_state_dict"]
