"""Checks of a run's arguments that transformers' `TrainingArguments` and `Trainer` make only once the model is
loaded, or never: found from the arguments themselves and this machine, before anything heavy is read. The checks
against the model (its config.json, its processor and a model built on the `meta` device) are in
`trainer.model_checks`.

Two entry points:

* `check_training_values(args)`: the values of the `CrocTrainingArguments` fields, each alone or with its partner
  (types, ranges, choices, settings the Croc trainer cannot honour). `CrocTrainingArguments.__post_init__` calls it
  first, before its own resolution and transformers' `__post_init__`, so it sees the values as given (strategies
  still strings); what transformers already refuses there in one line (an unknown optimiser or schedule name,
  `fp16` with `bf16`, a negative `warmup_steps`, ...) is left to it.
* `check_arguments(model_args, data_args, args)`: what needs the built arguments, the model or this machine: the
  optimiser and schedule transformers will build, DeepSpeed's config against the arguments, then `trainer.model_checks`
  (the attention backend and the LoRA targets against the model's modules, the prompt pool under ZeRO-3, and
  `model_max_length` against the shortest sample that can train). `trainer.resolve.resolve_config` calls it last.

`ModelArguments` uses `check_field_types` and `check_attention_name` from here. Every check raises
`trainer.cli.ConfigError`: one line saying what is wrong, the value, and what to do.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import inspect
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import torch

# numpy's seed range: `transformers.set_seed` seeds numpy with `seed` (torch would take a wider one).
MAX_SEED = 2**32 - 1
# What `data_seed` may be: accelerate's and the modality sampler's generators are seeded with `data_seed + epoch`,
# which `torch.Generator.manual_seed` takes in [-2**63, 2**64 - 1]; a signed 64-bit seed stays in it for any epoch
# (2**64 - 1 drew epoch 0's order, then ended the run in a traceback at the start of epoch 1).
MIN_DATA_SEED, MAX_DATA_SEED = -(2**63), 2**63 - 1
# Fields whose annotation is narrower than the values they take: `resume_from_checkpoint: true` resumes from the
# newest intact checkpoint of output_dir, transformers documents `fsdp: true`, and `stage: 1.5` is read as "1.5".
FIELD_TYPE_OVERRIDES: dict[str, Any] = {"resume_from_checkpoint": str | bool | None, "fsdp": str | bool | None,
                                        "stage": str | float | None}
# Mapping fields that transformers also reads from a JSON string ("{...}"); any other string is a mistake.
MAPPING_FIELDS = ("lr_scheduler_kwargs", "activation_checkpointing_kwargs", "gradient_checkpointing_kwargs")
# Keys of `activation_checkpointing_kwargs` that the Trainer itself takes out before the rest reaches
# `torch.utils.checkpoint.checkpoint`, and the one that `checkpoint` reads from its **kwargs.
TRAINER_CHECKPOINTING_KEYS = ("every_n_layers", "offload")
CHECKPOINT_KWARGS_KEYS = ("preserve_rng_state",)
# The values those keys take. A wrong one ended the first step in a traceback (`every_n_layers: 0` a modulo by zero,
# a string a TypeError) or was taken as true (`use_reentrant: maybe`); `context_fn` takes a function, which a config
# cannot give.
CHECKPOINTING_FLAGS = ("offload", "use_reentrant", "preserve_rng_state", "debug", "early_stop")
DETERMINISM_CHECKS = ("default", "none")
# Modules of optimiser classes that can be built on a host tensor without touching a device or a package's kernels:
# `check_optimizer` builds them to run their own checks of their values.
PURE_OPTIMIZER_MODULES = ("torch.optim", "transformers.optimization")
# Optimisers transformers builds around the model's own modules (low-rank projections, fused updates): they replace
# the parameter groups `CrocTrainer.create_optimizer` builds (one learning rate per trained part).
MODEL_BOUND_OPTIMIZERS = ("galore", "apollo", "lomo")
# Keys every parameter group `CrocTrainer.create_optimizer` builds sets itself (one learning rate per trained part, no
# weight decay on biases and norms): an optimiser's default for them, an `optim_args` value included, never applies.
GROUP_SET_OPTIM_KEYS = ("lr", "weight_decay")
# The token counts transformers logs with `include_num_input_tokens_seen` (a bool maps to "all" or "no").
INPUT_TOKEN_COUNTS = ("all", "non_padding", "no")
NO_EVALUATION = "trainer.train has no evaluation set (it trains one stage on its training rows)"
# README has no Evaluation section: the routes through lmms-eval are in docs/EVALUATION.md.
EVALUATION_HINT = "evaluate the saved stage folder with lmms-eval instead (docs/EVALUATION.md)"
# transformers' options that only shape an evaluation, or ask a training script for one (`do_eval`, `do_predict`;
# `label_names` is read by the evaluation's prediction step only), with a value that shows each: any value but its
# default was accepted and did nothing, so `do_eval: true` or `eval_steps: 500` trained without a word that no
# evaluation ran, as `metric_for_best_model` alone did.
EVALUATION_ONLY: dict[str, str] = {
    "do_eval": "true", "do_predict": "true", "eval_steps": "10", "eval_delay": "5", "per_device_eval_batch_size": "2",
    "eval_accumulation_steps": "4", "prediction_loss_only": "true", "batch_eval_metrics": "true",
    "include_for_metrics": "[inputs]", "greater_is_better": "true", "eval_do_concat_batches": "false",
    "eval_use_gather_object": "true", "bf16_full_eval": "true", "fp16_full_eval": "true", "label_names": "[labels]",
}
# transformers' options whose help describes settings this trainer refuses: the setting refused (with a value that
# shows it, for the test that holds each entry to its check) and why. `--help` prints the why beside their help.
REFUSED_SETTINGS: dict[str, tuple[str, str, str]] = {
    "ignore_data_skip": ("true", "true", "a resume would not replay the interrupted run's rows"),
    "save_only_model": ("true", "true", "its checkpoints hold no optimizer, scheduler or RNG state to resume from"),
    "save_on_each_node": ("true", "true", "a checkpoint is written whole by the main process into one output_dir "
                          "that every node reads; the other nodes' copies would hold no weights"),
    "label_smoothing_factor": ("0.1", "any value but 0", "the label smoother would drop the VTR term of the loss"),
    "remove_unused_columns": ("true", "true", "it strips each row's data-report keys, so replaced rows go uncounted"),
    "auto_find_batch_size": ("true", "true", "on an out-of-memory error it would shrink the global batch, silently"),
    "enable_jit_checkpoint": ("true", "true", "its SIGTERM handler replaces the run's own (preemption_signals), so a "
                              "preempted run would end as finished"),
    "eval_strategy": ("steps", "any value but no", NO_EVALUATION),
    "eval_on_start": ("true", "true", NO_EVALUATION),
    "load_best_model_at_end": ("true", "true", NO_EVALUATION),
    "save_strategy": ("best", "best", NO_EVALUATION),
    "metric_for_best_model": ("loss", "any value", NO_EVALUATION),
    "lr_scheduler_type": ("reduce_lr_on_plateau", "reduce_lr_on_plateau and greedy", NO_EVALUATION),
    "optim": ("galore_adamw", "GaLore, APOLLO and LOMO",
              "they bring parameter groups of their own, replacing one learning rate per trained part"),
}
REFUSED_SETTINGS.update({name: (example, "any value but its default", NO_EVALUATION)
                         for name, example in EVALUATION_ONLY.items()})


# An environment variable as a shell writes it, `$NAME` or `${NAME}`.
_UNEXPANDED = re.compile(r"\$(?:[A-Za-z_]\w*|\{[A-Za-z_]\w*\})")


def _config_error(message: str) -> Exception:
    # `trainer.cli` imports the argument dataclasses, which import this module: the class is looked up when raised.
    from .cli import ConfigError

    return ConfigError(message)


def _value(setting: Any) -> Any:
    """An enum member's value, or the setting itself: before transformers' `__post_init__` strategies are strings."""
    return setting.value if isinstance(setting, enum.Enum) else setting


# ---- types and choices: every dataclass section ----------------------------------------------------------------


def hint_options(hint: Any) -> tuple[Any, ...]:
    """The types a field's annotation admits: a Union's members (nested Unions flattened), or the annotation."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(option for arg in typing.get_args(hint) for option in hint_options(arg))
    return (hint,)


