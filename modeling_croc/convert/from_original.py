"""Convert an original LLaVA-1.5 or released-Croc checkpoint (`model_type` `llava_llama` / `croc_llama`, the
transformers-4.37 fork layout) into a Croc folder that `from_pretrained` loads.

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
from transformers import AutoTokenizer, CLIPVisionConfig, CLIPVisionModel, LlamaConfig

from ..configuration_croc import CrocConfig
from .common import (
    add_llava_tokens,
    build_processor,
    grow_vocabulary,
    materialize_croc,
    padded_vocab_size,
    read_json,
    read_state_dict,
)

logger = logging.getLogger(__name__)

# (source regex, target) renames from the fork's parameter names to Croc's in-memory names.
ORIGINAL_RENAMES: list[tuple[str, str]] = [
    (r"^model\.mm_projector\.0\.", "model.multi_modal_projector.linear_1."),
    (r"^model\.mm_projector\.2\.", "model.multi_modal_projector.linear_2."),
    (r"^model\.vision_tower\.vision_tower\.vision_model\.", "model.vision_tower."),
    (r"^model\.mask_token$", "model.prompt_pool.weight"),
    (r"^model\.(embed_tokens|layers|norm)\.", r"model.language_model.\1."),
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
    renamed: dict[str, torch.Tensor] = {}
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
        for pattern, target in ORIGINAL_RENAMES:
            if re.search(pattern, name):
                name = re.sub(pattern, target, name)
                break
        renamed[name] = tensor
    for (layer, kind), parts in qkv.items():
        renamed[f"vtr_head.layers.{layer}.self_attn.in_proj_{kind}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]]
        )
    if dropped:
        logger.info("dropped %d unused tensors (cross_attention, rotary caches)", len(dropped))
    return renamed


def _vision_state(vision_folder: Path) -> dict[str, torch.Tensor]:
    """CLIP vision weights under Croc's names. `CLIPVisionModel.from_pretrained` reads every CLIP layout (a full
    `CLIPModel` such as openai/clip-vit-large-patch14-336, or a vision-only save)."""
    vision = CLIPVisionModel.from_pretrained(vision_folder)
    return {f"model.vision_tower.{name}": tensor for name, tensor in vision.state_dict().items()}


def _vision_config(vision_folder: Path) -> CLIPVisionConfig:
    config = read_json(vision_folder / "config.json")
    config = config.get("vision_config", config)
    config["model_type"] = "clip_vision_model"
    return CLIPVisionConfig(**{k: v for k, v in config.items() if k in CLIPVisionConfig.__dataclass_fields__})


def convert_original_checkpoint(
    source: str | Path,
    out_dir: str | Path,
    vision_tower: str | Path | None = None,
    vocab_multiple: int = 64,
    **croc_fields,
) -> Path:
    """Convert `source` (fork layout, with its tokenizer files) into a Croc folder at `out_dir`.

    Args:
        vision_tower: local CLIP folder (e.g. a download of `openai/clip-vit-large-patch14-336`); defaults to the
            checkpoint's `mm_vision_tower` when that is a local folder.
        vocab_multiple: pad the grown vocabulary to a multiple of this (llava-1.5 conversions use 64: 32064).
        croc_fields: `CrocConfig` fields; the preset defaults to `official` for `croc_llama` checkpoints (they
            were trained with it) and `paper` otherwise.
    """
    source, out_dir = Path(source), Path(out_dir)
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
    if not any(name.startswith("model.vision_tower.") for name in state):
        state.update(_vision_state(vision_folder))

    tokenizer = AutoTokenizer.from_pretrained(source)
    image_token_id, pad_token_id = add_llava_tokens(tokenizer)
    vocab_size = padded_vocab_size(len(tokenizer), vocab_multiple)
    for name in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        state[name] = grow_vocabulary(state[name], vocab_size - state[name].shape[0])

    text_fields = {k: v for k, v in original.items() if k in LlamaConfig.__dataclass_fields__}
    text_fields.update(vocab_size=vocab_size, pad_token_id=pad_token_id)
    croc_fields.setdefault("croc_preset", "official" if original.get("model_type") == "croc_llama" else "paper")
    if "model.prompt_pool.weight" in state:  # a released Croc checkpoint: keep its trained pool as it is
        croc_fields.setdefault("prompt_pool_size", state["model.prompt_pool.weight"].shape[0])
        croc_fields.setdefault("prompt_pool_calibrated", True)
    croc_fields.setdefault("vtr_head_layers", len({n.split(".")[2] for n in state if n.startswith("vtr_head.layers.")}))
    config = CrocConfig(
        text_config=LlamaConfig(**text_fields),
        vision_config=_vision_config(vision_folder),
        image_token_index=image_token_id,
        vision_feature_layer=original.get("mm_vision_select_layer", -2),
        vision_feature_select_strategy="default" if original.get("mm_vision_select_feature", "patch") == "patch"
        else "full",
        **croc_fields,
    )
    model = materialize_croc(config, state)
    model.save_pretrained(out_dir)
    build_processor(tokenizer, vision_folder, config.vision_config,
                    original.get("image_aspect_ratio", "pad")).save_pretrained(out_dir)
    return out_dir
