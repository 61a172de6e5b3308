"""Checks of a raw training config that run before anything is loaded or computed.

Each check raises `ConfigError` with a message that says what is wrong and what to do. `validate_raw_config`
runs them all; it may also complete the config (the accumulation steps derived from `global_batch_size`, the
resolved DeepSpeed config path).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from .cli import ConfigError
from .stages import StageSpec, get_stage

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
CROC_MODEL_TYPES = ("croc", "llava")
ORIGINAL_REPO_MODEL_TYPES = ("llava_llama", "croc_llama", "llava_mistral")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def world_size_from_env() -> int:
    """Processes of this run as the launchers (torchrun, accelerate, deepspeed) announce them."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def gpu_available() -> bool:
    return torch.cuda.is_available()


def validate_raw_config(raw: dict[str, dict[str, Any]]) -> StageSpec:
    """Run every check on `raw` (as returned by `trainer.cli.load_raw_config`) and return the stage."""
    training, model, data = raw["training"], raw["model"], raw["data"]
    if training.get("stage") is None:
        raise ConfigError("`stage` is required: one of '1', '1.5', '2'")
    try:
        stage = get_stage(training["stage"])
    except ValueError as error:
        raise ConfigError(str(error)) from None
    check_precision(training, model)
    check_attention(stage, training, model)
    check_model_source(stage, model)
    check_peft(stage, model)
    check_data(data)
    check_batch_size(training)
    check_deepspeed(training)
    check_template(training)
    check_resume(training)
    check_reporting(training)
    return stage


def check_precision(training: dict[str, Any], model: dict[str, Any]) -> None:
    """bf16/fp16 need a GPU: refuse them on a CPU-only machine instead of failing (or crawling) later."""
    if gpu_available():
        return
    for flag in ("bf16", "fp16"):
        if training.get(flag):
            raise ConfigError(
                f"{flag}=true but no CUDA GPU is visible. On CPU train in float32: pass --{flag}=false "
                "(the trainer/configs/cpu_tiny configs do)."
            )
    if str(model.get("dtype", "float32")) in ("bfloat16", "float16", "bf16", "fp16"):
        raise ConfigError(f"model.dtype={model['dtype']} but no CUDA GPU is visible; use --model.dtype=float32 on CPU")


def check_attention(stage: StageSpec, training: dict[str, Any], model: dict[str, Any]) -> None:
    """Stage 1.5's mixed attention needs a backend that honours a custom mask."""
    backend = str(model.get("attn_implementation", "sdpa"))
    span = (training.get("croc_config") or {}).get("bidirectional_span")
    if stage.croc_pretraining and "flash" in backend and span != "none":
        raise ConfigError(
            f"stage {stage.name} uses Croc's mixed attention (bidirectional visual tokens), which "
            f"attn_implementation={backend!r} ignores (it would silently train causal). Use "
            "--model.attn_implementation=sdpa (or eager / flex_attention) for this stage."
        )


def _looks_local(path: str) -> bool:
    """A path that exists, or whose parent folder exists, or that cannot be a Hub id, is meant as a local folder."""
    candidate = Path(path).expanduser()
    if candidate.exists() or path.startswith((".", "/", "~")) or not _HUB_ID.match(path):
        return True
    return candidate.parent != Path(".") and candidate.parent.exists()