def _is_yaml_shaped(value: Any) -> bool:
    """What a YAML file or a `--key=value` override can hold. Other objects (an `AcceleratorConfig` built in Python)
    are left to the code that reads the field."""
    return value is None or isinstance(value, (bool, int, float, str, list, tuple, dict))


def _holds_nan(value: Any) -> bool:
    """Whether a YAML-shaped value is NaN or holds one at any depth (`lr_scheduler_kwargs: {min_lr: .nan}`)."""
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, dict):
        return any(_holds_nan(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_nan(item) for item in value)
    return False


def _matches(value: Any, option: Any) -> bool:
    """Whether `value` is of the type `option` (one member of a field's annotation), as YAML spells it: an integer
    counts as a number, `true` does not."""
    origin = typing.get_origin(option) or option
    if option is Any:
        return True
    if option is type(None):
        return value is None
    if origin is typing.Literal:
        return any(value is literal or (type(value) is type(literal) and value == literal)
                   for literal in typing.get_args(option))
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        items = typing.get_args(option)
        return not items or all(_matches(element, items[0]) for element in value)
    if origin is dict:
        return isinstance(value, dict)
    if option is bool:
        return isinstance(value, bool)
    if option is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if option is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(option, type) and issubclass(option, enum.Enum):
        return isinstance(value, (option, str))  # the name itself is checked where it is converted
    return not isinstance(option, type) or isinstance(value, option)


def _describe(option: Any) -> str:
    origin = typing.get_origin(option) or option
    if origin in (list, tuple):
        item = typing.get_args(option)[:1]
        return f"a list of {_describe(item[0]).split(' ', 1)[-1]}s" if item else "a list"
    if origin is typing.Literal:
        return " or ".join(repr(literal) for literal in typing.get_args(option))
    if isinstance(origin, type) and issubclass(origin, enum.Enum):
        return "a string"  # transformers' option enums are spelt as their names
    names = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string",
             dict: "a mapping"}
    return names.get(origin, f"a {getattr(origin, '__name__', origin)}")


