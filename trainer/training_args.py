"""`CrocTrainingArguments`: `transformers.TrainingArguments` plus the Croc stage, per-group learning rates and the
data, logging and Hub options of the three training stages."""

from __future__ import annotations

import difflib
import logging
import math
import os
import signal
import typing
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from modeling_croc.configuration_croc import CROC_FIELD_NAMES, CrocFieldsMixin
from modeling_croc.conversation import TEMPLATES
from modeling_croc.presets import CROC_PRESET_NAMES, get_preset
from modeling_croc.processing_croc import IMAGE_ASPECT_RATIOS

from .argument_checks import check_training_values
from .run_control import PREEMPTED_EXIT_CODE, PREEMPTION_SIGNAL_CHOICES, signal_number
from .run_record import ADJUSTABLE
from .stages import PARAMETER_GROUPS, get_stage
from .startup_agreement import arrive

logger = logging.getLogger(__name__)

# TrainingArguments' own default: `learning_rate` given any other value is a rate the user means to train with.
DEFAULT_LEARNING_RATE: float = TrainingArguments.__dataclass_fields__["learning_rate"].default


def launched_world_size() -> int:
    """Processes of this run as the launchers (torchrun, accelerate, deepspeed) announce them, before any process
    group exists: what `global_batch_size` is divided by."""
    return int(os.environ.get("WORLD_SIZE", "1"))


# The parameter groups only the Croc objectives (stage 1.5) use.
CROC_OBJECTIVE_PARTS: tuple[str, ...] = ("prompt_pool", "vtr_head")

# The overridable fields that act in stage 2 too (the visual tokens' normalisation, at inference as well); the others
# are read by the stage-1.5 objectives alone.
CROC_FIELDS_OUTSIDE_OBJECTIVES: frozenset[str] = frozenset({"normalize_visual_tokens"})


