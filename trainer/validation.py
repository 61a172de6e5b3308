"""Checks of a training config against this machine: files and folders that must exist, packages that must be
installed, hardware a setting needs. They run before anything is loaded or computed.

What a value *means* is checked where it is declared (`CrocTrainingArguments.__post_init__`, `ModelArguments`,
`DataArguments`), so building the arguments from Python behaves as from YAML; the few checks that need two
sections at once are in `trainer.resolve`. Each check raises `ConfigError` saying what is wrong and what to do.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from data_recipes import recorded_image_root, unfinished_build
from modeling_croc.constants import HALF_DTYPES
from modeling_croc.loading import source_kind
from modeling_croc.model_folders import hub_model_problem, model_folder_problem, nothing_at, overlong_name
from modeling_croc.provenance import HUB_ID, LICENSE_ID, OTHER_LICENSE

from .checkpoint_io import is_complete_checkpoint
from .cli import ConfigError
from .eval_results import PartialEvaluationError, eval_results_from_lmms_eval, scored_model_note
from .output_lock import LOCK_FILE
from .run_record import RUN_RECORD, read_run_record

logger = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
# The source kinds of `modeling_croc.loading` a training run starts from; the released layout is converted first,
# since it needs its CLIP folder and a choice of vocabulary padding.
TRAINABLE_SOURCE_KINDS = ("croc", "llava")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-\d+$")


def gpu_available() -> bool:
    return torch.cuda.is_available()


def validate_environment(raw: dict[str, dict[str, Any]]) -> None:
    """Run every check on `raw` (as returned by `trainer.cli.load_raw_config`). It may complete the config with
    the resolved DeepSpeed config path."""
    training, model, data = raw["training"], raw["model"], raw["data"]
    check_home_folders(raw)
    check_name_lengths(raw)
    check_precision(training, model)
    check_half_precision_weights(training, model)
    check_model_folders(model)
    check_quantisation(model)
    check_data(data)
    check_deepspeed(training)
    check_accelerator_config(training)
    check_resume(training)
    check_reporting(training)
    check_kernels(training)
    check_hub(training, model)
    check_launch(training)


# The options that name a file or folder, by section.
PATH_OPTIONS = {"model": ("name_or_path", "vision_tower", "language_model"), "data": ("path", "image_root"),
                "training": ("output_dir", "hub_dry_run", "resume_from_checkpoint", "deepspeed",
                             "accelerator_config")}

def check_home_folders(raw: dict[str, dict[str, Any]]) -> None:
    """Refuse a path option starting `~user` for a user this machine does not know: every check that expands it
    raised `Path.expanduser`'s RuntimeError as a traceback (`resume_from_checkpoint`, `data.path`,
    `model.name_or_path`), and transformers keeps such an output_dir as written, a `./~user` folder."""
    for section, keys in PATH_OPTIONS.items():
        for key in keys:
            value = raw[section].get(key)
            if not isinstance(value, str) or not value.startswith("~"):
                continue
            try:
                Path(value).expanduser()
            except RuntimeError:
                name = key if section == "training" else f"{section}.{key}"
                raise ConfigError(f"{name} {value}: {Path(value).parts[0]} is the home folder of no user on this "
                                  "machine; give the folder's path") from None


def check_name_lengths(raw: dict[str, dict[str, Any]]) -> None:
    """Refuse a path option with a component over `NAME_MAX` bytes: every check that looks at it (`Path.exists()`
    among them) raised the operating system's "File name too long" as an OSError traceback."""
    for section, keys in PATH_OPTIONS.items():
        for key in keys:
            value = raw[section].get(key)
            if not isinstance(value, str) or value.startswith("{"):  # accelerator_config may be JSON text
                continue
            problem = overlong_name(value)
            if problem is not None:
                raise ConfigError(f"{key if section == 'training' else f'{section}.{key}'}: {problem}")