def check_field_types(arguments: Any, section: str = "") -> None:
    """Every init field of the dataclass instance `arguments` holds a value of its annotated type: a list where a
    number goes (`per_device_train_batch_size: [1, 2]`), a number where a list goes, `1.5` for an integer, or `true`
    for a batch size would otherwise fail deep inside training, or silently mean something else. `section` prefixes
    the field names in messages (`model.`)."""
    try:
        hints = typing.get_type_hints(type(arguments))
    except (NameError, TypeError):  # an annotation that does not resolve: leave the values to their readers
        return
    for field in dataclasses.fields(arguments):
        hint = FIELD_TYPE_OVERRIDES.get(field.name, hints.get(field.name))
        value = getattr(arguments, field.name)
        if not field.init or hint is None or not _is_yaml_shaped(value):
            continue
        if _holds_nan(value):
            # No setting means anything by NaN, and every comparison with it is false, so a range check written
            # as `not 0 < x` is the only one that catches it: `num_train_epochs: .nan` beside max_steps was taken,
            # written into the run record as non-standard JSON, and then refused the run's own resume ("nan -> nan").
            raise _config_error(f"{section}{field.name} must be a number, got {value!r}" if isinstance(value, float)
                                else f"{section}{field.name} holds nan, which no setting takes: {value!r}")
        options = hint_options(hint)
        if not any(_matches(value, option) for option in options):
            expected = " or ".join(dict.fromkeys(_describe(option) for option in options))
            raise _config_error(f"{section}{field.name} must be {expected}, got {value!r}")
        choices = field.metadata.get("choices")
        if choices is not None and value is not None and value not in choices:
            raise _config_error(f"{section}{field.name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def check_attention_name(attn_implementation: str) -> None:
    """`attn_implementation` is a backend transformers can dispatch to: eager, one it registered (sdpa,
    flex_attention, flash_attention_2/3/4, paged|eager) or a Hub kernel (`org/repo[:function]`). Whether this model
    and this machine can run it is checked by `check_arguments`."""
    from transformers.integrations.hub_kernels import is_kernel
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    known = ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]
    if attn_implementation in known or is_kernel(attn_implementation):
        return
    close = difflib.get_close_matches(attn_implementation, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise _config_error(f"model.attn_implementation={attn_implementation!r} is not an attention backend{hint}; use "
                        f"one of {', '.join(known)} or a Hub kernel (org/repo)")


# ---- the training section's values ------------------------------------------------------------------------------


def check_training_values(args: Any) -> None:
    """Refuse every `CrocTrainingArguments` value that cannot work and that transformers accepts until the model is
    loaded (or for good): call first thing in `__post_init__`, on the values as given (`gradient_accumulation_steps`
    and `model_max_length` may still be None there, the strategies strings)."""
    check_field_types(args)
    for name in ("output_dir", "hub_dry_run"):
        # `output_dir: ""` would make transformers write into ./trainer_output (an empty resume_from_checkpoint is
        # refused earlier, with the other checks of the checkpoint: `trainer.validation.check_resume`).
        value = getattr(args, name, None)
        if isinstance(value, str) and not value.strip():
            raise _config_error(f"{name} is empty (an unset variable in the command?); name a folder")
        variable = _UNEXPANDED.search(value) if isinstance(value, str) else None
        if variable and not Path(value).expanduser().exists():
            # `output_dir: $SCRATCH/run` in the YAML (or quoted on the command line): nothing expands it, and the
            # run wrote into a new `./$SCRATCH/run` folder, while data.path or model.name_or_path spelt so are
            # refused as missing. A folder already named so is the user's own and is taken as it is.
            raise _config_error(f"{name} {value} holds {variable.group(0)}, which nothing expands here (the shell "
                                "does outside quotes, a YAML file never); give the folder's path itself")
    for name in MAPPING_FIELDS:
        value = getattr(args, name, None)
        if isinstance(value, str) and not value.startswith("{"):
            raise _config_error(f"{name} must be a mapping such as {{key: value}}, got {value!r}")
    if args.trainable_parts is not None and not args.trainable_parts:
        raise _config_error("trainable_parts is empty, so nothing would train; name the parts to train, or leave it "
                            "unset for the stage's")
    if args.include_num_input_tokens_seen not in (True, False, *INPUT_TOKEN_COUNTS):
        raise _config_error(f"include_num_input_tokens_seen must be true, false or one of "
                            f"{', '.join(INPUT_TOKEN_COUNTS)}, got {args.include_num_input_tokens_seen!r}")
    _check_batches(args)
    _check_sampling(args)
    _check_run_length(args)
    _check_intervals(args)
    _check_optimiser_values(args)
    _check_no_evaluation(args)
    _check_compile_and_checkpointing(args)
    if not args.ddp_timeout > 0:
        raise _config_error(f"ddp_timeout must be > 0 seconds, got {args.ddp_timeout}")
    if args.ddp_bucket_cap_mb is not None and args.ddp_bucket_cap_mb < 1:
        raise _config_error(f"ddp_bucket_cap_mb must be >= 1 (or unset), got {args.ddp_bucket_cap_mb}")


def _check_batches(args: Any) -> None:
    """Batch sizes, and the DataLoader's worker settings (which torch checks only when the loader is built)."""
    if args.per_device_train_batch_size < 1:
        raise _config_error(f"per_device_train_batch_size must be >= 1, got {args.per_device_train_batch_size}")
    for name in ("gradient_accumulation_steps", "global_batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise _config_error(f"{name} must be >= 1 (or unset), got {value}")
    if args.dataloader_num_workers < 0:
        raise _config_error(f"dataloader_num_workers must be >= 0 (0: load in the training process), got "
                            f"{args.dataloader_num_workers}")
    if args.dataloader_prefetch_factor is not None and args.dataloader_prefetch_factor < 1:
        raise _config_error(f"dataloader_prefetch_factor must be >= 1 (or unset), got {args.dataloader_prefetch_factor}")
    if args.auto_find_batch_size:
        # On an out-of-memory error the Trainer restarts with a smaller per-device batch and the same accumulation
        # steps: the run went on at a global batch below global_batch_size (and the one its record resumes with),
        # its failed attempt's rows counted as trained.
        raise _config_error("auto_find_batch_size=true would restart an out-of-memory run with a smaller per-device "
                            "batch and the same gradient_accumulation_steps, silently training a smaller global batch; "
                            "lower per_device_train_batch_size yourself (global_batch_size keeps the step's size)")
    if args.remove_unused_columns:
        # transformers' `RemoveColumnsCollator` keeps only the keys `forward` takes before the Croc collator runs: the
        # `replaced_row` / `truncated_row` records of the rows training replaced or cut went with them, so those rows
        # were trained on unseen by the data report, rejects.jsonl and the run's reject budget.
        raise _config_error("remove_unused_columns=true would drop the data-report keys of each row before the "
                            "Croc collator (which already builds only the model inputs), leaving the rows replaced "
                            "in training uncounted; drop it")
    if args.dataloader_num_workers == 0:
        for name in ("dataloader_persistent_workers", "dataloader_multiprocessing_context"):
            if getattr(args, name):
                raise _config_error(f"{name}={getattr(args, name)!r} needs worker processes: set "
                                    "dataloader_num_workers > 0, or drop it")


# The Trainer's samplers that read a length per row, which this trainer's datasets do not carry (LLaVA's grouping by
# modality and length is `group_by_modality_length`).
LENGTH_SAMPLERS = ("group_by_length", "batch_rebalance")


def _check_sampling(args: Any) -> None:
    """The order rows are read in, which a resume must replay exactly."""
    if args.train_sampling_strategy in LENGTH_SAMPLERS:
        raise _config_error(f"train_sampling_strategy={args.train_sampling_strategy} groups rows by a length column "
                            "this trainer's data does not carry; use --group_by_modality_length=true (LLaVA's "
                            "grouping by modality and length) or random / sequential")
    if getattr(args, "enable_jit_checkpoint", False):
        # transformers installs its SIGTERM handler when the Trainer is built, over the one `trainer.train` installed
        # before the data loads: a preempted run trained on past the signal, then stopped, wrote its final model, was
        # recorded as finished and exited 0, a step short, not 75 to be requeued.
        raise _config_error("enable_jit_checkpoint=true would replace this trainer's SIGTERM handling, ending a "
                            "preempted run as finished; drop it: SIGTERM already writes a checkpoint at the step's end "
                            "and exits 75 (preemption_signals)")
    if args.dataloader_drop_last and not args.group_by_modality_length:
        # The DataLoader (and accelerate's sharding of it over the processes) left each epoch's last partial
        # micro-batch, or round of them, out: up to a step's worth of rows read, kept and never trained, in no count
        # of the data report (3 of 11 rows in one epoch on 2 processes). `group_by_modality_length` fills an epoch's
        # last step with repeated rows of its kind, so nothing is left out there (the released YAMLs set both).
        raise _config_error("dataloader_drop_last=true would leave the rows of each epoch's last, partial batch "
                            "untrained and uncounted by the data report; drop it, or set "
                            "group_by_modality_length=true (whose steps are always whole)")
    if args.ignore_data_skip:
        raise _config_error("ignore_data_skip=true would resume at the start of the epoch's row order, training some "
                            "rows twice and others never, off the interrupted run's loss curve; this trainer resumes "
                            "on the same rows: drop ignore_data_skip")


def _check_run_length(args: Any) -> None:
    """How long the run is, and the values that seed and size it."""
    if args.max_steps == 0 or args.max_steps < -1:
        raise _config_error(f"max_steps must be a positive number of optimiser steps, or -1 to train "
                            f"num_train_epochs epochs; got {args.max_steps}")
    if args.max_steps < 0 and not (args.num_train_epochs > 0 and math.isfinite(args.num_train_epochs)):
        raise _config_error(f"num_train_epochs must be a finite number > 0 (or set max_steps), got "
                            f"{args.num_train_epochs}")
    if not 0 <= args.seed <= MAX_SEED:
        raise _config_error(f"seed must be in [0, 2**32 - 1] (it seeds numpy too), got {args.seed}")
    if args.data_seed is not None and not MIN_DATA_SEED <= args.data_seed <= MAX_DATA_SEED:
        # It seeds the samplers' torch generators only, which take a wider range than `seed`; beyond it the first
        # batch (or, near its top, the next epoch's) ended in a traceback ("Overflow when unpacking long long").
        raise _config_error(f"data_seed must be in [-2**63, 2**63 - 1] (each epoch seeds torch's sampler generator "
                            f"with data_seed + epoch), got {args.data_seed}")
    if args.model_max_length is not None and args.model_max_length < 1:
        raise _config_error(f"model_max_length must be >= 1, got {args.model_max_length}")
    if args.pool_calibration_images < 1:
        raise _config_error(f"pool_calibration_images must be >= 1, got {args.pool_calibration_images}")


def _check_intervals(args: Any) -> None:
    """Warm-up, logging and saving intervals: transformers takes 0 or negative steps, or a fractional warm-up over
    one step, without a word."""
    warmup = args.warmup_steps
    if not math.isfinite(warmup) or (warmup > 1 and warmup != int(warmup)):
        raise _config_error(f"warmup_steps must be a ratio of the run in [0, 1) or a whole number of steps, got "
                            f"{warmup}")
    for strategy, steps in (("logging_strategy", "logging_steps"), ("save_strategy", "save_steps")):
        value = getattr(args, steps)
        if _value(getattr(args, strategy)) == "steps" and not value > 0:
            raise _config_error(f"{steps} must be > 0 with {strategy}=steps (a number of steps, or a ratio of the "
                                f"run below 1), got {value}")
        if _value(getattr(args, strategy)) == "steps" and not math.isfinite(value):
            # transformers' own check of a whole number of steps (`int(value)`) fails on it with a traceback.
            raise _config_error(f"{steps} must be a finite number with {strategy}=steps, got {value}")
    if warmup >= 1 and args.max_steps > 0 and warmup > args.max_steps:
        raise _config_error(f"warmup_steps={int(warmup)} is longer than the run (max_steps={args.max_steps}): the "
                            "learning rate would never reach its peak; shorten the warm-up (or give it as a ratio "
                            "of the run below 1)")
    if args.save_total_limit is not None and args.save_total_limit < 1:
        raise _config_error(f"save_total_limit must be >= 1 (leave it unset to keep every checkpoint), got "
                            f"{args.save_total_limit}")
    if args.save_on_each_node:
        # Every checkpoint is staged and written by the main process (weights, run record, manifest): another node's
        # copy held its RNG state and a manifest vouching for a folder without weights, and a rerun that made it the
        # main process could not resume from it.
        raise _config_error("save_on_each_node=true: a checkpoint is written by the main process alone, into one "
                            "output_dir that every node must see (a shared filesystem); drop save_on_each_node and "
                            "put output_dir on a folder every node shares")
    if args.save_only_model:
        raise _config_error("save_only_model=true writes checkpoints without the optimizer, scheduler and RNG states, "
                            "so a killed or preempted run could not resume on its loss curve (a rerun would go on "
                            "from one on a fresh optimizer); drop it (save_total_limit bounds the disk used)")


def _check_optimiser_values(args: Any) -> None:
    """The optimiser's numbers (the learning rates and betas are checked with the parameter groups)."""
    if not (args.adam_epsilon > 0 and math.isfinite(args.adam_epsilon)):
        raise _config_error(f"adam_epsilon must be a finite number > 0 (AdamW divides by sqrt(v) + adam_epsilon: 0 "
                            f"makes every parameter whose gradient is still 0 NaN), got {args.adam_epsilon}")
    if not (args.weight_decay >= 0 and math.isfinite(args.weight_decay)):
        raise _config_error(f"weight_decay must be a finite number >= 0, got {args.weight_decay}")
    if args.max_grad_norm is not None and not args.max_grad_norm >= 0:
        raise _config_error(f"max_grad_norm must be >= 0 (0 turns gradient clipping off), got {args.max_grad_norm}")
    if args.label_smoothing_factor != 0:
        raise _config_error(f"label_smoothing_factor={args.label_smoothing_factor}: transformers' label smoother "
                            "would replace the Croc model's own loss (lm_loss + vtr_loss_weight * vtr_loss) by one on "
                            "its logits without the VTR term; leave it at 0")
    if args.neftune_noise_alpha is not None and not args.neftune_noise_alpha > 0:
        raise _config_error(f"neftune_noise_alpha must be > 0 (or unset), got {args.neftune_noise_alpha}")
    if args.neftune_noise_alpha is not None and not math.isfinite(args.neftune_noise_alpha):  # inf noise: NaN loss
        raise _config_error(f"neftune_noise_alpha must be a finite number (or unset), got {args.neftune_noise_alpha}")
    optim = str(_value(args.optim))
    if any(kind in optim for kind in MODEL_BOUND_OPTIMIZERS):
        raise _config_error(f"optim={optim}: GaLore, APOLLO and LOMO optimisers bring their own parameter groups, "
                            "which would replace the Croc trainer's (one learning rate per trained part); use "
                            "adamw_torch (the default) or another optimiser of the parameters")


def _check_no_evaluation(args: Any) -> None:
    """Settings that evaluate, which the Trainer refuses without an evaluation set only once it is built (or, for
    `load_best_model_at_end`, ignores)."""
    if _value(args.eval_strategy) != "no":
        raise _config_error(f"eval_strategy={_value(args.eval_strategy)}: {NO_EVALUATION}; set eval_strategy=no "
                            f"and {EVALUATION_HINT}")
    if args.eval_on_start:
        raise _config_error(f"eval_on_start=true: {NO_EVALUATION}; drop it and {EVALUATION_HINT}")
    if args.load_best_model_at_end:
        raise _config_error(f"load_best_model_at_end=true picks a checkpoint by its evaluation, but {NO_EVALUATION}; "
                            "drop it")
    if args.metric_for_best_model is not None:
        # Alone it only names the metric of a best checkpoint, which no evaluation ever measures here: the run would
        # track nothing (no best_metric, no best_model_checkpoint) without a word.
        raise _config_error(f"metric_for_best_model={args.metric_for_best_model} names an evaluation metric, but "
                            f"{NO_EVALUATION}, so no best checkpoint is tracked; drop it and {EVALUATION_HINT}")
    if _value(args.save_strategy) == "best":
        raise _config_error(f"save_strategy=best saves on the best evaluation, but {NO_EVALUATION}; use "
                            "save_strategy=steps or epoch")
    if _value(args.lr_scheduler_type) in ("reduce_lr_on_plateau", "greedy"):
        raise _config_error(f"lr_scheduler_type={_value(args.lr_scheduler_type)} follows an evaluation metric, but "
                            f"{NO_EVALUATION}; use cosine (the stages' schedule) or linear")
    fields = {field.name: field for field in dataclasses.fields(args)}
    for name in EVALUATION_ONLY:
        if name not in fields:  # not an option of this transformers version
            continue
        field = fields[name]
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        value = getattr(args, name)
        if value != default:
            raise _config_error(f"{name}={_yaml_text(value)} is an evaluation setting, but {NO_EVALUATION}, so it "
                                f"would do nothing; drop it and {EVALUATION_HINT}")


def _yaml_text(value: Any) -> str:
    """`value` as a YAML file or a `--key=value` override spells it (`true`, `[inputs]`), for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_text(item) for item in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # the CLI reads `eval_steps=10` into the float field as 10.0
    return str(_value(value))


def _check_compile_and_checkpointing(args: Any) -> None:
    """`torch.compile`'s backend and mode, and the keywords that reach `torch.utils.checkpoint.checkpoint`."""
    backend = args.torch_compile_backend
    if backend is not None:
        from accelerate.utils import DynamoBackend

        if backend.upper() not in DynamoBackend.__members__:
            known = ", ".join(member.value.lower() for member in DynamoBackend if member is not DynamoBackend.NO)
            raise _config_error(f"torch_compile_backend={backend!r} is not a backend accelerate knows: {known}")
    if args.torch_compile_mode is not None and backend in (None, "inductor"):
        from torch._inductor import list_mode_options

        try:
            list_mode_options(args.torch_compile_mode)  # torch.compile's own check of the mode
        except RuntimeError as error:
            raise _config_error(f"torch_compile_mode: {error}") from None

    enabled = args.activation_checkpointing or args.gradient_checkpointing
    kwargs = args.activation_checkpointing_kwargs if args.activation_checkpointing_kwargs is not None else \
        args.gradient_checkpointing_kwargs
    if enabled and isinstance(kwargs, dict):
        from torch.utils.checkpoint import checkpoint

        signature = inspect.signature(checkpoint).parameters.values()
        accepted = {p.name for p in signature if p.kind is inspect.Parameter.KEYWORD_ONLY}
        accepted.update(CHECKPOINT_KWARGS_KEYS + TRAINER_CHECKPOINTING_KEYS)
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise _config_error(f"activation_checkpointing_kwargs: unknown keys {unknown}; accepted: "
                                f"{', '.join(sorted(accepted))}")
        _check_checkpointing_values(kwargs, args)


def _check_checkpointing_values(kwargs: dict, args: Any) -> None:
    name = "activation_checkpointing_kwargs"
    every = kwargs.get("every_n_layers", 1)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise _config_error(f"{name}: every_n_layers must be an integer >= 1 (1 checkpoints every layer), got "
                            f"{every!r}")
    for key in CHECKPOINTING_FLAGS:
        if key in kwargs and not isinstance(kwargs[key], bool):
            raise _config_error(f"{name}: {key} must be true or false, got {kwargs[key]!r}")
    if kwargs.get("determinism_check", "default") not in DETERMINISM_CHECKS:
        raise _config_error(f"{name}: determinism_check must be one of {', '.join(DETERMINISM_CHECKS)}, got "
                            f"{kwargs['determinism_check']!r}")
    if "context_fn" in kwargs:
        raise _config_error(f"{name}: context_fn takes a Python function, which a config cannot give; drop it")
    if kwargs.get("offload") and (args.use_cpu or not _has_accelerator()):
        # transformers keeps the saved activations in pinned host memory, which needs an accelerator: on the CPU
        # the first step ended in "pin_memory=True requires a CUDA or other accelerator backend".
        raise _config_error(f"{name}: offload moves the saved activations off an accelerator, and this run has none "
                            "(they are in host memory already); drop it")


def _has_accelerator() -> bool:
    accelerator = getattr(torch, "accelerator", None)
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()


# ---- everything together: the built arguments, the model and this machine -------------------------------------


def check_arguments(model_args: Any, data_args: Any, args: Any) -> None:
    """Check the built arguments of a run against each other, transformers' optimiser and scheduler factories,
    DeepSpeed's config, this machine and the model's config.json, tokenizer and meta-device modules. Reads no weight:
    the model is built on the `meta` device (about 0.1 s for a 7B model; see `model_checks.build_on_meta`)."""
    # Both import this module: validation through trainer.cli and the argument dataclasses, model_checks for
    # `_config_error`.
    from . import model_checks, validation

    check_field_types(data_args, "data.")
    check_deepspeed_config(args)
    check_optimizer(args)
    check_lr_scheduler(args)
    check_parallelism(args)
    validation.check_attention_backend(model_args.attn_implementation, use_cpu=args.use_cpu)
    model_checks.check_language_model_part(model_args)
    config = model_checks.read_model_config(model_args, args)
    if config is None:  # no config.json to read yet (stage 1 parts, an uncached Hub id): the load checks these
        return
    model = model_checks.build_on_meta(config, model_args.attn_implementation)
    if model_args.use_peft:
        model_checks.check_lora_targets(model, model_args.lora_target_modules)
        model_checks.check_lora_keeps_the_trained_parts(model, args.trainable_parts)
    model_checks.check_pool_size_under_zero3(model_args, args, config)
    model_checks.check_model_max_length(model_args, args, config)


def check_deepspeed_config(args: Any) -> None:
    """DeepSpeed's config against the arguments: transformers fills its "auto" values from the arguments and records
    every explicit value that differs (`HfTrainerDeepSpeedConfig.mismatches`), but raises only once the model is
    loaded; and an `optimizer` or `scheduler` section would replace the Croc trainer's own (per-part learning rates)."""
    deepspeed_config = getattr(args, "hf_deepspeed_config", None)
    if not args.deepspeed or deepspeed_config is None:
        return
    where = f"deepspeed config {args.deepspeed}" if isinstance(args.deepspeed, str) else "the inline deepspeed config"
    stage = deepspeed_config.config.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3) or isinstance(stage, bool):
        raise _config_error(f"{where}: zero_optimization.stage is {stage!r}; DeepSpeed takes 0, 1, 2 or 3")
    sections = [name for name in ("optimizer", "scheduler") if name in deepspeed_config.config]
    if sections:
        raise _config_error(f"{where}: its {' and '.join(sections)} section would replace the Croc trainer's "
                            "optimiser and schedule (one learning rate per trained part); remove it (the configs "
                            "in trainer/configs/deepspeed/ have none)")
    if deepspeed_config.mismatches:
        found = "; ".join(mismatch.strip().removeprefix("- ") for mismatch in deepspeed_config.mismatches)
        raise _config_error(f"{where} contradicts the training arguments: {found}; set these DeepSpeed values to "
                            "\"auto\" (they then follow the arguments) or change the arguments")


# What `deepspeed.init_distributed` reads to join a process group without MPI: every launcher (`deepspeed`, torchrun,
# `accelerate launch`) sets them, and so do AzureML's and SageMaker's environments it patches itself.
LAUNCHER_ENVIRONMENT = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")
DEEPSPEED_PATCHED_ENVIRONMENTS = ("AZUREML_EXPERIMENT_ID", "SM_TRAINING_ENV")


def check_deepspeed_launcher(args: Any) -> None:
    """A DeepSpeed run started as a plain `python -m trainer.train`: DeepSpeed then looks for an MPI job through
    mpi4py, which fails with a traceback once the model and the rows are loaded. Refused before, unless mpi4py is
    there (an `mpirun` launch)."""
    import importlib.util

    if not args.deepspeed or all(name in os.environ for name in LAUNCHER_ENVIRONMENT):
        return
    if any(name in os.environ for name in DEEPSPEED_PATCHED_ENVIRONMENTS) or importlib.util.find_spec("mpi4py"):
        return
    raise _config_error("deepspeed needs a launcher that starts its processes: run the same command under "
                        "`torchrun --nproc_per_node N -m trainer.train ...` (N=1 too), `accelerate launch --multi_gpu "
                        "--num_processes N -m trainer.train ...` or `deepspeed --module trainer.train ...`; "
                        "docs/SCALING.md")


def check_optimizer(args: Any) -> None:
    """`args.optim` as `CrocTrainer` builds it: transformers' optimiser factory (which refuses an optimiser whose
    package is missing, e.g. bitsandbytes for `adamw_bnb_8bit`, or malformed `optim_args`), the `optim_args` keys it
    reads (`ignored_optim_args`), the optimiser's own checks of its values, and fused AdamW on a device whose kernels
    PyTorch has."""
    from transformers import Trainer
    from transformers.training_args import OptimizerNames

    try:
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    except (ImportError, ValueError, TypeError, NotImplementedError) as error:
        raise _config_error(f"optim={_value(args.optim)}: {' '.join(str(error).split())}") from None
    ignored = ignored_optim_args(args)
    if ignored:
        raise _config_error(f"optim_args: optim={_value(args.optim)} does not read {', '.join(ignored)} (transformers "
                            "drops them without a word); drop them, or set them through their own arguments "
                            "(adam_beta1, adam_beta2, adam_epsilon, weight_decay)")
    if optimizer_cls.__module__.startswith(PURE_OPTIMIZER_MODULES):
        # The optimiser's own checks of its values (SGD's `nesterov` without momentum, a negative RMSprop alpha) run
        # when `CrocTrainer.create_optimizer` builds it, after the model loaded: a traceback. Built here as it builds
        # it, one group, on one host parameter.
        group = {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": args.learning_rate,
                 "weight_decay": args.weight_decay}
        try:
            optimizer_cls([group], **{key: value for key, value in optimizer_kwargs.items() if key != "params"})
        except (ValueError, TypeError) as error:
            raise _config_error(f"optim={_value(args.optim)} with optim_args={args.optim_args}: "
                                f"{' '.join(str(error).split())}") from None
    if args.optim == OptimizerNames.ADAMW_TORCH_FUSED:
        from torch.optim import optimizer as optimizer_module

        # The devices `torch.optim` checks every parameter against at the first step of a fused optimiser.
        supported = optimizer_module._get_fused_kernels_supported_devices()
        if args.device.type not in supported:
            raise _config_error(f"optim=adamw_torch_fused: this PyTorch has no fused AdamW for {args.device.type} "
                                f"(only {', '.join(supported)}); use optim=adamw_torch")


class _ReadKeys(dict):
    """`optim_args` as transformers' optimiser factory receives them, recording the keys it reads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(key)
        return super().__contains__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def pop(self, key: str, *default: Any) -> Any:
        self.read.add(key)
        return super().pop(key, *default)


def ignored_optim_args(args: Any) -> list[str]:
    """The keys of `optim_args` the optimiser `args.optim` never reads: transformers' factory takes each optimiser's
    own keys and drops the rest without a word (AdamW, the default, reads none), so `optim_args: eps=1e-6`
    trained at adam_epsilon, and those the trainer's parameter groups set (`GROUP_SET_OPTIM_KEYS`). Found
    by running the factory's handler for `optim` on the parsed keys; an empty list where this transformers lays its
    factory out otherwise."""
    try:
        from transformers.trainer_optimizer import _OPTIMIZER_HANDLERS, OptimizerContext, _parse_optim_args
    except ImportError:
        return []
    handler = _OPTIMIZER_HANDLERS.get(args.optim)
    if handler is None or not args.optim_args:
        return []
    optim_args = _ReadKeys(_parse_optim_args(args.optim_args))
    keys = list(optim_args)
    # The context `Trainer.get_optimizer_cls_and_kwargs` builds.
    context = OptimizerContext(args=args, model=None, optimizer_kwargs={"lr": args.learning_rate},
                               adam_kwargs={"betas": (args.adam_beta1, args.adam_beta2), "eps": args.adam_epsilon},
                               optim_args=optim_args)
    try:
        _, kwargs = handler(context)
    except Exception:  # the factory's own errors were reported by `check_optimizer` already
        return []
    # A handler may also hand the values on whole (bitsandbytes' RMSprop takes them as its keywords); a keyword of the
    # same name the handler set itself (AdamW's `betas`) is not the user's value. SGD, Adagrad and RMSprop read
    # `weight_decay`, but only as the optimiser's default, which each of the trainer's parameter groups overrides.
    return [key for key in keys if key in GROUP_SET_OPTIM_KEYS
            or (key not in optim_args.read and kwargs.get(key) is not optim_args[key])]


def check_lr_scheduler(args: Any) -> None:
    """`lr_scheduler_type` with `lr_scheduler_kwargs`, built as the Trainer builds it (on a one-parameter optimiser
    at `learning_rate`): an unknown or missing keyword (`cosine_with_min_lr` without `min_lr_rate`) or a wrong value
    fails here rather than at the first step. The step count is `max_steps`, or a stand-in when it follows the
    epochs (unknown until the rows are counted)."""
    from transformers import get_scheduler

    steps = args.max_steps if args.max_steps > 0 else 1000
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.learning_rate)
    try:
        get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.get_warmup_steps(steps),
                      num_training_steps=steps, scheduler_specific_kwargs=args.lr_scheduler_kwargs)
    except (TypeError, ValueError) as error:
        raise _config_error(f"lr_scheduler_type={_value(args.lr_scheduler_type)} with lr_scheduler_kwargs="
                            f"{args.lr_scheduler_kwargs}: {' '.join(str(error).split())}") from None


def check_parallelism(args: Any) -> None:
    """One process per GPU: with several GPUs visible to one process the Trainer wraps the model in `nn.DataParallel`,
    whose replicas run in threads on slices of each input, sharing one token-mask generator (so the draws depend on
    thread timing) and the step-wide counts. FSDP as the Trainer refuses it at construction: it needs several
    processes and excludes DeepSpeed."""
    from transformers.training_args import ParallelMode

    if args.parallel_mode == ParallelMode.NOT_DISTRIBUTED:
        raise _config_error(f"{args.n_gpu} GPUs are visible to this one process, so the Trainer would use "
                            "nn.DataParallel, which this trainer does not run; launch one process per GPU (accelerate "
                            "launch or torchrun --nproc_per_node), or pick one GPU with CUDA_VISIBLE_DEVICES")
    if not args.fsdp:
        return
    if args.deepspeed:
        raise _config_error("fsdp and deepspeed are both set; choose one (this project ships DeepSpeed configs)")
    if args.parallel_mode != ParallelMode.DISTRIBUTED:
        raise _config_error("fsdp shards the model over processes, but this run has one; launch it with torchrun or "
                            "accelerate launch, or drop fsdp")

