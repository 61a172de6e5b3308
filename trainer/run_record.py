"""What a run is, recorded in every checkpoint, so that a resume is exact or refused.

`transformers.Trainer` resumes whatever the command line now says: a changed learning rate is logged but the
checkpoint's scheduler state wins (its `base_lrs`), a changed weight decay or beta is overwritten by the optimiser
state it loads, and a changed stage, preset or pool size fails with a traceback after the model has loaded. Here
every checkpoint carries `RUN_RECORD`, the values that decide what a run computes (the stage, the Croc config the
model is built with, the rows and their order, the batch, the optimiser and its schedule), and a resume compares
them with the values it would run with, before the model loads:

* a change the run cannot continue from (`FIXED`: the stage, the model, the data, the batch, what trains, the seed)
  is refused with one line listing the differences;
* a change to the optimiser or its schedule (`ADJUSTABLE`) is refused as well, unless named in
  `resume_accept_changes`: then the new values take effect from the resumed step on (`ApplyAcceptedChanges`: the
  optimiser keeps its moments, the schedule continues at its step with the new peak rates); so is a change of what
  the run reads from its model source besides config.json and the weights (`PROCESSOR`: the tokenizer, the image
  processor and the processor's settings, the chat template), which a resume reads from there again;
* everything else (logging, saving, evaluation, workers, the Hub, packing, gradient checkpointing: nothing that
  changes the numbers) may change freely.

The record is also written into the final folder, so a later run pointed at a finished `output_dir` with another
configuration is refused instead of overwriting the model.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from modeling_croc.constants import HALF_DTYPES

from .fingerprints import (
    PROCESSOR,
    canonical,
    describe_processor_change,
    processor_fingerprint,
    rows_fingerprint,
    short_digest,
    weights_fingerprint,
)
from .stages import PARAMETER_GROUPS

logger = logging.getLogger(__name__)

RUN_RECORD = "croc_run.json"
RECORD_FORMAT = 1
# What a training step computes, versioned: a change to it that no configuration key shows (a fix) gets a new
# version and its line here, and a resume from a checkpoint of an earlier version says what differs from the
# resumed step on (`computation_changes`). A record without the key is version 1.
COMPUTATION = 7
# Each version's changes, as (what changed, whether a run of that record computed it): a change is named only to the
# runs it touches (masks are drawn in stage 1.5 only; Gemma 3's and Mistral 3's changes concern those families), so a
# stage-2 LLaVA run resumed across the upgrade is not told it now leaves its curve.
COMPUTATION_CHANGES: dict[int, tuple[tuple[str, Callable[[dict[str, Any]], bool]], ...]] = {
    2: (("the masks of images with different token counts (one uniform per visual token: the earlier draw reused "
         "uniforms across micro-batches and processes)", lambda saved: saved.get("stage") == "1.5"),
        ("Gemma 3's bidirectional image blocks under croc_split in stages 1 and 2",
         lambda saved: _model_type(saved) in (None, "croc_gemma3") and saved.get("stage") in ("1", "2")),
        ("Mistral 3 images bounded to fit the pool in stage 1.5",
         lambda saved: _model_type(saved) in (None, "croc_mistral3") and saved.get("stage") == "1.5"),
        ("packed rows matched per sample under matching_scope=row (packing had made a row's samples one Hungarian "
         "problem; an unpacked run is unchanged)",
         lambda saved: saved.get("stage") == "1.5" and _matches_per_row(saved))),
    3: (("keep_floor's masked count of a mask_ratio whose kept share is not exact in binary (1 - 0.9 counted as "
         "0.0999...: a 10-token image had all its tokens masked)",
         lambda saved: saved.get("stage") == "1.5" and _inexact_keep_floor(saved)),),
    4: (("QLoRA's vision tower and projector in full precision (transformers matched none of their names in the "
         "skip list, so they were loaded in 4 bits)",
         lambda saved: isinstance(saved.get("lora"), dict) and saved["lora"].get("load_in_4bit") is True),),
    5: (("Qwen2.5-VL's and Qwen3-VL's losses averaged over the tokens of the whole optimiser step (each micro-batch's "
         "own mean was averaged, so a step split into several micro-batches or processes computed another loss)",
         lambda saved: _model_type(saved) in (None, "croc_qwen2_5_vl", "croc_qwen3_vl")),),
    # The template is recorded by name, and these change what the name renders: without a version here a run
    # resumed across the change went on, unsaid, on other tokens.
    6: (("Gemma 4's image block between blank lines, as its checkpoints' chat template writes it (training wrote "
         "the image right before the text)", lambda saved: saved.get("template") == "gemma4"),
        ("every turn's text trimmed, as the chat template trims it (the surrounding whitespace of answers, of text "
         "turns and of the first user turn of an image row whose marker sits in a later turn was trained)",
         lambda saved: saved.get("template") in ("gemma3", "gemma4"))),
    7: (("rows whose <image> marker sits in a later question, if any, with the image at the front of that question, "
         "as LLaVA's preprocess_multimodal keeps it (it was moved to the first question)",
         lambda saved: saved.get("stage") in (None, "1.5", "2")),),
}


def _inexact_keep_floor(saved: dict[str, Any]) -> bool:
    """Whether the recorded run counted its masked tokens with `keep_floor` at a ratio whose count computation 3
    changes: the float kept share `1 - r` below the share as written (1 - 0.9 is 0.0999...: a bare floor kept one
    token fewer), or a ratio with more decimals than the count rounds to. A share the float gives exactly (0.75's
    0.25, the presets') or a little above (1 - 0.6 is 0.4000...0002) floored to the same counts: not told."""
    from fractions import Fraction

    from modeling_croc.configuration_croc import KEPT_DECIMALS

    config = saved.get("croc_config")
    if not isinstance(config, dict):
        return True
    ratio = config.get("mask_ratio")
    if config.get("mask_rounding") != "keep_floor" or not isinstance(ratio, int | float):
        return False
    written = 1 - Fraction(str(ratio))
    return Fraction(1.0 - ratio) < written or (10**KEPT_DECIMALS * written).denominator != 1


def _matches_per_row(saved: dict[str, Any]) -> bool:
    """Whether the recorded run matched per row (`matching_scope` row, or unset under ViCToR's preset, whose it is)."""
    config = saved.get("croc_config")
    if not isinstance(config, dict):
        return True
    scope = config.get("matching_scope")
    return scope == "row" or (scope is None and config.get("croc_preset") == "victor")


def _model_type(saved: dict[str, Any]) -> Any:
    """The recorded model's Croc model_type; None where the record holds no config (a family's change is then named)."""
    config = saved.get("croc_config")
    return config.get("model_type") if isinstance(config, dict) else None


# Keys of the record a resume cannot change: the run would no longer be the one its checkpoint continues.
FIXED: dict[str, str] = {
    "stage": "the stage",
    "croc_config": "the model's Croc config (preset fields, pool size, masking, VTR)",
    "model_config": "the model architecture",
    "data_rows": "the training rows (count and ids, in order)",
    "global_batch_size": "the global batch",
    "per_device_split": "the per-device batch of a run whose step depends on how it is split (stage 1.5's token masks "
                        "under group_by_modality_length, whose sampler deals a step's rows by it; noise or dropout "
                        "drawn per micro-batch; a mixture of experts' router loss, each micro-batch's own)",
    "epoch_rows": "the rows an epoch trains (on several processes an epoch's last round of device batches is filled "
                  "with its first rows again, so another number of processes or per-device batch trains other rows "
                  "in each epoch's last step)",
    "trainable_parts": "what trains",
    "seed": "the seed",
    "data_seed": "the data seed",
    "group_by_modality_length": "the sampler",
    "train_sampling_strategy": "the sampler when group_by_modality_length is off (random or sequential)",
    "model_max_length": "model_max_length",
    "template": "the conversation template",
    "image_aspect_ratio": "the image aspect ratio",
    "dtype": "the weights' dtype",
    "mixed_precision": "bf16 / fp16",
    "lora": "the LoRA settings",
    "lora_base_weights": "the weights LoRA adapts (a LoRA checkpoint holds the adapters and the parts trained whole, "
                         "not them: they load from model.name_or_path again)",
    "start_weights": "the weights the run started from (model.name_or_path): from another parent folder it trains "
                     "another model",
    "deepspeed_zero_stage": "the ZeRO stage (its checkpoints differ in layout)",
    "deepspeed_processes": "the number of processes under DeepSpeed (its shards are partitioned per process)",
    "random_stream_processes": "the number of processes of a run that draws dropout or noise (LoRA dropout, NEFTune) "
                               "from each process's random stream, saved per process (rng_state_<rank>.pth): "
                               "another count restores none of them",
    "optim": "the optimiser (its state does not load into another)",
    "neftune_noise_alpha": "NEFTune noise",
    "average_tokens_across_devices": "how the loss is averaged over processes",
    "image_limits": "the image limits (which images training replaces)",
}
# Keys a resume may change when the user says so (`resume_accept_changes`): they take effect from the resumed step.
# `learning_rate` is not one: it reaches a parameter only as the rate of a part without one of its own, and every
# part's rate is recorded and compared as its `*_lr`; compared itself, a value no part used (a run started with
# `--learning_rate=2e-5` before such values were refused) would block the upgraded run's resume with it and without.
ADJUSTABLE: tuple[str, ...] = (
    *(f"{group}_lr" for group in PARAMETER_GROUPS), "lr_scheduler_type", "lr_scheduler_kwargs",
    "warmup_steps", "max_steps", "num_train_epochs", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
    "max_grad_norm", PROCESSOR,
)
# Config entries that name where things are, not what they are.
_VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "prompt_pool_calibrated", "architectures",
                         "auto_map", "dtype", "torch_dtype", "_attn_implementation_autoset", "attn_implementation")