def check_precision(training: dict[str, Any], model: dict[str, Any]) -> None:
    """bf16/fp16 need a GPU: refuse them on a CPU-only machine instead of failing (or crawling) later."""
    if gpu_available():
        return
    # Every half-precision setting in one line: a GPU stage YAML run on a CPU sets both, and named one at a time
    # they took two attempts to clear.
    half = [f"{flag}=true" for flag in ("bf16", "fp16") if training.get(flag)]
    fixes = [f"--{flag}=false" for flag in ("bf16", "fp16") if training.get(flag)]
    if str(model.get("dtype", "float32")) in HALF_DTYPES:
        half.append(f"model.dtype={model['dtype']}")
        fixes.append("--model.dtype=float32")
    if half:
        raise ConfigError(f"{' and '.join(half)} but no CUDA GPU is visible. On CPU train in float32: pass "
                          f"{' '.join(fixes)} (the trainer/configs/cpu_tiny configs do).")


def check_half_precision_weights(training: dict[str, Any], model: dict[str, Any]) -> None:
    """Weights loaded in half precision train in float32 only where something keeps a float32 master copy of them:
    DeepSpeed's optimiser, or FSDP under mixed precision (accelerate upcasts them). Otherwise AdamW updates the
    bf16 / fp16 weights themselves, and a step smaller than half their rounding step (2e-5 against a weight of
    0.01 in bfloat16) is rounded away: the model silently stops learning. With fp16 the loss scaler refuses fp16
    gradients at the first step (a traceback)."""
    dtype = str(model.get("dtype", "float32"))
    if dtype not in HALF_DTYPES or training.get("deepspeed") or model.get("use_peft") or model.get("load_in_4bit"):
        # (LoRA trains float32 adapters over the frozen half-precision weights: PEFT upcasts them, and QLoRA's
        # `prepare_model_for_kbit_training` the rest.)
        return
    if training.get("fsdp") and (training.get("bf16") or training.get("fp16")):
        return
    raise ConfigError(f"model.dtype={dtype} without DeepSpeed trains the weights themselves in {dtype}, with no "
                      "float32 copy: optimiser steps smaller than their rounding step are lost, so the model silently "
                      "stops learning; load in float32 (--model.dtype=float32, with --bf16=true to compute in bf16; a run "
                      "started so resumes from its checkpoints in float32), or train under DeepSpeed "
                      "(trainer/configs/deepspeed/zero2.json, also on one GPU)")


def _looks_local(path: str) -> bool:
    """A path that exists, or whose parent folder exists, or that cannot be a Hub id, is meant as a local folder."""
    candidate = Path(path).expanduser()
    if candidate.exists() or path.startswith((".", "/", "~")) or not _HUB_ID.match(path):
        return True
    return candidate.parent != Path(".") and candidate.parent.exists()


def unfinished_run_problem(folder: Path, path: str) -> str | None:
    """Why the output folder of a run that has not finished (its run record says `running`: training now, stopped,
    preempted or killed; `merging`: a LoRA merge cut short) is no model to start a stage from, or None. Its top-level
    weights are an earlier end of that run (one extended with more steps) or none yet: a stage started from it
    trained from stale weights without a word. A checkpoint folder, which carries the record of its run as it was
    running, is a model of its step."""
    # A checkpoint by its name: the output folder of a run that finished once holds a trainer_state.json too.
    if _CHECKPOINT_NAME.match(folder.name) and is_complete_checkpoint(folder):
        return None
    record = read_run_record(folder)
    status = None if record is None else record.get("status")
    if status not in ("running", "merging"):
        return None
    weights = any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))
    held = " (its lock is held: it may be training now)" if (folder / LOCK_FILE).exists() else ""
    return (f"model folder {path} holds a run that has not finished: its {RUN_RECORD} says {status}{held}, so "
            + ("its weights are those of an earlier end of it, not of this run" if weights else "it holds no final "
               "weights yet")
            + "; finish that run (rerunning its command resumes it) and start from it then, or start from one of its "
            f"checkpoints (model.name_or_path={path}/checkpoint-N)")


