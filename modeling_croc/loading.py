"""Build a Croc model and its processor from any source. Every entry point (the trainer, `python -m
modeling_croc.convert`, the demo) goes through `load_croc`, so a source is read one way everywhere.

Sources:

* a Croc folder (`model_type` `croc`, `croc_onevision`, `croc_qwen2_5_vl`: `families.FAMILIES`, from
  `save_pretrained` or an earlier stage);
* a transformers folder of a parent family (llava, llava_onevision, qwen2_5_vl; e.g. llava-1.5-7b-hf,
  llava-onevision-qwen2-7b-ov-hf, Qwen2.5-VL-7B-Instruct): same weights, a fresh pool (and head);
* the released layout of the original LLaVA / Croc repositories (`model_type` `llava_llama` / `croc_llama`,
  transformers 4.37 fork), with a local CLIP folder for its vision tower;
* the released layout of ViCToR (`model_type` `llava_qwen`, the LLaVA-NeXT fork), with a local SigLIP folder;
* separate parts: a vision-tower folder (CLIP, SigLIP, fixed-resolution SigLIP2) and a causal-LM folder (stage 0,
  before stage 1).

The readers of the foreign layouts live in `modeling_croc.convert`; this module turns what they read into a model.
The Croc class follows the config (`families.FAMILIES`): `CrocForConditionalGeneration` for a `CrocConfig`,
`CrocOnevisionForConditionalGeneration` for a `CrocOnevisionConfig`, and so on.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import AutoProcessor, PreTrainedModel

from .configuration_croc import CrocConfig, CrocFieldsMixin
from .constants import CROC_ONLY_PREFIXES, PROMPT_POOL_PREFIX
from .families import FAMILIES
from .model_folders import (
    ModelFolderError,
    checked_from_pretrained,
    folder_processor,
    model_folder_problem,
    reading_weights,
    weight_gaps,
)
from .presets import get_preset
from .processing_croc import CrocProcessor, with_image_aspect_ratio
from .provenance import is_hub_id

logger = logging.getLogger(__name__)

# `model_type` of the original LLaVA / Croc repositories' checkpoints.
RELEASED_MODEL_TYPES = ("llava_llama", "croc_llama", "llava_mistral")
# `model_type` of ViCToR's checkpoints (its LLaVA-NeXT fork).
VICTOR_MODEL_TYPES = ("llava_qwen",)
# Croc config class, by `model_type` of a Croc folder (`families.FAMILIES`).
CROC_CONFIG_CLASSES: dict[str, type] = {family.model_type: family.config for family in FAMILIES}
# The Croc model class of each Croc config class.
CROC_MODEL_CLASSES: dict[type, type] = {family.config: family.generation_model for family in FAMILIES}
# `model_type` of the plain parent folders a Croc model starts from (llava, llava_onevision, qwen2_5_vl, ...).
PLAIN_MODEL_TYPES = tuple(family.plain_model_type for family in FAMILIES)


def saved_config(path: str | Path) -> dict:
    """`path/config.json` as a dict; a one-line ValueError for a folder without one, or one that is not a JSON
    object in UTF-8."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise ValueError(model_folder_problem(path))
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:  # the file and the place, as for the data files
        raise ValueError(f"{config_file}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{config_file} is not UTF-8 text") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_file} is not a JSON object (it holds a {type(config).__name__})")
    return config


def source_kind(path: str | Path) -> str:
    """`croc`, `llava`, `released` or `victor` for a model folder (by its config.json); raises for anything else."""
    config = saved_config(path)
    model_type = config.get("model_type")
    if model_type in VICTOR_MODEL_TYPES:
        return "victor"
    if model_type in RELEASED_MODEL_TYPES or "mm_projector_type" in config:
        return "released"
    if model_type in CROC_CONFIG_CLASSES:
        return "croc"
    if model_type in PLAIN_MODEL_TYPES:
        return "llava"
    raise ValueError(f"{path} has model_type={model_type!r}, which Croc does not run on: it runs on a plain folder of "
                     f"one of its families ({', '.join(PLAIN_MODEL_TYPES)}; docs/MODELS.md#families), a Croc folder "
                     f"of one ({', '.join(CROC_CONFIG_CLASSES)}), a released Croc or LLaVA checkpoint "
                     f"({', '.join(RELEASED_MODEL_TYPES)}) or a ViCToR one ({', '.join(VICTOR_MODEL_TYPES)})")


def croc_model_class(config: CrocFieldsMixin) -> type:
    """The Croc model class a config belongs to."""
    return CROC_MODEL_CLASSES[type(config)]


def load_croc_config(path: str | Path) -> CrocFieldsMixin:
    """The config of a Croc folder, as the Croc config class its `model_type` names."""
    return CROC_CONFIG_CLASSES[saved_config(path)["model_type"]].from_pretrained(path)