def _as_float(value: Any) -> Any:
    """`value` as a float where YAML read a number as an int (`5`) or a string (`1e-1`); anything else as it is, for
    the config's own type check to refuse."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _takes_float(field_name: str) -> bool:
    """Whether the `CrocConfig` field is typed as a float (optionally None)."""
    annotation = CrocFieldsMixin.__dataclass_fields__[field_name].type
    return annotation is float or float in typing.get_args(annotation)


# CrocConfig's own fields a run may override through `croc_overrides`. `croc_preset` has its own argument,
# `croc_pretraining` follows the stage and `prompt_pool_calibrated` is state, so none of them belongs here.
CROC_OVERRIDABLE_FIELDS: frozenset[str] = frozenset(CROC_FIELD_NAMES) - {
    "croc_preset", "croc_pretraining", "prompt_pool_calibrated"}


@dataclass
class CrocTrainingArguments(TrainingArguments):
    r"""
    Training arguments of the Croc stages. Every stage-dependent option left at `None` takes the value of the stage
    (`trainer.stages.STAGES`) and of the Croc preset; explicit values win.

    Parameters that differ from [`~transformers.TrainingArguments`] defaults: `lr_scheduler_type="cosine"`,
    `warmup_steps=0.03` (a ratio), `num_train_epochs=1`, `logging_steps=1`, `remove_unused_columns=False` (the
    collator already builds exactly the model inputs), and `adam_beta1` / `adam_beta2` default to the preset's.

    All meaning lives here, in `__post_init__`, so building the arguments from Python behaves exactly as from a YAML
    file: `global_batch_size` derives `gradient_accumulation_steps` (over the processes `WORLD_SIZE` announces),
    and every value that cannot work is refused with a `ValueError` before anything is loaded.
    """

    # ---- stage and preset ----
    stage: str | None = field(
        default=None,
        metadata={"help": "Training stage: '1' (projector alignment), '1.5' (Croc pretraining) or '2' (instruction "
                  "tuning). Required. Picks the trainable parts, template, objectives and default learning rates."},
    )
    croc_preset: str = field(
        default="paper",
        metadata={"help": "'paper' (the paper's method and hyperparameters), 'official' (the released Croc code's: "
                  "nearest-neighbour matching, VTR head, normalised tokens, betas (0.9, 0.999), its learning "
                  "rates) or 'victor' (the released ViCToR code's: per-sample Hungarian, linear head, causal "
                  "attention, trainable vision tower). Applied to the model config and to the optimiser defaults "
                  "(modeling_croc.presets)."},
    )
    croc_overrides: dict[str, Any] | None = field(
        default=None,
        metadata={"help": "CrocConfig fields set on top of the preset, e.g. {mask_ratio: 0.5, prompt_pool_size: "
                  "1024}. Allowed keys: " + ", ".join(sorted(CROC_OVERRIDABLE_FIELDS)) + ". In stage 2 only "
                  + ", ".join(sorted(CROC_FIELDS_OUTSIDE_OBJECTIVES)) + " acts (the others are warned of)."},
    )

    # ---- what trains, and how fast ----
    trainable_parts: list[str] | None = field(
        default=None,
        metadata={"help": "Parameter groups to train, from " + ", ".join(PARAMETER_GROUPS) + ". Default: the "
                  "stage's parts, the groups the preset gives a learning rate in this stage, and every group given "
                  "an explicit learning rate. The rest is frozen."},
    )
    projector_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of the multimodal projector (None: stage/preset default)."}
    )
    prompt_pool_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of the prompt pool (None: stage/preset default)."}
    )
    vtr_head_lr: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the VTR head, where the model has one (None: stage/preset default)."},
    )
    language_model_lr: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the language model incl. embeddings and lm_head (None: stage default)."},
    )
    vision_tower_lr: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the vision tower. None: the preset's (frozen in every Croc stage; 2e-6 "
                  "in ViCToR's stages 1.5 and 2); setting it unfreezes the tower."},
    )
    adam_beta1: float | None = field(
        default=None, metadata={"help": "AdamW beta1 (None: the preset's, 0.9)."}
    )
    adam_beta2: float | None = field(
        default=None, metadata={"help": "AdamW beta2 (None: the preset's: 0.98 for 'paper', 0.999 for 'official' and 'victor')."}
    )
    global_batch_size: int | None = field(
        default=None,
        metadata={"help": "Samples per optimiser step over all processes. When set, gradient_accumulation_steps is "
                  "derived from it and must divide exactly (checked before anything runs)."},
    )
    gradient_accumulation_steps: int | None = field(
        default=None,
        metadata={"help": "Micro-batches per optimiser step. Derived from global_batch_size when that is set (a "
                  "different explicit value is an error); otherwise 1."},
    )

    # ---- data ----
    template: str | None = field(
        default=None, metadata={"help": f"Conversation template ({', '.join(map(repr, TEMPLATES))}: "
                                  "modeling_croc.conversation.TEMPLATES); None: the stage's, or in stages 1.5 "
                                  "and 2 the model family's own chat format (qwen2_vl for Qwen2.5-VL, ...); "
                                  "another named on such a family is warned about."}
    )
    image_aspect_ratio: str | None = field(
        default=None, metadata={"help": "'square' (resize) or 'pad' (pad to square with the mean colour); None: "
                                "the stage's. LLaVA-1.5 only: the other families' processors prepare images their "
                                "own way, and refuse a value named on the command line (one from a YAML is passed "
                                "over with a log line)."}
    )
    model_max_length: int | None = field(
        default=None, metadata={"help": "Maximum tokens per sample, image tokens included; None: the stage's."}
    )
    group_by_modality_length: bool = field(
        default=False,
        metadata={"help": "Sample batches that are all-image or all-text and of similar length (LLaVA's "
                  "modality-grouped sampler)."},
    )

    packing: bool = field(
        default=False,
        metadata={"help": "Pack the samples of a micro-batch into fewer rows instead of padding each to the longest "
                  "(trainer.collator): first-fit in the sampler's order, position_ids restarting per sample, no "
                  "label crossing from one sample into the next, images whole, every image's token mask and the "
                  "step's loss counts unchanged. A step still holds per_device_train_batch_size samples per process, "
                  "so losses and gradients equal the padded run's; only the padding work goes. Works in every "
                  "stage with eager, sdpa and flex_attention (stage 1.5: the mixed mask is built per sample) and "
                  "croc_split (no mask: each sample's segments are attended on their own), and in stages 1 and 2 "
                  "with FlashAttention (its varlen kernel; the micro-batch becomes one row)."},
    )
    packing_max_length: int | None = field(
        default=None,
        metadata={"help": "Token budget of one packed row. None: the longest sample of each micro-batch, so a "
                  "packed batch is never wider than the padded one (right for eager and sdpa, whose masked "
                  "attention costs the row length squared whatever the mask hides); a value >= model_max_length: "
                  "a fixed budget, fewer and longer rows (for flex_attention, which skips the blocks between "
                  "samples, and croc_split, where no segment reads another sample's keys); 0: the whole micro-batch "
                  "in one row (what FlashAttention needs; set by itself for a "
                  "FlashAttention backend). Only with packing."},
    )

    # ---- Croc specifics ----
    pool_calibration_images: int = field(
        default=64,
        metadata={"help": "How many of the first training images draw the prompt pool when the preset initialises "
                  "it from visual-token statistics ('visual_stats') and it is not calibrated yet."},
    )
    log_pool_utilisation: bool = field(
        default=True,
        metadata={"help": "Log pool_utilisation (share of pool tokens assigned at least once in the logging window) "
                  "and pool_entropy (entropy of the assignment histogram, nats) in stage 1.5."},
    )
    auto_resume: bool = field(
        default=True,
        metadata={"help": "Resume from the newest intact checkpoint in output_dir when resume_from_checkpoint is not "
                  "given, so rerunning the same command continues a killed or preempted run."},
    )

    # transformers' help offers samplers this trainer refuses, and calls resume_from_checkpoint unused by the Trainer.
    train_sampling_strategy: str = field(
        default="random",
        metadata={"help": "Order of the training rows: 'random' or 'sequential'. The length-grouped samplers "
                  "('group_by_length', 'batch_rebalance') need a length column the rows do not carry and are "
                  "refused; LLaVA's grouping is group_by_modality_length.",
                  "choices": ["random", "sequential", "group_by_length", "batch_rebalance"]},
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "A checkpoint-N folder to resume from (written by a run of this configuration), or true: "
                  "the newest intact checkpoint of output_dir (refused when it holds none). Unset: auto_resume "
                  "decides. A checkpoint older than output_dir's newest rolls back: the later ones are kept as "
                  "checkpoint-N-abandoned (not resumed, rotated or replaced). Save and logging steps "
                  "are this command's, not the checkpoint's."},
    )

    # ---- a run that ends well ----
    resume_accept_changes: list[str] | None = field(
        default=None,
        metadata={"help": "Values that may differ from the checkpoint's when resuming, taking effect from the resumed "
                  "step on: optimiser and schedule values (the optimiser keeps its moments), and `processor` (the "
                  "model source's tokenizer, image processor and chat template, read again at a resume): any of "
                  + ", ".join(ADJUSTABLE) + ". Without it such a change is refused, since the checkpoint's "
                  "optimiser and scheduler state would silently keep the old values. Changes of the stage, model, "
                  "data, batch or trained parts are always refused (trainer.run_record)."},
    )
    max_nonfinite_steps: int = field(
        default=0,
        metadata={"help": "Optimiser steps with a non-finite loss or gradient norm that are skipped (no update) "
                  "before the run stops. 0: stop at the first, naming the step and the newest checkpoint. The "
                  "weights are never updated with, nor saved holding, non-finite values."},
    )
    preemption_signals: list[str] = field(
        default_factory=lambda: ["SIGTERM", "SIGUSR1"],
        metadata={"help": "Signals that make the run finish its step, write a complete checkpoint and exit with "
                  f"status {PREEMPTED_EXIT_CODE}: SIGTERM (sent before a kill by Slurm, Kubernetes, torchrun) and "
                  "SIGUSR1, where it reaches the training processes themselves (a process started without a "
                  "launcher; torchrun does not forward SIGUSR1 and dies of it, so under torchrun Slurm's "
                  "--signal=B:USR1@SECONDS goes to the batch script, which sends SIGTERM: docs/SCALING.md). "
                  "Rerunning the same command resumes. Ctrl-C (SIGINT) always does the same; pressed twice it "
                  "interrupts at once."},
    )
    save_interval_minutes: float | None = field(
        default=None,
        metadata={"help": "Also write a checkpoint whenever this much wall time passed since the last one, so a "
                  "run killed without warning (a node lost) loses at most this much work. None: off."},
    )

    # ---- Hub ----
    hub_dry_run: str | None = field(
        default=None,
        metadata={"help": "Write exactly what push_to_hub would upload (config, safetensors, processor files, model "
                  "card) into this folder instead of uploading. No network."},
    )
    hub_license: str | None = field(
        default=None,
        metadata={"help": "Licence id in the model card metadata. Default: inherited from the parts' cards (stage 1) "
                  "or the previous stage's card (e.g. llama2 for Vicuna), `unknown` when none states one."},
    )
    hub_datasets: list[str] | None = field(
        default=None,
        metadata={"help": "Dataset ids added to the model card metadata, on top of those inherited from the previous "
                  "stage and the data recipe's card (e.g. liuhaotian/LLaVA-Pretrain). A YAML's hub_datasets name "
                  "its data.path: given another --data.path, the run leaves them off the card (a log line says "
                  "so) unless --hub_datasets is given too; --hub_datasets='[]' adds none."},
    )
    hub_strategy: str = field(
        default="end",
        metadata={"help": "When to push: only `end` (the final folder, after the leak check of trainer.hub). The "
                  "Trainer's other strategies upload output_dir or checkpoints (optimizer states, training_args.bin "
                  "with the token) from inside the training loop, unchecked, and are refused."},
    )
    # transformers' help says it pushes "every time the model is saved": here only the final folder is pushed.
    push_to_hub: bool = field(
        default=False,
        metadata={"help": "Upload the final model folder (weights, processor, model card) to the Hub once, when the "
                  "run ends, after the leak check of trainer.hub; checkpoints are never pushed. The repository is "
                  "hub_model_id, else named after output_dir."},
    )
    hub_eval_results: list[str] | None = field(
        default=None, metadata={"help": "lmms-eval results files (*_results.json) whose metrics the card reports."}
    )

    # ---- changed TrainingArguments defaults ----
    learning_rate: float = field(
        default=DEFAULT_LEARNING_RATE,
        metadata={"help": "Fallback rate of a trained part that has no rate of its own: every part a stage trains "
                  "gets its rate from projector_lr / prompt_pool_lr / vtr_head_lr / language_model_lr / "
                  "vision_tower_lr, else from the stage and preset (the `learning rates:` log line says which). A "
                  "value no part uses is refused: set the part's *_lr instead."},
    )
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule (table 7: cosine)."})
    warmup_steps: float = field(default=0.03, metadata={"help": "Warm-up steps, or a ratio in [0, 1) (0.03)."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs per stage (1)."})
    logging_steps: float = field(default=1, metadata={"help": "Log every N optimiser steps."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the Croc collator already returns only model inputs."}
    )
    ddp_timeout: int = field(
        default=4 * 3600,
        metadata={"help": "Seconds a process waits in a collective before the run is aborted (transformers: 1800). "
                  "At the start the main process alone reads, checks and measures the rows while the others wait "
                  "for its result: on the 1.5M-row mixture that can outlast 30 minutes, and NCCL's watchdog would "
                  "end the run. A crashed process still ends the run at once (the launcher sees it)."},
    )

    def __post_init__(self) -> None:
        check_training_values(self)  # the values as given, before anything below divides by or resolves them
        if self.stage is None:
            raise ValueError("`stage` is required: one of '1', '1.5', '2'")
        spec = get_stage(self.stage)
        self.stage = spec.name
        if self.croc_preset not in CROC_PRESET_NAMES:
            raise ValueError(f"croc_preset must be one of {CROC_PRESET_NAMES}, got {self.croc_preset!r}")
        self._check_croc_overrides()
        beta1, beta2 = get_preset(self.croc_preset).adam_betas
        self.adam_beta1 = beta1 if self.adam_beta1 is None else self.adam_beta1
        self.adam_beta2 = beta2 if self.adam_beta2 is None else self.adam_beta2
        # Whether the run named its template: where it did not, a family with a chat format of its own (Qwen2.5-VL,
        # Gemma 3, ...) replaces the stage's chat template once the model's config is read (`trainer.resolve`).
        self.template_named = self.template is not None
        self.template = spec.template if self.template is None else self.template
        if self.template not in TEMPLATES:
            raise ValueError(f"unknown template {self.template!r}; known: {', '.join(TEMPLATES)}")
        # Whether the run named it: a family whose processor does not apply it refuses a named value
        # (`trainer.resolve.use_family_data_path`).
        self.image_aspect_ratio_named = self.image_aspect_ratio is not None
        self.image_aspect_ratio = spec.image_aspect_ratio if self.image_aspect_ratio is None else self.image_aspect_ratio
        if self.image_aspect_ratio not in IMAGE_ASPECT_RATIOS:
            raise ValueError(f"image_aspect_ratio must be one of {IMAGE_ASPECT_RATIOS}, got {self.image_aspect_ratio!r}")
        self.model_max_length = spec.model_max_length if self.model_max_length is None else self.model_max_length
        self._check_optimiser_values()
        self._check_run_control()
        self._check_packing()
        self._derive_accumulation_steps()
        self._resolve_parameter_groups(spec)
        # transformers' `__post_init__` joins the process group (its device): every process of a launched run must
        # have got this far, or the others would wait there for one that stopped (`startup_agreement`).
        arrive(self.ddp_timeout)
        super().__post_init__()

    def _check_optimiser_values(self) -> None:
        """A learning rate of 0 trains nothing and a negative one climbs the loss (gradient ascent) without any error
        downstream; betas outside [0, 1) make AdamW diverge or fail late."""
        rates = {"learning_rate": self.learning_rate,
                 **{f"{group}_lr": getattr(self, f"{group}_lr") for group in PARAMETER_GROUPS}}
        for name, rate in rates.items():
            if rate is not None and not rate > 0:  # `not >` also refuses NaN
                raise ValueError(f"{name} must be > 0, got {rate} (leave a part frozen with trainable_parts instead)")
            if rate is not None and not math.isfinite(rate):  # the first update would make every weight inf or NaN
                raise ValueError(f"{name} must be a finite number, got {rate}")
        for name in ("adam_beta1", "adam_beta2"):
            beta = getattr(self, name)
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {beta}")

    def _check_run_control(self) -> None:
        unknown = sorted(set(self.resume_accept_changes or []) - set(ADJUSTABLE))
        if unknown:
            close = {key: difflib.get_close_matches(str(key), ADJUSTABLE, n=1, cutoff=0.6) for key in unknown}
            hint = "; ".join(f"{key} -> {match[0]}" for key, match in close.items() if match)
            raise ValueError(f"resume_accept_changes: {unknown} cannot be accepted" + (f" (did you mean: {hint})"
                             if hint else "") + f"; it takes optimiser and schedule values, and processor: {', '.join(ADJUSTABLE)}")
        if self.max_nonfinite_steps < 0:
            raise ValueError(f"max_nonfinite_steps must be >= 0, got {self.max_nonfinite_steps}")
        if self.save_interval_minutes is not None and not self.save_interval_minutes > 0:
            raise ValueError(f"save_interval_minutes must be > 0 (or unset), got {self.save_interval_minutes}")
        for name in self.preemption_signals or []:
            try:
                number = signal_number(str(name))
            except ValueError as error:
                raise ValueError(f"preemption_signals: {error}") from None
            if number in (signal.SIGKILL, signal.SIGSTOP):
                raise ValueError(f"preemption_signals: {number.name} cannot be caught by any process")
            if number.name not in PREEMPTION_SIGNAL_CHOICES:
                raise ValueError(f"preemption_signals: {number.name} does not ask a process to end; use "
                                 f"{', '.join(PREEMPTION_SIGNAL_CHOICES)}")

    def _check_packing(self) -> None:
        if self.packing_max_length is None:
            return
        if not self.packing:
            raise ValueError(f"packing_max_length={self.packing_max_length} without packing=true; set both or neither")
        if self.packing_max_length < 0 or 0 < self.packing_max_length < self.model_max_length:
            raise ValueError(
                f"packing_max_length={self.packing_max_length}: must be 0 (one row per micro-batch) or at least "
                f"model_max_length={self.model_max_length}, so that every sample fits in a packed row whole"
            )

    def _derive_accumulation_steps(self) -> None:
        """`global_batch_size` = per-device batch x processes x accumulation steps, exactly."""
        if self.global_batch_size is None:
            self.gradient_accumulation_steps = self.gradient_accumulation_steps or 1
            return
        world = launched_world_size()
        per_device, total = self.per_device_train_batch_size, self.global_batch_size
        if total % (per_device * world):
            divisible = total // world if total % world == 0 else total
            raise ValueError(
                f"global_batch_size={total} does not divide by per_device_train_batch_size={per_device} x {world} "
                f"process(es); choose a per-device batch that divides {divisible}"
            )
        derived = total // (per_device * world)
        if self.gradient_accumulation_steps not in (None, derived):
            raise ValueError(
                f"global_batch_size={total} != per_device_train_batch_size={per_device} x {world} process(es) x "
                f"gradient_accumulation_steps={self.gradient_accumulation_steps}; drop gradient_accumulation_steps "
                f"(it is derived: {derived})"
            )
        self.gradient_accumulation_steps = derived

    def _check_croc_overrides(self) -> None:
        if self.croc_overrides is not None and not isinstance(self.croc_overrides, dict):
            raise ValueError(f"croc_overrides must be a mapping of CrocConfig fields, e.g. {{mask_ratio: 0.5}}; got "
                             f"{self.croc_overrides!r}")
        unknown = set(self.croc_overrides or {}) - CROC_OVERRIDABLE_FIELDS
        if unknown:
            hint = " (use `croc_preset`; `croc_pretraining` follows the stage)" if unknown & {
                "croc_preset", "croc_pretraining"} else ""
            close = {key: difflib.get_close_matches(str(key), sorted(CROC_OVERRIDABLE_FIELDS), n=1, cutoff=0.6)
                     for key in sorted(unknown, key=str)}
            if any(close.values()):
                hint += " (did you mean: " + "; ".join(f"{key} -> {match[0]}" for key, match in close.items()
                                                       if match) + ")"
            raise ValueError(
                f"croc_overrides: unknown or reserved keys {sorted(unknown)}{hint}; allowed: "
                f"{', '.join(sorted(CROC_OVERRIDABLE_FIELDS))}"
            )
        unused = sorted(set(self.croc_overrides or {}) - CROC_FIELDS_OUTSIDE_OBJECTIVES)
        if get_stage(self.stage).name == "2" and unused:
            # Stage 1 may set them for the stages after it (the pool's size is a saved parameter's shape); stage 2
            # continues stage 1.5's folder, whose config then no longer says what stage 1.5 trained with.
            logger.warning("croc_overrides %s in stage 2, which runs without the Croc objectives that read them: "
                           "they only change the saved config's record of stage 1.5's settings", unused)
        if self.croc_overrides:
            # YAML reads `5` as an int and `1e-1` (no dot) as a string; the config's float fields take floats only
            # (strict typing).
            self.croc_overrides = {key: _as_float(value) if _takes_float(key) else value
                                   for key, value in self.croc_overrides.items()}
            for key, value in self.croc_overrides.items():
                if isinstance(value, float) and not math.isfinite(value):  # the config's range checks pass NaN
                    raise ValueError(f"croc_overrides: {key} must be a finite number, got {value}")

    def _resolve_parameter_groups(self, spec) -> None:
        """Fill `trainable_parts` and the four `*_lr` fields with the effective values (None = frozen)."""
        explicit = {group for group in PARAMETER_GROUPS if getattr(self, f"{group}_lr") is not None}
        if self.trainable_parts is None:
            # The preset may train more than the stage does (ViCToR trains the vision tower in stages 1.5 and 2).
            preset_parts = set(get_preset(self.croc_preset).stage_learning_rates(spec.name))
            parts = set(spec.trainable_parts) | preset_parts | explicit
        else:
            parts = set(self.trainable_parts)
            unknown = parts - set(PARAMETER_GROUPS)
            if unknown:
                raise ValueError(f"trainable_parts: unknown groups {sorted(unknown)}; known: {PARAMETER_GROUPS}")
            frozen_with_lr = explicit - parts
            if frozen_with_lr:
                raise ValueError(
                    f"learning rates given for {sorted(frozen_with_lr)}, which trainable_parts leaves frozen"
                )
        if not spec.croc_pretraining:
            # Stages 1 and 2 run without the Croc objectives: the prompt pool and the VTR head are not in their
            # forward pass, so no gradient reaches them and a rate given for them would be logged, never trained.
            asked = sorted(set(CROC_OBJECTIVE_PARTS) & (explicit | set(self.trainable_parts or ())))
            if asked:
                raise ValueError(f"stage {spec.name} runs without the Croc objectives, so the parts {asked} get no "
                                 "gradient and would not train; leave them out of trainable_parts and drop their "
                                 "*_lr (they train in stage 1.5)")
        falls_back: list[str] = []
        for group in PARAMETER_GROUPS:
            name = f"{group}_lr"
            if group not in parts:
                setattr(self, name, None)
                continue
            if getattr(self, name) is None:
                default = spec.default_learning_rate(self.croc_preset, group)
                if default is None:
                    logger.warning("stage %s has no learning rate for %s; using learning_rate=%s",
                                   spec.name, group, self.learning_rate)
                    default = self.learning_rate
                    falls_back.append(group)
                setattr(self, name, default)
        self.trainable_parts = [group for group in PARAMETER_GROUPS if group in parts]
        if not falls_back and self.learning_rate != DEFAULT_LEARNING_RATE:
            # Every trained part has a rate of its own, so learning_rate reaches no parameter: a value given for it
            # (`--learning_rate=1e-5`, as LLaVA's scripts write it) would be recorded, logged as accepted on a
            # resume, and silently not trained with.
            rates = ", ".join(f"{group} {getattr(self, f'{group}_lr'):g}" for group in self.trainable_parts)
            flags = " ".join(f"--{group}_lr=..." for group in self.trainable_parts)
            raise ValueError(
                f"learning_rate={self.learning_rate:g} is used by no part: stage {spec.name} trains each part at its "
                f"own rate ({rates}); set those instead ({flags})"
            )

    @property
    def group_learning_rates(self) -> dict[str, float]:
        """Learning rate of every trainable group, in `PARAMETER_GROUPS` order."""
        return {group: getattr(self, f"{group}_lr") for group in self.trainable_parts}

    @property
    def stage_spec(self):
        """The `StageSpec` of `stage`."""
        return get_stage(self.stage)

    @property
    def croc_fields(self) -> dict[str, Any]:
        """The `CrocConfig` fields this run sets: the preset, the stage's objectives and the overrides."""
        return {"croc_preset": self.croc_preset, "croc_pretraining": self.stage_spec.croc_pretraining,
                **(self.croc_overrides or {})}