def check_checkpoint_layout(path: str) -> None:
    """A local model folder must be a Croc folder (either family) or a transformers `llava` / `llava_onevision`
    folder, with weights."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():  # "does not exist" was untrue of a file (a weights file given)
        raise ConfigError(f"model folder {path} is a file: give the folder that holds config.json and the weights")
    if not folder.is_dir():
        raise ConfigError(f"model folder {path} does not exist")
    unfinished = unfinished_run_problem(folder, path)
    if unfinished is not None:
        raise ConfigError(unfinished)
    problem = model_folder_problem(folder)  # no config.json: a LoRA adapter folder (what merges it), or no model
    if problem is not None:
        raise ConfigError(problem)
    try:
        kind = source_kind(folder)
    except ValueError as error:
        raise ConfigError(
            f"{error}. For separate CLIP + LLM "
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
    """Local model folders must exist and be in a layout the trainer reads; a Hub id must be readable from here."""
    for key in ("name_or_path", "vision_tower", "language_model"):
        value = model.get(key)
        if key == "name_or_path" and value and _looks_local(str(value)):
            check_checkpoint_layout(str(value))
        elif value and _looks_local(str(value)) and not Path(str(value)).expanduser().exists():
            raise ConfigError(f"model.{key}: {value} does not exist")
        elif value and not _looks_local(str(value)):
            check_hub_model(key, str(value))


def check_hub_model(key: str, value: str) -> None:
    """`value` is no local folder and reads as a Hub id: one line now when it cannot be had here
    (`modeling_croc.model_folders.hub_model_problem`; a local folder not made yet, `outputs/croc-vicuna-7b-stage1`
    before stage 1 ran, among them), not huggingface_hub's traceback once the processor loads."""
    why = hub_model_problem(value)
    if why is not None:
        raise ConfigError(f"model.{key}: {value} is no local folder ({nothing_at(value)}) and, as a Hub id, {why}")