def apply_croc_fields(config, croc_fields: dict[str, Any]):
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
    return type(config).from_dict(data)


# What a model folder needs: config, tokenizer (json / SentencePiece / BPE merges), chat template, weights, card.
MODEL_FOLDER_FILES = ["*.json", "*.model", "*.txt", "*.jinja", "*.safetensors", "README.md"]


def local_folder(name_or_path: str | Path) -> Path:
    """A local folder for `name_or_path`: the folder itself, or a Hub repository's snapshot (config, tokenizer,
    chat template, weights and card; offline mode reads the cache only)."""
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        return folder
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(name_or_path), allow_patterns=MODEL_FOLDER_FILES))


def _names_a_hub_repository(name_or_path: str | Path) -> bool:
    """Whether `name_or_path` is a Hub id (`org/name`) and no path of this machine."""
    return not Path(name_or_path).expanduser().exists() and is_hub_id(str(name_or_path))


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
) -> CrocFieldsMixin | None:
    """The Croc config a Croc or llava / llava_onevision `source` (or the parts' `vision_tower`) is loaded with, read
    from config.json alone: no weights, no tokenizer. Constructing it runs every check of the Croc fields, the
    prompt-pool size against the tower's visual-token count included, so a bad field fails here, before anything
    heavy.

    Returns None when there is no config.json to read (the released layout, an unreachable Hub id); `load_croc` then
    constructs the config itself, still before reading weights."""
    from transformers import AutoConfig

    from .convert.common import tower_has_cls_token, vision_tower_config
    from .convert.from_llava import croc_config_from_llava

    croc_fields = dict(croc_fields or {})
    if source is None:
        folder = _config_folder(vision_tower) if vision_tower is not None else None
        if folder is None:
            return None
        tower = vision_tower_config(folder)
        strategy = "default" if tower_has_cls_token(tower) else "full"
        return CrocConfig(vision_config=tower.to_dict(), vision_feature_select_strategy=strategy, **croc_fields)
    folder = _config_folder(source)
    if folder is None:
        return None
    kind = source_kind(folder)
    if kind == "croc":
        return apply_croc_fields(load_croc_config(folder), croc_fields)
    if kind == "llava":
        return croc_config_from_llava(AutoConfig.from_pretrained(folder), **croc_fields)
    return None


def materialize_croc(config, state: dict[str, torch.Tensor], folder: str | Path | None = None, **kwargs):
    """A Croc model holding `state` (in-memory parameter names), through `from_pretrained`'s own loading path: no
    random copy of the full model is built, and a pool or VTR head absent from `state` is initialised the way
    `from_pretrained` initialises missing weights. Any other gap (`weight_gaps`) raises `ModelFolderError` (naming
    `folder`, where `state` was read from). `kwargs` go to `from_pretrained`
    (dtype, attn_implementation, ...)."""
    # Mismatched shapes are reported (and refused below in one line) rather than raised: transformers raises a
    # RuntimeError after a multi-line report, which a converter or training run then shows as a traceback.
    model, info = croc_model_class(config).from_pretrained(
        None, config=config, state_dict=state, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
    )
    problems = weight_gaps(model, info, may_lack=CROC_ONLY_PREFIXES)
    if problems:
        raise ModelFolderError(folder or "the source", "; ".join(problems))
    missing = sorted(info["missing_keys"])
    if missing:
        logger.info("initialised parameters absent from the source: %s", missing[:5])
    return model