def _without_volatile(config: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if key in _VOLATILE_CONFIG_KEYS:
            continue
        out[key] = _without_volatile(value) if isinstance(value, dict) else value
    return out


def zero_stage(deepspeed: Any) -> Any:
    """The ZeRO stage of a DeepSpeed config (a path or a dict), None without DeepSpeed."""
    if not deepspeed:
        return None
    config = deepspeed if isinstance(deepspeed, dict) else json.loads(Path(deepspeed).read_text(encoding="utf-8"))
    return config.get("zero_optimization", {}).get("stage", 0)  # checked to be 0-3 before (argument_checks)


def croc_config_dict(model_args, args) -> dict[str, Any] | None:
    """The Croc config the run's model is built with (its config.json, the preset, the stage, the overrides), read
    from config.json alone; None where there is none to read before loading (an uncached Hub id)."""
    from modeling_croc.loading import read_croc_config

    if model_args.name_or_path:
        config = read_croc_config(model_args.name_or_path, croc_fields=args.croc_fields)
        return None if config is None else config.to_dict()
    config = read_croc_config(vision_tower=model_args.vision_tower, croc_fields=args.croc_fields)
    if config is None:
        return None
    # Built from parts: the language model's own config stands for the text side.
    from transformers import AutoConfig

    from modeling_croc.loading import local_folder

    try:
        text_config = AutoConfig.from_pretrained(local_folder(model_args.language_model)).to_dict()
    except (OSError, ValueError):
        text_config = {"name": str(model_args.language_model)}
    return {**config.to_dict(), "text_config": text_config}


# The rows the start check rejected, `{reason: [index of the row as read, ...]}`: a resume rejects the same ones (a
# row kept then whose image is gone since is replaced in training, as it would have been mid-run), so the rows it
# trains on are the interrupted run's. Not compared: `data_rows` is.
START_REJECTIONS = "start_rejections"
# How the rows the start check kept fit model_max_length (`trainer.data_loading._compact`: the rows cut and rejected
# by index, the count left to their images) and the digests of what that was decided from: a start whose inputs have
# the same digests takes them instead of tokenising every row again. Not compared: `data_rows` is.
FIT_VERDICTS = "fit_verdicts"


def _draws_per_process(model_args, args, config: dict[str, Any]) -> bool:
    """Whether a step draws from each process's own random stream (dropout, noise), which the Trainer saves per
    process: LoRA dropout, NEFTune, the `bert` VTR head's dropout (stage 1.5), or any dropout of the language model or tower."""
    if (model_args.use_peft and model_args.lora_dropout) or args.neftune_noise_alpha:
        return True
    if args.stage == "1.5" and config.get("vtr_head") == "bert" and config.get("vtr_head_dropout"):
        return True  # the head runs in stage 1.5 only
    return any(isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
               for part in ("text_config", "vision_config") for key, value in (config.get(part) or {}).items()
               if "dropout" in key)


def _router_loss(config: dict[str, Any]) -> bool:
    """Whether the model adds a mixture of experts' router load-balancing loss (Qwen3-VL-MoE and Qwen3.5-MoE with
    `output_router_logits`, read from their text config as the parent reads it): each micro-batch's term is a product of
    two means over its own tokens, so it is no sum that another split of the step adds up to the same."""
    text = config.get("text_config") or {}
    return bool(text.get("output_router_logits")) and bool(text.get("router_aux_loss_coef"))


def _split_dependent(model_args, args, config: dict[str, Any]) -> bool:
    """Whether a step computes differently when the same global batch is split into other per-device batches.
    The modality sampler deals a step's rows into device batches by length, so another split puts other images at
    each position of the step's mask stream (`trainer.croc_rng` keys an image's mask by its position); noise and
    dropout are drawn per micro-batch, in its shape; a router loss is each micro-batch's own. Without any of them,
    only the summation order changes."""
    masks = args.stage == "1.5" and args.group_by_modality_length
    return masks or _draws_per_process(model_args, args, config) or _router_loss(config)


def _epoch_rows(args, num_rows: int) -> int | None:
    """The rows one epoch trains, repeats included: on several processes accelerate fills the epoch's last round of
    `per_device x processes` rows with the epoch's first rows (one process trains a short last step instead). None
    under `group_by_modality_length`, whose sampler pads each modality to whole steps itself."""
    if args.group_by_modality_length:
        return None
    round_rows = args.per_device_train_batch_size * args.world_size
    return num_rows + (-num_rows % round_rows if args.world_size > 1 else 0)


def build_run_record(model_args, data_args, args, croc_config: dict[str, Any] | None, rows,
                     start_rejections: dict[str, list[int]] | None = None,
                     fit_verdicts: dict[str, Any] | None = None,
                     data_rows: dict[str, Any] | None = None,
                     processor_print: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record of a run about to start (see the module docstring), as written to `RUN_RECORD`. `data_rows`:
    `rows_fingerprint(rows)` where the caller holds it already (a pass over every row). `processor_print`: the
    `processor_fingerprint` of the stage's processor as the run saves it (`load_stage_processor(...,
    bound_to_pool=False)`) where the caller holds it; else the processor is loaded here again from the model source
    (configs and tokenizer files, no weights)."""
    if processor_print is None:
        from .model_loading import load_stage_processor

        processor_print = processor_fingerprint(load_stage_processor(model_args, args, bound_to_pool=False))
    config = _without_volatile(dict(croc_config or {}))
    croc_keys = [key for key in config if key not in ("text_config", "vision_config")]
    record = {
        "stage": args.stage,
        "croc_config": canonical({key: config[key] for key in croc_keys}),
        "model_config": short_digest({key: config.get(key) for key in ("text_config", "vision_config")}),
        "data_rows": data_rows if data_rows is not None else rows_fingerprint(rows),
        "global_batch_size": args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps,
        "per_device_split": args.per_device_train_batch_size if _split_dependent(model_args, args, config) else None,
        "epoch_rows": _epoch_rows(args, len(rows)),
        "trainable_parts": list(args.trainable_parts),
        "seed": args.seed,
        "data_seed": args.data_seed,
        "group_by_modality_length": args.group_by_modality_length,
        "train_sampling_strategy": args.train_sampling_strategy,
        "model_max_length": args.model_max_length,
        "template": args.template,
        "image_aspect_ratio": args.image_aspect_ratio,
        "dtype": model_args.dtype,
        "mixed_precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "no",
        "lora": canonical({"r": model_args.lora_r, "alpha": model_args.lora_alpha,
                            "dropout": model_args.lora_dropout, "targets": model_args.lora_target_modules,
                            "load_in_4bit": model_args.load_in_4bit}) if model_args.use_peft else None,
        "lora_base_weights": weights_fingerprint(model_args.name_or_path) if model_args.use_peft else None,
        # A finished run rerun with a corrected parent said it held this run (nothing to train), and a stopped one
        # resumed the old parent's lineage: the record named no parent but LoRA's.
        "start_weights": (weights_fingerprint(model_args.name_or_path)
                          if model_args.name_or_path and not model_args.use_peft else None),
        "deepspeed_zero_stage": zero_stage(args.deepspeed),
        "deepspeed_processes": args.world_size if zero_stage(args.deepspeed) else None,
        "random_stream_processes": args.world_size if _draws_per_process(model_args, args, config) else None,
        "optim": [str(getattr(args.optim, "value", args.optim)), args.optim_args],
        "neftune_noise_alpha": args.neftune_noise_alpha,
        "average_tokens_across_devices": args.average_tokens_across_devices,
        "image_limits": [data_args.max_image_aspect_ratio, data_args.max_image_preprocess_pixels],
        PROCESSOR: processor_print,
        "learning_rate": args.learning_rate,
        **{f"{group}_lr": getattr(args, f"{group}_lr") for group in PARAMETER_GROUPS},
        "lr_scheduler_type": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "lr_scheduler_kwargs": canonical(args.lr_scheduler_kwargs or {}),
        "warmup_steps": args.warmup_steps,
        "max_steps": args.max_steps,
        "num_train_epochs": args.num_train_epochs,
        "weight_decay": args.weight_decay,
        "adam_beta1": args.adam_beta1,
        "adam_beta2": args.adam_beta2,
        "adam_epsilon": args.adam_epsilon,
        "max_grad_norm": args.max_grad_norm,
    }
    return {"format": RECORD_FORMAT, "computation": COMPUTATION, **canonical(record),
            START_REJECTIONS: start_rejections or {}, FIT_VERDICTS: fit_verdicts}


def computation_changes(saved: dict[str, Any]) -> str | None:
    """What this version computes differently from the one that wrote `saved` (a checkpoint's record), or None."""
    written = saved.get("computation", 1)
    if not isinstance(written, int) or isinstance(written, bool) or written >= COMPUTATION:
        return None
    changed = [what for version in range(written + 1, COMPUTATION + 1)
               for what, touched in COMPUTATION_CHANGES[version] if touched(saved)]
    return "; ".join(changed) or None


def read_run_record(folder: str | Path) -> dict[str, Any] | None:
    """The record in a checkpoint or output folder, or None where there is none (or it does not parse)."""
    try:
        record = json.loads((Path(folder) / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_run_record(folder: str | Path, record: dict[str, Any], **status: Any) -> None:
    """Write the record whole or not at all (a temporary file renamed over it): a full disk or a kill during the
    write leaves the previous record, never a cut one, which would make the next run refuse its own folder."""
    target = Path(folder) / RUN_RECORD
    temporary = target.with_name(f".{RUN_RECORD}.{os.getpid()}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as file:
            file.write(json.dumps({**record, **status}, indent=1, sort_keys=True) + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


@dataclass(frozen=True)
class Difference:
    key: str
    before: Any
    now: Any

    def describe(self) -> str:
        if self.key == PROCESSOR:  # digests and nested settings: said by part, with the files they come from
            return describe_processor_change(self.before, self.now)
        if isinstance(self.before, dict) and isinstance(self.now, dict):
            changed = sorted(k for k in set(self.before) | set(self.now) if self.before.get(k) != self.now.get(k))
            shown = ", ".join(f"{k} {self.before.get(k)!r} -> {self.now.get(k)!r}" for k in changed[:4])
            more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
            return f"{self.key}: {shown}{more}"
        return f"{self.key} {self.before!r} -> {self.now!r}"


# FIXED keys that are no setting of their own but follow from several (the processes, the per-device batch, the
# sampler): a refusal says what they stand for, since no key of that name can be restored.
_DERIVED = ("per_device_split", "epoch_rows")
# Keys whose None means "not known here", not a value: `weights_fingerprint` reads a Hub id's cached snapshot
# only, which a first run has not fetched yet when it records; a source without a processor has no fingerprint of one
# (the run stops before it records). Compared only where both sides are known.
_NONE_UNKNOWN = ("lora_base_weights", "start_weights", PROCESSOR)
# FIXED keys whose saved None is compared with None only: what makes a step split-dependent is recorded under keys of
# its own (stage, sampler, LoRA, NEFTune, the model's config), so a saved None against a value, those unchanged, is a
# run recorded before this package knew its step depended on the split (a router loss), which still resumes.
_NONE_BEFORE_KNOWN = ("per_device_split",)


def _compared(key: str, record: dict[str, Any]) -> Any:
    """The value of `key` a resume compares: the recorded one, but for `data_seed` the seed the samplers draw the
    order from. Unset, it is `seed` (the modality sampler takes `seed`; accelerate's seedable sampler takes torch's
    initial seed, which the Trainer's `set_seed(seed)` set), so unset and the seed's own value are the same order,
    and unset is not 0. The record keeps what was set: a record written before this comparison compares the same."""
    if key == "data_seed" and record.get(key) is None:
        return record.get("seed")
    return record.get(key)


def record_digests(record: dict[str, Any]) -> dict[str, str | None]:
    """Each key of a run record as a short digest (None for a None value): what the processes of a run compare
    (`trainer.resume.check_every_process_runs_this_run`)."""
    return {key: None if value is None else short_digest(value) for key, value in record.items()}


def keys_differing_between_processes(main: dict[str, str | None], other: dict[str, str | None]) -> list[str]:
    """The keys whose `record_digests` differ between two processes of one run, but for a `_NONE_UNKNOWN` key one
    of them could not know: a Hub model's weights cached on one node only are fingerprinted there alone (the other
    node downloads them as the model loads), as a resume leaves them uncompared."""
    return sorted(key for key in main.keys() | other.keys() if main.get(key) != other.get(key)
                  and not (key in _NONE_UNKNOWN and None in (main.get(key), other.get(key))))


def record_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[Difference]:
    """The keys of `FIXED` and `ADJUSTABLE` whose values differ, as set and as compared (`_compared`), in that order.
    A key the saved record lacks (written before the key was recorded) is not compared: a run mid-way keeps resuming
    across an upgrade of this package. Neither is a `_NONE_UNKNOWN` key that either side could not know, a
    `_NONE_BEFORE_KNOWN` key saved as None, nor the dtype of half-precision weights trained themselves now loaded in
    float32 (`upcast_half_weights`)."""
    return [Difference(key, saved[key], current.get(key)) for key in (*FIXED, *ADJUSTABLE)
            if key in saved and saved[key] != current.get(key) and _compared(key, saved) != _compared(key, current)
            and not (key in _NONE_UNKNOWN and None in (saved[key], current.get(key)))
            and not (key in _NONE_BEFORE_KNOWN and saved[key] is None)
            and not (key == "dtype" and upcast_half_weights(saved, current))]


def upcast_half_weights(saved: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether a run that trained its half-precision weights themselves (no DeepSpeed, no LoRA) resumes with them
    loaded in float32. Since `validation.check_half_precision_weights` such a run is refused and told to load in
    float32: refusing that change as well left a run started before the upgrade no way to resume. Its checkpoint's
    weights and optimiser moments load into float32 exactly; only the updates that rounding lost now land."""
    return (saved.get("dtype") in HALF_DTYPES and current.get("dtype") == "float32" and saved.get("lora") is None
            and saved.get("deepspeed_zero_stage") is None)


def resume_refusal(saved: dict[str, Any], current: dict[str, Any], accepted: list[str] | tuple[str, ...],
                   where: str) -> str | None:
    """Why a run recorded as `saved` cannot be resumed as `current` (one line), or None when it can. `accepted`:
    the `ADJUSTABLE` keys whose change the user takes (`resume_accept_changes`)."""
    differences = record_differences(saved, current)
    fixed = [d for d in differences if d.key in FIXED]
    if fixed:
        return (f"{where} cannot continue with this configuration: "
                + "; ".join(d.describe() + (f" ({FIXED[d.key]})" if d.key in _DERIVED else "") for d in fixed)
                + ". Start a new output_dir for a different run (a next stage starts from the previous stage's "
                "final folder), or restore these values to resume")
    refused = [d for d in differences if d.key not in accepted]
    schedule = [d for d in refused if d.key != PROCESSOR]
    source = [d for d in refused if d.key == PROCESSOR]
    keys = ",".join(d.key for d in refused)
    if schedule:
        also = (f"; and it was trained with other files of the model source, {source[0].describe()}, which "
                "this run would read instead" if source else "")
        return (f"{where} was saved with other optimiser / schedule values: "
                + "; ".join(d.describe() for d in schedule) + also + ". Resuming would silently keep the "
                f"checkpoint's (its optimiser and scheduler state): restore them, or pass "
                f"'--resume_accept_changes=[{keys}]' to apply the new values from the resumed step on (the optimiser keeps "
                "its moments)")
    if source:
        return _source_refusal(where, source[0], keys)
    for difference in differences:
        logger.warning("resuming with a changed %s (accepted by resume_accept_changes)", difference.describe())
    if upcast_half_weights(saved, current):
        logger.warning("resuming the %s weights in float32: from the resumed step on, the optimiser's updates are no "
                       "longer rounded to %s (the loss curve goes on, not as the %s run would have drawn it)",
                       saved["dtype"], saved["dtype"], saved["dtype"])
    return None


def _source_refusal(where: str, difference: Difference, keys: str) -> str:
    return (f"{where} was trained with other files of the model source than it holds now: {difference.describe()}. "
            "Resuming would tokenise or prepare images otherwise from here on, off the run's loss curve: restore them "
            f"(or name the source the run was started from), or pass '--resume_accept_changes=[{keys}]' to train with "
            "them from the resumed step on")


def processor_refusal(saved: dict[str, Any], processor: dict[str, Any] | None, accepted: list[str] | tuple[str, ...],
                      where: str) -> str | None:
    """The refusal of a resume whose model source's processor (`processor_fingerprint`) is not the one the
    checkpoint's record `saved` was trained with, or None (the same, accepted, or unknown on either side). Made
    before the training rows are read as well as with the whole record: a changed tokenizer otherwise cost the rows'
    length check (minutes over a full mixture) before its one line."""
    before = saved.get(PROCESSOR)
    if PROCESSOR in accepted or before is None or processor is None or before == processor:
        return None
    return _source_refusal(where, Difference(PROCESSOR, before, processor), PROCESSOR)


class ApplyAcceptedChanges(TrainerCallback):
    """After a resume has loaded the optimiser and scheduler, put the accepted new values in place: each optimiser
    group's learning rate (the scheduler's `base_lrs`, and the rate of the coming step), betas, epsilon and weight
    decay. The schedule's shape (type, warm-up, length) comes from the arguments already: the scheduler is rebuilt
    from them and only its state is loaded. Logging, evaluation and save steps, which change no step's numbers, are
    this run's without being accepted."""

    def __init__(self, accepted: list[str] | tuple[str, ...]) -> None:
        # An accepted processor is in use already (the run loaded it): nothing of the optimiser to put in place.
        self.accepted = set(accepted) - {PROCESSOR}

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        if state.global_step > 0:
            # The Trainer keeps the checkpoint's trainer_state.json steps over the arguments: `save_steps=N` given to
            # resume a config that saved nothing (as its start-up warning says) wrote no checkpoint.
            state.compute_steps(args, state.max_steps)
        if not self.accepted or state.global_step == 0 or optimizer is None:
            return control
        rates = args.group_learning_rates
        schedule = lr_scheduler if hasattr(lr_scheduler, "base_lrs") else getattr(lr_scheduler, "scheduler", None)
        groups = optimizer.param_groups
        new_base = [rates.get(group.get("croc_group"), args.learning_rate) for group in groups]
        if schedule is not None and hasattr(schedule, "lr_lambdas"):
            schedule.base_lrs = list(new_base)
            factors = [fn(schedule.last_epoch) for fn in schedule.lr_lambdas]
        else:
            factors = [1.0] * len(groups)
        for group, base, factor in zip(groups, new_base, factors):
            group["initial_lr"] = base
            group["lr"] = base * factor
            if "betas" in group:
                group["betas"] = (args.adam_beta1, args.adam_beta2)
            if "eps" in group:
                group["eps"] = args.adam_epsilon
            # The groups `create_optimizer` built to decay: read from their flag, not from their current value,
            # which is 0 for every group of a run started at weight_decay 0 (a change from it was logged as
            # accepted, and not applied). The no-decay groups (biases, norms) stay at 0.
            if group.get("croc_decays", bool(group.get("weight_decay"))):
                group["weight_decay"] = args.weight_decay
        if schedule is not None and hasattr(schedule, "_last_lr"):
            schedule._last_lr = [group["lr"] for group in groups]
        return control


__all__ = ["ADJUSTABLE", "FIT_VERDICTS", "FIXED", "PROCESSOR", "RUN_RECORD", "START_REJECTIONS", "ApplyAcceptedChanges",
           "Difference", "build_run_record", "keys_differing_between_processes", "read_run_record", "record_differences",
           "record_digests", "resume_refusal", "write_run_record", "zero_stage"]
