"""Tiny random configs of the language models and vision towers the backbone matrix tests Croc on.

Each entry keeps what makes its family different from LLaVA-1.5's Llama + CLIP, at widths a CPU runs in
milliseconds: Mistral's all-sliding attention, Qwen2's attention biases and tied embeddings, Qwen3's q/k norms,
Gemma 2's and Gemma 3's alternating sliding / global layers, scaled input embeddings and soft-capping; CLIP's class
token (dropped: `default`), SigLIP's and SigLIP2's patch-only output (kept whole: `full`), each tower with the
feature layer its usual recipe reads (CLIP and SigLIP2 as in LLaVA-1.5 and ViCToR: the second-to-last layer;
SigLIP as transformers' LLaVA-OneVision conversions: the last layer of a tower whose top layer was removed).
"""

from __future__ import annotations

from typing import Any

# Windows shorter than the test sequences, so a sliding layer that silently went global would show.
SLIDING_WINDOW = 8


def _common(vocab_size: int, hidden_size: int, num_layers: int, pad_token_id: int) -> dict[str, Any]:
    return {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "pad_token_id": pad_token_id,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }


def _two_layer_types() -> list[str]:
    return ["sliding_attention", "full_attention"]


TEXT_BACKBONES: dict[str, dict[str, Any]] = {
    "llama": {"model_type": "llama"},
    "mistral": {"model_type": "mistral", "sliding_window": SLIDING_WINDOW},
    # Qwen2 has q/k/v biases; small Qwen2.5 models tie their embeddings; the top layer slides.
    "qwen2": {"model_type": "qwen2", "tie_word_embeddings": True, "use_sliding_window": True,
              "sliding_window": SLIDING_WINDOW, "max_window_layers": 1},
    "qwen3": {"model_type": "qwen3", "tie_word_embeddings": True, "head_dim": 8},
    "gemma2": {"model_type": "gemma2", "head_dim": 8, "sliding_window": SLIDING_WINDOW,
               "layer_types": _two_layer_types(), "attn_logit_softcapping": 50.0,
               "final_logit_softcapping": 30.0, "query_pre_attn_scalar": 8},
    "gemma3_text": {"model_type": "gemma3_text", "head_dim": 8, "sliding_window": SLIDING_WINDOW,
                    "layer_types": _two_layer_types(), "query_pre_attn_scalar": 8},
}

# name -> (vision config fields, vision_feature_layer, vision_feature_select_strategy)
VISION_BACKBONES: dict[str, tuple[dict[str, Any], int, str]] = {
    "clip": ({"model_type": "clip_vision_model", "patch_size": 14, "image_size": 56, "projection_dim": 24}, -2,
             "default"),
    "siglip": ({"model_type": "siglip_vision_model", "patch_size": 14, "image_size": 56, "vision_use_head": False},
               -1, "full"),
    # SigLIP2 at a fixed resolution is the SigLIP architecture (its checkpoints say model_type "siglip"), at patch 16.
    "siglip2": ({"model_type": "siglip_vision_model", "patch_size": 16, "image_size": 64}, -2, "full"),
}


def text_config(name: str, vocab_size: int = 128, hidden_size: int = 32, num_layers: int = 2,
                pad_token_id: int | None = None) -> dict[str, Any]:
    """The tiny text config of family `name` (a key of `TEXT_BACKBONES`) as a dict."""
    pad_token_id = vocab_size - 1 if pad_token_id is None else pad_token_id
    return {**_common(vocab_size, hidden_size, num_layers, pad_token_id), **TEXT_BACKBONES[name]}


def vision_config(name: str, hidden_size: int = 24, num_layers: int = 2) -> tuple[dict[str, Any], int, str]:
    """The tiny vision config of tower `name` (a key of `VISION_BACKBONES`), its feature layer and strategy."""
    fields, layer, strategy = VISION_BACKBONES[name]
    config = {"hidden_size": hidden_size, "intermediate_size": 2 * hidden_size, "num_hidden_layers": num_layers,
              "num_attention_heads": 4, **fields}
    return config, layer, strategy


def backbone_fields(text: str, vision: str, vocab_size: int = 128, **sizes: Any) -> dict[str, Any]:
    """Keyword arguments for a Llava-family config (`CrocConfig`, `LlavaConfig`, the OneVision ones) on these two
    backbones: sub-configs, image token (the vocabulary's second-to-last id), feature layer and strategy."""
    vision_fields, layer, strategy = vision_config(vision)
    return {
        "text_config": text_config(text, vocab_size=vocab_size, **sizes),
        "vision_config": vision_fields,
        "image_token_index": vocab_size - 2,
        "vision_feature_layer": layer,
        "vision_feature_select_strategy": strategy,
    }


__all__ = ["SLIDING_WINDOW", "TEXT_BACKBONES", "VISION_BACKBONES", "backbone_fields", "text_config", "vision_config"]