def check_quantisation(model: dict[str, Any]) -> None:
    """QLoRA needs a CUDA GPU and bitsandbytes."""
    if model.get("load_in_4bit") and not isinstance(model["load_in_4bit"], list | dict):  # (the type check says)
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
    for key in ("path", "image_root"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ConfigError(f"data.{key} must be a string (a path{' or a Hub dataset id' if key == 'path' else ''}), "
                              f"got {data[key]!r}")
    location = Path(str(path)).expanduser()
    if not location.exists():
        if not _looks_local(str(path)):
            return  # a Hub dataset id: `datasets.load_dataset` fetches it when training starts
        raise ConfigError(f"data.path {path} does not exist")
    # A build's own rows file (`data.jsonl`) is a LLaVA file the trainer takes too: one a stopped build left holds
    # the rows written so far, every line whole.
    build = location if location.is_dir() else location.parent
    if unfinished_build(build):
        what = "is" if build == location else f"is in {build},"
        raise ConfigError(f"data.path {path} {what} a data_recipes build that stopped before its end (its "
                          "summary.json says building): rerun the build command with --overwrite")
    if location.is_dir() and not is_saved_build(location) and not any(location.rglob("*.parquet")):
        raise ConfigError(f"data.path {path} is a folder but neither a datasets.save_to_disk build (dataset_info.json "
                          "and state.json) nor a dataset of Parquet files (a pushed dataset's layout)")
    if location.is_file() and location.suffix.lower() not in (".json", ".jsonl"):
        raise ConfigError(f"data.path {path}: expected a .json or .jsonl LLaVA-format file")
    root = data.get("image_root")
    if root and Path(str(root)).expanduser().exists() and not Path(str(root)).expanduser().is_dir():
        # "does not exist" was untrue of a file (an image or the data file given in place of its folder)
        raise ConfigError(f"data.image_root {root} is a file: give the folder the rows' image paths are relative to")
    if root and not Path(str(root)).expanduser().is_dir():
        raise ConfigError(f"data.image_root {root} does not exist")
    # A build's own `data.jsonl` is read under the image root its build recorded too (`trainer.data_loading`): a root
    # since moved or deleted rejected every image row as missing_image after all were checked, the message then
    # offering max_reject_fraction instead of data.image_root.
    if (location.is_dir() or location.name == "data.jsonl") and not root:
        recorded = recorded_image_root(build)
        if recorded and not Path(recorded).is_dir():
            # Builds made before image roots were recorded absolute name them relative to where they ran.
            what = "" if build == location else f" (the rows file of the build {build})"
            raise ConfigError(f"data.path {path}{what} records the image root {recorded}, which does not exist from "
                              f"{Path.cwd()}; pass --data.image_root=FOLDER (or rebuild: builds now record "
                              "absolute roots)")


def resolve_deepspeed_path(value: str) -> Path | None:
    """A DeepSpeed config path as given, or relative to the installed project (`trainer/configs/deepspeed/...`)."""
    for candidate in (Path(value).expanduser(), PACKAGE_ROOT / value):
        if candidate.is_file():
            return candidate
    return None


# DeepSpeed config sections that are JSON objects: transformers reads into them with `.get` while building the
# arguments, so `"bf16": true` or `"zero_optimization": 2` ended the run with an AttributeError traceback.
DEEPSPEED_OBJECT_SECTIONS = ("zero_optimization", "zero_optimization.offload_optimizer",
                             "zero_optimization.offload_param", "bf16", "fp16", "optimizer", "scheduler")


def check_deepspeed_sections(config: dict[str, Any], where: str) -> None:
    for path in DEEPSPEED_OBJECT_SECTIONS:
        node: Any = config
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None and not isinstance(node, dict):
            raise ConfigError(f"{where}: {path} must be a JSON object (e.g. \"bf16\": {{\"enabled\": true}}, "
                              f"\"zero_optimization\": {{\"stage\": 2}}), got {node!r}")


def check_deepspeed(training: dict[str, Any]) -> None:
    value = training.get("deepspeed")
    if isinstance(value, dict):
        check_deepspeed_sections(value, "the inline deepspeed config")
    if not value or isinstance(value, dict):
        return
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("deepspeed is set but DeepSpeed is not installed: pip install 'croc-transformers[deepspeed]'")
    resolved = resolve_deepspeed_path(str(value))
    if resolved is None:
        raise ConfigError(f"deepspeed config {value} does not exist (the shipped ones: trainer/configs/deepspeed/)")
    try:
        config = json.loads(resolved.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConfigError(f"deepspeed config {resolved}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})") \
            from None
    if not isinstance(config, dict):
        raise ConfigError(f"deepspeed config {resolved}: the top level must be a JSON object")
    check_deepspeed_sections(config, f"deepspeed config {resolved}")
    training["deepspeed"] = str(resolved)


def check_accelerator_config(training: dict[str, Any]) -> None:
    """`accelerator_config` given as text is JSON text (it starts with `{`) or names a JSON file, both of which
    `TrainingArguments.__post_init__` reads: a missing file (or a folder) ended the run with its FileNotFoundError
    traceback, malformed JSON with a JSON error naming no key."""
    value = training.get("accelerator_config")
    if not isinstance(value, str):
        return  # a mapping, or a value of the wrong type: refused with the other field types
    if value.startswith("{"):  # transformers' own test for JSON text (a quoted mapping in the YAML)
        where, text = "accelerator_config", value
    else:
        path = Path(value).expanduser()
        if not value.strip() or not path.is_file():
            raise ConfigError(f"accelerator_config {value!r} is no file; give a JSON file of accelerate's "
                              "AcceleratorConfig, or a mapping such as {split_batches: false}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError(f"accelerator_config {path}: not valid JSON ({error})") from None
        # transformers opens the path as given, and `~` is no folder to it: the path the check read is the one used.
        where, training["accelerator_config"] = f"accelerator_config {path}", str(path)
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{where}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: the top level must be a JSON object")


def check_resume(training: dict[str, Any]) -> None:
    checkpoint = training.get("resume_from_checkpoint")
    if isinstance(checkpoint, str) and not checkpoint.strip():  # Path("") is the working directory
        raise ConfigError("resume_from_checkpoint is empty (an unset variable in the command?); name a folder")
    if isinstance(checkpoint, str) and checkpoint.startswith("~"):
        # `--resume_from_checkpoint=~/run/checkpoint-4` (no shell expands a `~` after `=`) was refused as not
        # existing, while output_dir, data.path and model.name_or_path take a `~`: the expanded path is the one used.
        checkpoint = training["resume_from_checkpoint"] = str(Path(checkpoint).expanduser())
    if isinstance(checkpoint, str) and not Path(checkpoint).exists():
        raise ConfigError(f"resume_from_checkpoint {checkpoint} does not exist")
    if isinstance(checkpoint, str) and not Path(checkpoint).is_dir():
        raise ConfigError(f"resume_from_checkpoint {checkpoint} is a file, not a checkpoint folder; name the "
                          "checkpoint-N folder")
    if isinstance(checkpoint, str) and not is_complete_checkpoint(checkpoint):
        raise ConfigError(f"resume_from_checkpoint {checkpoint} is incomplete (no readable trainer_state.json: its "
                          "save was interrupted); name an earlier checkpoint, or leave the option out to resume from "
                          "the newest complete one")


# pip packages of the `report_to` integrations whose name differs from the integration's.
REPORTING_PACKAGES = {"azure_ml": "azureml-core", "comet_ml": "comet-ml", "flyte": "flytekit"}


def check_reporting(training: dict[str, Any]) -> None:
    """Every `report_to` integration is one transformers has, and is installed: either would otherwise only fail
    once the model is loaded (the Trainer builds its callbacks last)."""
    from transformers.integrations import INTEGRATION_TO_CALLBACK, get_available_reporting_integrations

    targets = training.get("report_to") or []
    targets = [targets] if isinstance(targets, str) else targets
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets) or targets in (["all"], ["none"]):
        return  # a value of the wrong type is refused with the other field types
    both = sorted({"none", "all"} & set(targets))
    if both:  # each stands for the whole list: "not an integration transformers has" named a valid value
        raise ConfigError(f"report_to={targets}: {both[0]} stands for the whole list and cannot be listed with other "
                          f"integrations; give report_to={both[0]}, or the integrations alone")
    installed = get_available_reporting_integrations()
    for target in targets:
        if target not in INTEGRATION_TO_CALLBACK:
            raise ConfigError(f"report_to={target!r} is not an integration transformers has; use none, all or any "
                              f"of {', '.join(sorted(INTEGRATION_TO_CALLBACK))}")
        if target not in installed:
            package = REPORTING_PACKAGES.get(target, target)
            raise ConfigError(f"report_to={target!r} but {package} is not installed: pip install {package} "
                              "(or --report_to=none)")


def check_kernels(training: dict[str, Any]) -> None:
    """What `use_liger_kernel` needs: a CUDA GPU (Liger's kernels are Triton's; on the CPU the first step would fail
    inside Triton) and its package."""
    from transformers.utils import is_liger_kernel_available

    if not training.get("use_liger_kernel"):
        return
    if training.get("use_cpu") or not gpu_available():
        where = "use_cpu=true" if training.get("use_cpu") else "no CUDA GPU is visible"
        raise ConfigError(f"use_liger_kernel=true needs a CUDA GPU (Liger's kernels are Triton kernels), but {where}; "
                          "use --use_liger_kernel=false")
    if not is_liger_kernel_available():
        raise ConfigError("use_liger_kernel=true but liger-kernel is not installed: pip install liger-kernel (or "
                          "--use_liger_kernel=false)")


def check_hub(training: dict[str, Any], model: dict[str, Any] | None = None) -> None:
    """What the Hub options need from this machine: the network for `push_to_hub` (the Trainer creates the
    repository when it is built, right after the model loads) and the lmms-eval results the model card reports
    (read at the very end); and what the card check (`trainer.model_card.check_card`, run when every run writes its
    card, after training) refuses in the card's options. The publish folder and the token are
    `trainer.hub.check_publishing_arguments`'."""
    from huggingface_hub import is_offline_mode

    if training.get("push_to_hub") and not training.get("hub_dry_run") and is_offline_mode():
        raise ConfigError("push_to_hub=true but the Hub is offline here (HF_HUB_OFFLINE=1): unset HF_HUB_OFFLINE, or "
                          "write the upload to a folder with --hub_dry_run=DIR")
    results = training.get("hub_eval_results") or []
    for path in results if isinstance(results, list) else []:
        if not Path(str(path)).expanduser().is_file():
            raise ConfigError(f"hub_eval_results: {path} does not exist (an lmms-eval *_results.json file)")
        try:  # read as the card reads it after training, so a file it would refuse then is refused now
            eval_results_from_lmms_eval(Path(str(path)).expanduser())
        except PartialEvaluationError as error:
            raise ConfigError(f"hub_eval_results: {error}") from None
        except (OSError, ValueError):
            raise ConfigError(f"hub_eval_results: {path} is not an lmms-eval results file (a JSON object with "
                              "\"results\": task -> metrics)") from None
        try:  # the model it scored: this run's (output_dir, by name or an export of it), not another's
            note = scored_model_note(training.get("output_dir") or ".", Path(str(path)).expanduser(),
                                     name=training.get("hub_model_id"))
        except ValueError as error:
            raise ConfigError(f"hub_eval_results: {error}") from None
        if note is not None:  # taken on a weaker word than the weights: said, as `python -m trainer.model_card` says it
            logger.warning("hub_eval_results: %s", note)
    if isinstance(results, list) and results:
        # The card opens them as given, after training, and `~` is no folder to it: the files checked are the ones read.
        training["hub_eval_results"] = [str(Path(str(path)).expanduser()) for path in results]
    # Checked here, not after hours of training: the card is written (and checked) at the end of every run.
    license_id = training.get("hub_license")
    if license_id is not None and (not isinstance(license_id, str) or not LICENSE_ID.match(license_id)
                                   or license_id == OTHER_LICENSE):
        raise ConfigError(f"hub_license={license_id!r} is not a Hub licence id: use the lower-case id (apache-2.0, mit, "
                          "llama2, cc-by-4.0, ...); `other` needs a name and link no option gives")
    for key, values in (("hub_datasets", training.get("hub_datasets")),
                        ("model.base_models", (model or {}).get("base_models"))):
        # A value of another type (`--hub_datasets=5`) is the field type check's to refuse, in one line: iterating
        # it here ended in a TypeError traceback.
        for value in [values] if isinstance(values, str) else values if isinstance(values, list) else []:
            if not HUB_ID.match(str(value)):
                raise ConfigError(f"{key} entry {value!r} is not a Hub id (NAME or OWNER/NAME): the model card names "
                                  "base models and datasets as the Hub does, never by a local path")


def check_launch(training: dict[str, Any]) -> None:
    """`ddp_backend` names the process group of a launched multi-process run; in a process no launcher started,
    accelerate fails on it with "Default process group has not been initialized"."""
    backend = training.get("ddp_backend")
    if backend and "WORLD_SIZE" not in os.environ:
        raise ConfigError(f"ddp_backend={backend} sets the process group of a multi-process run, but no launcher "
                          "started this process; launch it with torchrun or accelerate launch, or drop ddp_backend")


def flash_attention_installed(attn_implementation: str) -> bool:
    """Whether transformers finds a FlashAttention backend's code here: the flash-attn package of that version, or
    the `kernels` package, from which it then takes a Hub build instead (and which a Hub kernel name needs)."""
    from transformers.modeling_flash_attention_utils import FLASH_ATTENTION_COMPATIBILITY_MATRIX
    from transformers.utils import is_kernels_available

    version = re.fullmatch(r"flash_attention_(\d+)", attn_implementation)
    package = FLASH_ATTENTION_COMPATIBILITY_MATRIX.get(int(version[1])) if version else None
    return bool(package and package["pkg_availability_check"]()) or is_kernels_available()


def check_attention_backend(attn_implementation: str, use_cpu: bool) -> None:
    """FlashAttention (flash_attention_2/3/4 or a flash Hub kernel) runs on a CUDA GPU with its package installed,
    and FlexAttention trains on a GPU only: transformers would say so while loading the model, PyTorch in the first
    step. Run by `trainer.argument_checks.check_arguments`, after the stage's own attention rules."""
    from transformers.utils.generic import is_flash_attention_requested

    on_cpu = use_cpu or not gpu_available()
    if attn_implementation == "flex_attention" and on_cpu:
        raise ConfigError("model.attn_implementation=flex_attention cannot train on the CPU (PyTorch's FlexAttention "
                          "has no CPU backward pass); use --model.attn_implementation=sdpa")
    if not is_flash_attention_requested(requested_attention_implementation=attn_implementation):
        return
    if on_cpu:
        where = "use_cpu=true" if use_cpu else "no CUDA GPU is visible"
        raise ConfigError(f"model.attn_implementation={attn_implementation} needs a CUDA GPU, but {where}; use "
                          "--model.attn_implementation=sdpa")
    if not flash_attention_installed(attn_implementation):
        raise ConfigError(f"model.attn_implementation={attn_implementation} but neither flash-attn nor kernels is "
                          "installed: pip install flash-attn (or use --model.attn_implementation=sdpa)")