def check_checkpoint_layout(path: str) -> None:
    """A local model folder must be a transformers `croc` or `llava` folder with weights."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"model folder {path} does not exist")
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        raise ConfigError(
            f"{path} holds a LoRA adapter, not a full model: merge it first with "
            f"`python -m trainer.merge_lora {path} --out MERGED_DIR` and point to MERGED_DIR"
        )
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{path} is not a model folder: it has no config.json")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    model_type = config.get("model_type")
    if model_type in ORIGINAL_REPO_MODEL_TYPES or "mm_projector_type" in config:
        raise ConfigError(
            f"{path} is in the original LLaVA/Croc repository layout (model_type={model_type!r}, mm_projector.*, "
            "model.mask_token). Convert it to the transformers `llava`/`croc` layout first; this trainer reads "
            f"model_type {CROC_MODEL_TYPES}."
        )
    if model_type not in CROC_MODEL_TYPES:
        raise ConfigError(
            f"{path} has model_type={model_type!r}; expected one of {CROC_MODEL_TYPES} (a previous Croc stage or a "
            "transformers llava checkpoint). For separate CLIP + LLM checkpoints use model.vision_tower and "
            "model.language_model in stage 1."
        )
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
        raise ConfigError(f"{path} has a config.json but no weights (*.safetensors)")


def check_model_source(stage: StageSpec, model: dict[str, Any]) -> None:
    """Exactly one model source, allowed for the stage, and local folders in the right layout."""
    separate = [key for key in ("vision_tower", "language_model") if model.get(key)]
    sources = (["name_or_path"] if model.get("name_or_path") else []) + (["vision_tower+language_model"]
                                                                        if separate else [])
    if len(separate) == 1:
        raise ConfigError(f"model.{separate[0]} is set without model.{({'vision_tower', 'language_model'} - set(separate)).pop()}")
    if len(sources) != 1:
        raise ConfigError(
            "give exactly one model source: model.name_or_path (previous stage / llava folder) "
            "or model.vision_tower + model.language_model (stage 1); got "
            + (", ".join(sources) if sources else "none")
        )
    if separate and stage.name != "1":
        raise ConfigError(
            f"stage {stage.name} continues a trained model: set model.name_or_path to the previous stage's folder "
            "(separate CLIP + LLM checkpoints only start stage 1)"
        )
    for key in ("name_or_path", *separate):
        value = model.get(key)
        if key == "name_or_path" and value and _looks_local(str(value)):
            check_checkpoint_layout(str(value))
        elif value and _looks_local(str(value)) and not Path(str(value)).expanduser().exists():
            raise ConfigError(f"model.{key}: {value} does not exist")


def check_peft(stage: StageSpec, model: dict[str, Any]) -> None:
    if model.get("load_in_4bit") and not model.get("use_peft"):
        raise ConfigError("model.load_in_4bit (QLoRA) needs model.use_peft=true")
    if model.get("use_peft") and "language_model" not in stage.trainable_parts:
        raise ConfigError(f"LoRA adapts the language model, which stage {stage.name} keeps frozen; use it in 1.5 or 2")
    if model.get("load_in_4bit"):
        if not gpu_available():
            raise ConfigError("QLoRA (model.load_in_4bit) needs a CUDA GPU; on CPU use LoRA (model.use_peft) alone")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError("QLoRA (model.load_in_4bit) needs `pip install bitsandbytes`")


def check_data(data: dict[str, Any]) -> None:
    path = data.get("path")
    if not path:
        raise ConfigError("data.path is required: a data_recipes build folder or a LLaVA-format JSON/JSONL file")
    location = Path(str(path)).expanduser()
    if not location.exists():
        raise ConfigError(f"data.path {path} does not exist")
    if location.is_dir() and not (location / "dataset_info.json").is_file():
        raise ConfigError(f"data.path {path} is a folder but not a datasets.save_to_disk build (no dataset_info.json)")
    if location.is_file() and location.suffix not in (".json", ".jsonl"):
        raise ConfigError(f"data.path {path}: expected a .json or .jsonl LLaVA-format file")
    root = data.get("image_root")
    if root and not Path(str(root)).expanduser().is_dir():
        raise ConfigError(f"data.image_root {root} does not exist")


def check_batch_size(training: dict[str, Any]) -> None:
    """`global_batch_size` must split exactly into per-device batch x processes x accumulation steps."""
    world = world_size_from_env()
    per_device = int(training.get("per_device_train_batch_size", 8))
    accumulation = training.get("gradient_accumulation_steps")
    total = training.get("global_batch_size")
    if total is None:
        return
    total = int(total)
    if total % (per_device * world):
        raise ConfigError(
            f"global_batch_size={total} does not divide by per_device_train_batch_size={per_device} x {world} "
            f"process(es); choose a per-device batch that divides {total // world if total % world == 0 else total}"
        )
    derived = total // (per_device * world)
    if accumulation is not None and int(accumulation) != derived:
        raise ConfigError(
            f"global_batch_size={total} != per_device_train_batch_size={per_device} x {world} process(es) x "
            f"gradient_accumulation_steps={accumulation}; drop gradient_accumulation_steps (it is derived: {derived})"
        )
    training["gradient_accumulation_steps"] = derived


def resolve_deepspeed_path(value: str) -> Path | None:
    """A DeepSpeed config path as given, or relative to the installed project (`trainer/configs/deepspeed/...`)."""
    for candidate in (Path(value).expanduser(), PACKAGE_ROOT / value):
        if candidate.is_file():
            return candidate
    return None


def check_deepspeed(training: dict[str, Any]) -> None:
    value = training.get("deepspeed")
    if not value or isinstance(value, dict):
        return
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("deepspeed is set but DeepSpeed is not installed: pip install 'croc-transformers[deepspeed]'")
    resolved = resolve_deepspeed_path(str(value))
    if resolved is None:
        raise ConfigError(f"deepspeed config {value} does not exist (the shipped ones: trainer/configs/deepspeed/)")
    training["deepspeed"] = str(resolved)


def check_template(training: dict[str, Any]) -> None:
    name = training.get("template")
    if name is None:
        return
    from .templates import TEMPLATES

    if name not in TEMPLATES:
        raise ConfigError(f"unknown template {name!r}; known: {', '.join(TEMPLATES)}")


def check_resume(training: dict[str, Any]) -> None:
    checkpoint = training.get("resume_from_checkpoint")
    if isinstance(checkpoint, str) and not Path(checkpoint).is_dir():
        raise ConfigError(f"resume_from_checkpoint {checkpoint} does not exist")


# `report_to` integrations and the module each needs.
REPORTING_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",),
                     "comet_ml": ("comet_ml",), "trackio": ("trackio",)}


def check_reporting(training: dict[str, Any]) -> None:
    """A logging integration that is not installed would only fail once the model is loaded."""
    targets = training.get("report_to") or []
    for target in [targets] if isinstance(targets, str) else targets:
        modules = REPORTING_MODULES.get(target)
        if modules and not any(importlib.util.find_spec(name) for name in modules):
            raise ConfigError(f"report_to={target!r} but {modules[0]} is not installed: pip install {modules[0]} "
                              "(or --report_to=none)")
