"""Checks of a training config against this machine: files and folders that must exist, packages that must be
installed, hardware a setting needs. They run before anything is loaded or computed.

What a value *means* is checked where it is declared (`CrocTrainingArguments.__post_init__`, `ModelArguments`,
`DataArguments`), so building the arguments from Python behaves as from YAML; the few checks that need two
sections at once are in `trainer.resolve`. Each check raises `ConfigError` saying what is wrong and what to do.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import torch

from data_recipes import recorded_image_root
from modeling_croc.loading import source_kind

from .checkpoint_io import is_complete_checkpoint
from .cli import ConfigError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
# The source kinds of `modeling_croc.loading` a training run starts from; the released layout is converted first,
# since it needs its CLIP folder and a choice of vocabulary padding.
TRAINABLE_SOURCE_KINDS = ("croc", "llava")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def gpu_available() -> bool:
    return torch.cuda.is_available()


def validate_environment(raw: dict[str, dict[str, Any]]) -> None:
    """Run every check on `raw` (as returned by `trainer.cli.load_raw_config`). It may complete the config with
    the resolved DeepSpeed config path."""
    training, model, data = raw["training"], raw["model"], raw["data"]
    check_precision(training, model)
    check_model_folders(model)
    check_quantisation(model)
    check_data(data)
    check_deepspeed(training)
    check_resume(training)
    check_reporting(training)


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


def _looks_local(path: str) -> bool:
    """A path that exists, or whose parent folder exists, or that cannot be a Hub id, is meant as a local folder."""
    candidate = Path(path).expanduser()
    if candidate.exists() or path.startswith((".", "/", "~")) or not _HUB_ID.match(path):
        return True
    return candidate.parent != Path(".") and candidate.parent.exists()


def check_checkpoint_layout(path: str) -> None:
    """A local model folder must be a Croc folder (either family) or a transformers `llava` / `llava_onevision`
    folder, with weights."""
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
    try:
        kind = source_kind(folder)
    except ValueError as error:
        raise ConfigError(
            f"{error} (a previous Croc stage or a transformers llava checkpoint). For separate CLIP + LLM "
            "checkpoints use model.vision_tower and model.language_model in stage 1."
        ) from None
    if kind == "victor":
        raise ConfigError(
            f"{path} is in ViCToR's LLaVA-NeXT fork layout (llava_qwen: mm_projector.*, model.token_pool). Convert "
            "it first: python -m modeling_croc.convert from-victor SRC OUT --vision-tower SIGLIP_DIR"
        )
    if kind not in TRAINABLE_SOURCE_KINDS:
        raise ConfigError(
            f"{path} is in the original LLaVA/Croc repository layout (mm_projector.*, model.mask_token). Convert it "
            "first: python -m modeling_croc.convert from-original SRC OUT --vision-tower CLIP_DIR"
        )
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
        raise ConfigError(f"{path} has a config.json but no weights (*.safetensors)")


def check_model_folders(model: dict[str, Any]) -> None:
    """Local model folders must exist and be in a layout the trainer reads."""
    for key in ("name_or_path", "vision_tower", "language_model"):
        value = model.get(key)
        if key == "name_or_path" and value and _looks_local(str(value)):
            check_checkpoint_layout(str(value))
        elif value and _looks_local(str(value)) and not Path(str(value)).expanduser().exists():
            raise ConfigError(f"model.{key}: {value} does not exist")


def check_quantisation(model: dict[str, Any]) -> None:
    """QLoRA needs a CUDA GPU and bitsandbytes."""
    if model.get("load_in_4bit"):
        if not gpu_available():
            raise ConfigError("QLoRA (model.load_in_4bit) needs a CUDA GPU; on CPU use LoRA (model.use_peft) alone")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError("QLoRA (model.load_in_4bit) needs `pip install bitsandbytes`")


def is_saved_build(path: Path) -> bool:
    """A folder written by `Dataset.save_to_disk` (a data_recipes build): what the trainer reads with
    `load_from_disk`; every other data folder is read with `load_dataset`."""
    return (path / "dataset_info.json").is_file() and (path / "state.json").is_file()


def check_data(data: dict[str, Any]) -> None:
    path = data.get("path")
    if not path:
        raise ConfigError("data.path is required: a data_recipes build folder, a pushed dataset (Hub id or its local "
                          "folder) or a LLaVA-format JSON/JSONL file")
    location = Path(str(path)).expanduser()
    if not location.exists():
        if not _looks_local(str(path)):
            return  # a Hub dataset id: `datasets.load_dataset` fetches it when training starts
        raise ConfigError(f"data.path {path} does not exist")
    if location.is_dir() and not is_saved_build(location) and not any(location.rglob("*.parquet")):
        raise ConfigError(f"data.path {path} is a folder but neither a datasets.save_to_disk build (dataset_info.json "
                          "and state.json) nor a dataset of Parquet files (a pushed dataset's layout)")
    if location.is_file() and location.suffix not in (".json", ".jsonl"):
        raise ConfigError(f"data.path {path}: expected a .json or .jsonl LLaVA-format file")
    root = data.get("image_root")
    if root and not Path(str(root)).expanduser().is_dir():
        raise ConfigError(f"data.image_root {root} does not exist")
    if location.is_dir() and not root:
        recorded = recorded_image_root(location)
        if recorded and not Path(recorded).is_dir():
            # Builds made before image roots were recorded absolute name them relative to where they ran.
            raise ConfigError(f"data.path {path} records the image root {recorded}, which does not exist from "
                              f"{Path.cwd()}; pass --data.image_root=FOLDER (or rebuild: builds now record "
                              "absolute roots)")


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


def check_resume(training: dict[str, Any]) -> None:
    checkpoint = training.get("resume_from_checkpoint")
    if isinstance(checkpoint, str) and not Path(checkpoint).is_dir():
        raise ConfigError(f"resume_from_checkpoint {checkpoint} does not exist")
    if isinstance(checkpoint, str) and not is_complete_checkpoint(checkpoint):
        raise ConfigError(f"resume_from_checkpoint {checkpoint} is incomplete (no readable trainer_state.json: its "
                          "save was interrupted); name an earlier checkpoint, or leave the option out to resume from "
                          "the newest complete one")


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
