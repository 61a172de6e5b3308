"""Build a Croc model and its processor from any source. Every entry point (the trainer, `python -m
modeling_croc.convert`, the demo) goes through `load_croc`, so a source is read one way everywhere.

Sources:

* a Croc folder (`model_type` `croc`, from `save_pretrained` or an earlier stage);
* a transformers llava folder (`model_type` `llava`, e.g. llava-1.5-7b-hf): same weights, a fresh pool (and head);
* the released layout of the original LLaVA / Croc repositories (`model_type` `llava_llama` / `croc_llama`,
  transformers 4.37 fork), with a local CLIP folder for its vision tower;
* separate parts: a CLIP vision folder and a Llama-family causal-LM folder (stage 0, before stage 1).

The readers of the foreign layouts live in `modeling_croc.convert`; this module turns what they read into a model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import AutoProcessor

from .configuration_croc import CrocConfig
from .constants import CROC_ONLY_PREFIXES, PROMPT_POOL_PREFIX
from .modeling_croc import CrocForConditionalGeneration
from .presets import get_preset
from .processing_croc import CrocProcessor, with_image_aspect_ratio

logger = logging.getLogger(__name__)

# `model_type` of the original LLaVA / Croc repositories' checkpoints.
RELEASED_MODEL_TYPES = ("llava_llama", "croc_llama", "llava_mistral")
SOURCE_KINDS = ("croc", "llava", "released", "parts")


def source_kind(path: str | Path) -> str:
    """`croc`, `llava` or `released` for a model folder (by its config.json); raises for anything else."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{path} is not a model folder: it has no config.json")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    model_type = config.get("model_type")
    if model_type in RELEASED_MODEL_TYPES or "mm_projector_type" in config:
        return "released"
    if model_type in ("croc", "llava"):
        return model_type
    raise ValueError(f"{path} has model_type={model_type!r}; expected croc, llava or one of {RELEASED_MODEL_TYPES}")


def apply_croc_fields(config: CrocConfig, croc_fields: dict[str, Any]) -> CrocConfig:
    """`config` with `croc_fields` on top. Switching preset refills every field the new preset sets; a new preset
    or pool size means a new pool, which then still needs calibrating."""
    if not croc_fields:
        return config
    data = config.to_dict()
    preset = croc_fields.get("croc_preset", data.get("croc_preset"))
    if data.get("croc_preset") != preset:
        for name in get_preset(preset).model_fields:
            data[name] = None
        data["prompt_pool_calibrated"] = False
    if "prompt_pool_size" in croc_fields and croc_fields["prompt_pool_size"] != data.get("prompt_pool_size"):
        data["prompt_pool_calibrated"] = False
    data.update(croc_fields)
    return CrocConfig.from_dict(data)


def _config_folder(name_or_path: str | Path) -> Path | None:
    """The folder holding `name_or_path`'s config.json: the folder itself, or the Hub cache after fetching that one
    file (offline mode reads the cache only). None when there is no config.json to be had."""
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        return folder if (folder / "config.json").is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(str(name_or_path), "config.json")).parent
    except Exception:  # not a Hub id, not cached offline, no network: the load itself will say what is wrong
        return None


def read_croc_config(
    source: str | Path | None = None,
    *,
    vision_tower: str | Path | None = None,
    croc_fields: dict[str, Any] | None = None,
) -> CrocConfig | None:
    """The `CrocConfig` a Croc or llava `source` (or the parts' CLIP `vision_tower`) is loaded with, read from
    config.json alone: no weights, no tokenizer. Constructing it runs every check of `CrocConfig`, the prompt-pool
    size against the tower's visual-token count included, so a bad field fails here, before anything heavy.

    Returns None when there is no config.json to read (the released layout, an unreachable Hub id); `load_croc` then
    constructs the config itself, still before reading weights."""
    from transformers import LlavaConfig

    from .convert.common import clip_vision_config
    from .convert.from_llava import croc_config_from_llava

    croc_fields = dict(croc_fields or {})
    if source is None:
        folder = _config_folder(vision_tower) if vision_tower is not None else None
        return None if folder is None else CrocConfig(vision_config=clip_vision_config(folder).to_dict(),
                                                      **croc_fields)
    folder = _config_folder(source)
    if folder is None:
        return None
    kind = source_kind(folder)
    if kind == "croc":
        return apply_croc_fields(CrocConfig.from_pretrained(folder), croc_fields)
    if kind == "llava":
        return croc_config_from_llava(LlavaConfig.from_pretrained(folder), **croc_fields)
    return None


def materialize_croc(config: CrocConfig, state: dict[str, torch.Tensor], **kwargs) -> CrocForConditionalGeneration:
    """A Croc model holding `state` (in-memory parameter names), through `from_pretrained`'s own loading path: no
    random copy of the full model is built, and a pool or VTR head absent from `state` is initialised the way
    `from_pretrained` initialises missing weights. Weights with no place in the model, or other missing ones,
    raise. `kwargs` go to `from_pretrained` (dtype, attn_implementation, ...)."""
    model, info = CrocForConditionalGeneration.from_pretrained(
        None, config=config, state_dict=state, output_loading_info=True, **kwargs
    )
    if info["unexpected_keys"] or info["mismatched_keys"]:
        raise ValueError(
            f"weights with no place in a Croc model: {sorted(info['unexpected_keys'])[:10]} "
            f"{sorted(info['mismatched_keys'])[:10]}"
        )
    missing = sorted(set(model.state_dict()) - set(state))
    unexplained = [name for name in missing if not name.startswith(CROC_ONLY_PREFIXES)]
    if unexplained:
        raise ValueError(f"weights missing for: {unexplained[:10]}")
    if missing:
        logger.info("initialised parameters absent from the source: %s", missing[:5])
    return model


