"""Read an original LLaVA-1.5 or released-Croc checkpoint (`model_type` `llava_llama` / `croc_llama`, the
transformers-4.37 fork layout) as a Croc config, state dict and processor; `modeling_croc.conversion.convert_original_checkpoint` writes
it as a Croc folder that `from_pretrained` loads.

Source layout: `model.embed_tokens`, `model.layers.*`, `model.norm`, `lm_head`, `model.mm_projector.{0,2}`,
`model.vision_tower.vision_tower.vision_model.*` (often absent: CLIP comes from `mm_vision_tower`), and for Croc
`model.mask_token` (the pool), `transform_block.*` (the VTR head, BERT layers) and an unused
`model.cross_attention.*`, which is dropped. Those checkpoints have no `<image>` token (the fork splices features
in at a sentinel id), so `<image>` and `<pad>` are appended to the vocabulary and the embedding and LM head grow
by mean rows; the logits of the original vocabulary are unchanged.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig

from ..configuration_croc import CrocConfig
from ..constants import PROMPT_POOL_PREFIX, VTR_HEAD_PREFIX
from ..presets import preset_for_released_model_type
from ..processing_croc import CrocProcessor
from .common import (
    LLAVA_FORK_RENAMES,
    add_llava_tokens,
    build_processor,
    clip_vision_config,
    fit_vocabulary,
    read_json,
    read_state_dict,
    read_vision_tower,
    renamed,
    text_config_fields,
)

logger = logging.getLogger(__name__)

# (source regex, target) renames from the fork's parameter names to Croc's in-memory names.
ORIGINAL_RENAMES: list[tuple[str, str]] = [
    *LLAVA_FORK_RENAMES,
    (r"^model\.mask_token$", "model.prompt_pool.weight"),
    (r"^transform_block\.position_embeddings\.", "vtr_head.position_embedding."),
    (r"^transform_block\.resize\.", "vtr_head.proj."),
    (r"^transform_block\.layers\.(\d+)\.attention\.output\.dense\.", r"vtr_head.layers.\1.self_attn.out_proj."),
    (r"^transform_block\.layers\.(\d+)\.attention\.output\.LayerNorm\.", r"vtr_head.layers.\1.norm1."),
    (r"^transform_block\.layers\.(\d+)\.intermediate\.dense\.", r"vtr_head.layers.\1.linear1."),
    (r"^transform_block\.layers\.(\d+)\.output\.dense\.", r"vtr_head.layers.\1.linear2."),
    (r"^transform_block\.layers\.(\d+)\.output\.LayerNorm\.", r"vtr_head.layers.\1.norm2."),
]
# Saved by the fork but used by nothing: the cross-attention module and rotary caches of old checkpoints.
DROPPED = re.compile(r"^model\.cross_attention\.|rotary_emb\.inv_freq$")
BERT_QKV = re.compile(r"^transform_block\.layers\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$")


def rename_original_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fork's tensors under Croc's names. BERT's separate query/key/value projections are stacked into the
    fused `in_proj` of torch's encoder layer (same maths: rows [q; k; v])."""
    renamed_state: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    dropped = []
    for name, tensor in state.items():
        if DROPPED.search(name):
            dropped.append(name)
            continue
        if match := BERT_QKV.match(name):
            layer, part, kind = match.groups()
            qkv.setdefault((layer, kind), {})[part] = tensor
            continue
        renamed_state[renamed(name, ORIGINAL_RENAMES)] = tensor
    for (layer, kind), parts in qkv.items():
        if len(parts) != 3:  # a renamed or missing projection: one line, not a KeyError traceback
            raise ValueError(f"transform_block.layers.{layer}.attention.self has {kind}s for {sorted(parts)} only; "
                             "the VTR head needs query, key and value")
        renamed_state[f"vtr_head.layers.{layer}.self_attn.in_proj_{kind}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]]
        )
    if dropped:
        logger.info("dropped %d unused tensors (cross_attention, rotary caches)", len(dropped))
    return renamed_state


def read_original_checkpoint(
    source: str | Path,
    vision_tower: str | Path | None = None,
    vocab_multiple: int = 64,
    **croc_fields,
) -> tuple[CrocConfig, dict[str, torch.Tensor], CrocProcessor]:
    """`source` (fork layout, with its tokenizer files) as (Croc config, state dict under Croc's names, processor).

    Args:
        vision_tower: local CLIP folder (e.g. a download of `openai/clip-vit-large-patch14-336`); defaults to the
            checkpoint's `mm_vision_tower` when that is a local folder.
        vocab_multiple: pad the grown vocabulary to a multiple of this with mean rows (llava-1.5 conversions use
            64: 32064). The padding rows take a little softmax mass the released model never had (at most
            log(V_padded / V), about 0.002 nats for Vicuna); 1 adds only `<image>` and `<pad>`.
        croc_fields: `CrocConfig` fields; the preset defaults to the one the checkpoint's `model_type` was trained
            with (`modeling_croc.presets.preset_for_released_model_type`).
    """
    source = Path(source)
    original = read_json(source / "config.json")
    if "mm_projector_type" in original and original["mm_projector_type"] != "mlp2x_gelu":
        raise ValueError(f"only LLaVA-1.5's mlp2x_gelu projector converts, got {original['mm_projector_type']!r}")
    vision_folder = Path(vision_tower or original.get("mm_vision_tower", ""))
    if not (vision_folder / "config.json").exists():
        raise FileNotFoundError(
            f"CLIP config not found at {vision_folder}: pass vision_tower=<local folder of "
            f"{original.get('mm_vision_tower', 'the CLIP checkpoint')}>"
        )
    state = rename_original_state_dict(read_state_dict(source))
    vision_config = clip_vision_config(vision_folder)
    if not any(name.startswith("model.vision_tower.") for name in state):  # the tower's weights only when missing
        state.update(read_vision_tower(vision_folder)[1])

    tokenizer = AutoTokenizer.from_pretrained(source)
    image_token_id, pad_token_id = add_llava_tokens(tokenizer)
    vocab_size = fit_vocabulary(state, len(tokenizer), vocab_multiple)

    text_fields = text_config_fields(original, LlamaConfig)
    text_fields.update(vocab_size=vocab_size, pad_token_id=pad_token_id)
    croc_fields.setdefault("croc_preset", preset_for_released_model_type(original.get("model_type")))
    pool = PROMPT_POOL_PREFIX + "weight"
    if pool in state:  # a released Croc checkpoint: keep its trained pool as it is
        croc_fields.setdefault("prompt_pool_size", state[pool].shape[0])
        croc_fields.setdefault("prompt_pool_calibrated", True)
    head_layers = {name.split(".")[2] for name in state if name.startswith(VTR_HEAD_PREFIX + "layers.")}
    if head_layers:  # the released BERT-layer head, trained: keep it
        croc_fields.setdefault("vtr_head", "bert")
        croc_fields.setdefault("vtr_head_layers", len(head_layers))
    config = CrocConfig(
        text_config=LlamaConfig(**text_fields),
        vision_config=vision_config,
        image_token_index=image_token_id,
        vision_feature_layer=original.get("mm_vision_select_layer", -2),
        vision_feature_select_strategy="default" if original.get("mm_vision_select_feature", "patch") == "patch"
        else "full",
        **croc_fields,
    )
    processor = build_processor(tokenizer, vision_folder, config.vision_config, original.get("image_aspect_ratio", "pad"),
                                config.vision_feature_select_strategy)
    return config, state, processor