def load_pretrained_croc(path: str | Path, config, **kwargs):
    """`from_pretrained` of a Croc or llava folder that tolerates exactly one kind of change, a new pool size, and
    refuses silent gaps: any missing weight other than the pool / VTR head (e.g. an `lm_head` left random by a
    renaming problem), and silent drops: any weight with no place in the model (a folder whose config.json was
    edited to fewer layers trained those it names and left the rest unread). Either is a `ModelFolderError`."""
    saved = load_croc_config(path) if source_kind(path) == "croc" else None
    resized_pool = saved is not None and saved.prompt_pool_size != config.prompt_pool_size
    # Only a resized pool may change shape; a pool or head a stage does not build (its objectives off) may be
    # missing or left behind.
    model = checked_from_pretrained(croc_model_class(config), path, config=config, may_lack=CROC_ONLY_PREFIXES,
                                    may_resize=(PROMPT_POOL_PREFIX,) if resized_pool else (), **kwargs)
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
    vision_feature_layer: int = -2,
    vision_feature_select_strategy: str | None = None,
    **from_pretrained_kwargs,
) -> tuple[PreTrainedModel, Any]:
    """The Croc model and processor of `source` (a Croc, llava, llava_onevision or released-layout folder) or of
    the parts `vision_tower` + `language_model`.

    Args:
        source: a model folder; for the released layouts `vision_tower` names the local folder of its vision tower
            (default: the checkpoint's `mm_vision_tower`).
        vision_tower, language_model: vision-tower (CLIP, SigLIP, SigLIP2) and causal-LM folders when building from
            parts (no `source`).
        croc_fields: `CrocConfig` fields on top of the source's (preset, stage objectives, pool size, ...).
        image_aspect_ratio: "square" or "pad" for the processor (`with_image_aspect_ratio`); None keeps the
            source's.
        vocab_multiple: for the released layouts and parts, the vocabulary (grown by `<image>` and `<pad>`) is
            padded to a multiple of this with mean rows (LLaVA-1.5's conversions use 64: 32064). 1 adds no rows.
        vision_feature_layer, vision_feature_select_strategy: for parts, which tower layer LLaVA reads and whether
            the class token is dropped (`modeling_croc.convert.read_parts`).
        from_pretrained_kwargs: `dtype`, `attn_implementation`, `quantization_config`, ...
    """
    from .convert import read_original_checkpoint, read_parts, read_victor_checkpoint
    from .convert.from_llava import llava_processor

    croc_fields = dict(croc_fields or {})
    if source is None:
        if vision_tower is None or language_model is None:
            raise ValueError("give a model folder, or both vision_tower and language_model")
        # A part given by Hub id is read from its snapshot (the language model's weights file by file); a path is
        # read as it is, so that what is wrong with it is said in the order `read_parts` checks (the tower first).
        vision_tower, language_model = (local_folder(part) if _names_a_hub_repository(part) else part
                                        for part in (vision_tower, language_model))
        config, state, processor = read_parts(
            vision_tower, language_model, vocab_multiple, vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy, **croc_fields)
        # The tower's weights are checked as they are read: what does not fit here is the language model's.
        model = materialize_croc(config, state, folder=language_model, **from_pretrained_kwargs)
    else:
        source = local_folder(source)
        kind = source_kind(source)
        if kind in ("released", "victor"):
            reader = read_original_checkpoint if kind == "released" else read_victor_checkpoint
            with reading_weights(source):
                config, state, processor = reader(source, vision_tower, vocab_multiple, **croc_fields)
            model = materialize_croc(config, state, folder=source, **from_pretrained_kwargs)
        else:
            config = read_croc_config(source, croc_fields=croc_fields)
            model = load_pretrained_croc(source, config, **from_pretrained_kwargs)
            processor = llava_processor(source, config) if kind == "llava" else load_processor(source)
    if image_aspect_ratio is not None and isinstance(processor, CrocProcessor):
        # OneVision's processor prepares AnyRes crops itself; square / pad apply to LLaVA-1.5-style processors.
        processor = with_image_aspect_ratio(processor, image_aspect_ratio)
    return model, processor


def load_croc_processor(
    source: str | Path | None = None,
    *,
    vision_tower: str | Path | None = None,
    language_model: str | Path | None = None,
    image_aspect_ratio: str | None = None,
):
    """The processor `load_croc` returns for the same arguments, without reading a weight: what a training run
    tokenises and checks its rows with before the model loads. None for a weights-only folder."""
    from .convert import parts_processor
    from .convert.from_llava import llava_processor

    if source is None:
        if vision_tower is None or language_model is None:
            raise ValueError("give a model folder, or both vision_tower and language_model")
        processor = parts_processor(local_folder(vision_tower), local_folder(language_model))
    else:
        source = local_folder(source)
        kind = source_kind(source)
        if kind == "llava":
            processor = llava_processor(source, read_croc_config(source))
        elif kind == "croc":
            processor = load_processor(source)
        else:
            raise ValueError(f"{source}: a {kind}-layout checkpoint is converted first (python -m modeling_croc.convert)")
    if image_aspect_ratio is not None and isinstance(processor, CrocProcessor):
        processor = with_image_aspect_ratio(processor, image_aspect_ratio)
    return processor


def load_processor(source: str | Path):
    """The processor saved in a model folder (a `CrocProcessor`, or OneVision's for a OneVision Croc folder), or
    None for a weights-only folder."""
    # AttributeError and KeyError: processor files of another shape (a processor_config.json that is a list).
    return folder_processor(source, AutoProcessor.from_pretrained,
                            (OSError, ValueError, TypeError, AttributeError, KeyError))


__all__ = [
    "CROC_CONFIG_CLASSES",
    "CROC_MODEL_CLASSES",
    "RELEASED_MODEL_TYPES",
    "VICTOR_MODEL_TYPES",
    "apply_croc_fields",
    "croc_model_class",
    "load_croc_config",
    "load_croc",
    "load_croc_processor",
    "local_folder",
    "load_pretrained_croc",
    "load_processor",
    "materialize_croc",
    "read_croc_config",
    "source_kind",
]