def load_pretrained_croc(path: str | Path, config: CrocConfig, **kwargs) -> CrocForConditionalGeneration:
    """`from_pretrained` of a Croc or llava folder that tolerates exactly one kind of change, a new pool size, and
    refuses silent gaps: any missing weight other than the pool / VTR head (e.g. an `lm_head` left random by a
    renaming problem)."""
    saved = CrocConfig.from_pretrained(path) if source_kind(path) == "croc" else None
    resized_pool = saved is not None and saved.prompt_pool_size != config.prompt_pool_size
    model, info = CrocForConditionalGeneration.from_pretrained(
        path, config=config, output_loading_info=True, ignore_mismatched_sizes=resized_pool, **kwargs
    )
    missing = [name for name in info.get("missing_keys", []) if not name.startswith(CROC_ONLY_PREFIXES)]
    mismatched = [entry[0] if isinstance(entry, tuple) else entry for entry in info.get("mismatched_keys", [])]
    mismatched = [name for name in mismatched if not str(name).startswith(PROMPT_POOL_PREFIX)]
    if missing or mismatched:
        raise ValueError(f"{path}: weights missing {missing[:8]} / of the wrong shape {mismatched[:8]}; is it a "
                         "Croc or llava checkpoint of this architecture?")
    if resized_pool:
        logger.warning("prompt pool resized %d -> %d: the new pool starts fresh", saved.prompt_pool_size,
                       config.prompt_pool_size)
    if saved is not None and saved.croc_preset != config.croc_preset:
        # The saved pool was drawn for the other preset (e.g. std 0.02 vs the released code's N(0, 1)).
        model.model.prompt_pool.reset_parameters()
    return model


def load_croc(
    source: str | Path | None = None,
    *,
    vision_tower: str | Path | None = None,
    language_model: str | Path | None = None,
    croc_fields: dict[str, Any] | None = None,
    image_aspect_ratio: str | None = None,
    vocab_multiple: int = 64,
    **from_pretrained_kwargs,
) -> tuple[CrocForConditionalGeneration, CrocProcessor]:
    """The Croc model and processor of `source` (a Croc, llava or released-layout folder) or of the parts
    `vision_tower` + `language_model`.

    Args:
        source: a model folder; for the released layout `vision_tower` names its CLIP folder (default: the
            checkpoint's `mm_vision_tower`).
        vision_tower, language_model: CLIP and causal-LM folders when building from parts (no `source`).
        croc_fields: `CrocConfig` fields on top of the source's (preset, stage objectives, pool size, ...).
        image_aspect_ratio: "square" or "pad" for the processor (`with_image_aspect_ratio`); None keeps the
            source's.
        vocab_multiple: for the released layout and parts, the vocabulary (grown by `<image>` and `<pad>`) is
            padded to a multiple of this with mean rows (LLaVA-1.5's conversions use 64: 32064). 1 adds no rows.
        from_pretrained_kwargs: `dtype`, `attn_implementation`, `quantization_config`, ...
    """
    from .convert import read_original_checkpoint, read_parts
    from .convert.from_llava import llava_processor

    croc_fields = dict(croc_fields or {})
    if source is None:
        if vision_tower is None or language_model is None:
            raise ValueError("give a model folder, or both vision_tower and language_model")
        config, state, processor = read_parts(vision_tower, language_model, vocab_multiple, **croc_fields)
        model = materialize_croc(config, state, **from_pretrained_kwargs)
    else:
        kind = source_kind(source)
        if kind == "released":
            config, state, processor = read_original_checkpoint(source, vision_tower, vocab_multiple, **croc_fields)
            model = materialize_croc(config, state, **from_pretrained_kwargs)
        else:
            config = read_croc_config(source, croc_fields=croc_fields)
            model = load_pretrained_croc(source, config, **from_pretrained_kwargs)
            processor = llava_processor(source, config) if kind == "llava" else CrocProcessor.from_pretrained(source)
    if image_aspect_ratio is not None and processor is not None:
        processor = with_image_aspect_ratio(processor, image_aspect_ratio)
    return model, processor


def load_processor(source: str | Path) -> CrocProcessor | None:
    """The processor saved in a model folder as a `CrocProcessor`, or None for a weights-only folder."""
    try:
        return AutoProcessor.from_pretrained(source)
    except (OSError, ValueError, TypeError):
        return None


__all__ = [
    "RELEASED_MODEL_TYPES",
    "SOURCE_KINDS",
    "apply_croc_fields",
    "load_croc",
    "load_pretrained_croc",
    "load_processor",
    "materialize_croc",
    "read_croc_config",
    "source_kind",
]
