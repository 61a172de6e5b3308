"""`CrocTrainer`: the transformers `Trainer` with Croc's loss bookkeeping, parameter groups and sampling.

* Loss: the model returns `loss = lm_loss + vtr_loss_weight * vtr_loss`. The LM term is normalised by
  `num_items_in_batch` (supervised tokens of the whole optimiser step), as transformers does; the VTR term is
  normalised the same way by `num_vtr_items_in_batch` (VTR target tokens of the whole step, counted in
  `get_batch_samples` over the accumulated micro-batches and all-reduced over processes). The Trainer then scales
  the total exactly as it scales a plain LM loss, so accumulation and data parallelism leave the step unchanged.
* Masks: each micro-batch gets a generator derived from the seed, the global step and its position in the step
  (`trainer.croc_rng`), so masks do not depend on the batch split and a resumed run draws the same masks.
* Logs: `lm_loss`, `vtr_loss`, `vtr_share`, the VTR prediction and target norms, `pool_utilisation`, `pool_entropy`,
  `aux_loss` where the model adds an auxiliary term to its loss (a mixture of experts' router load-balancing loss,
  `output_router_logits`) and the per-group learning rates are merged into
  the Trainer's own logs (console, TensorBoard, `trainer_state.json`).
* Data: every batch's rows are counted, and rows replaced because their image could not be read are counted and
  written to `<output_dir>/rejects.jsonl` (`trainer.data_report`); past the run's budget the run stops with one line.
* Checkpoints are atomic: written under a staging name and renamed once complete (`trainer.checkpoint_io`); a run
  resumes from the newest complete `checkpoint-N` and says which incomplete ones it skipped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from accelerate.utils import gather_object
from safetensors import SafetensorError
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from modeling_croc.provenance import Provenance
from modeling_croc.stage15 import share_of_step
from modeling_croc.write_failures import is_write_failure, write_failure_reason

from .calibration import calibrate_prompt_pool
from .checkpoint_io import (
    STAGING_DIR,
    TRAINER_STATE,
    checkpoint_folders,
    checkpoint_problem,
    discard_staging,
    has_full_weights,
    last_complete_checkpoint,
    load_weights_into,
    promote_checkpoint,
    rotate_checkpoints,
    set_aside_later_checkpoints,
    write_manifest,
)
from .cli import ConfigError
from .collator import DATA_REPORT_KEY
from .croc_rng import MicroBatchDraws, mask_generator, step_draw_offsets
from .data_report import REJECTS_FILE, DataReport
from .fingerprints import weights_fingerprint
from .logging_window import LoggingWindow
from .metrics import CrocMetrics
from .output_lock import OutputDirLock
from .resume import continue_hint
from .run_control import (
    OutputDirTakenOver,
    RunControl,
    RunStopped,
    StopSignals,
    TrainingDiverged,
    first_nonfinite_parameter,
    workers_ended_by_sigkill,
)
from .run_record import ApplyAcceptedChanges, write_run_record
from .sampler import ModalityGroupedSampler
from .stages import PARAMETER_GROUPS, parameter_group

logger = logging.getLogger(__name__)

# Key under which `get_batch_samples` attaches the per-micro-batch draw information; popped before the forward.
DRAWS_KEY = "_croc_draws"
BASE_CONFIG_DIR = "base_config"
# In BASE_CONFIG_DIR: the `weights_fingerprint` of the base weights a LoRA run adapts. The run record stays on this
# machine, and a pushed adapter names its base by folder name only: this lets `trainer.merge_lora` refuse a base of
# other weights wherever the adapter is merged.
BASE_WEIGHTS_FILE = "base_weights.json"


def apply_liger_kernels(model, kernel_config: dict | None = None) -> None:
    """`use_liger_kernel` for a Croc model, which Liger does not know by its model type: the LM loss is computed by
    Liger's fused linear cross-entropy (no logits in training), and the language model gets its family's Liger
    kernels (norms, MLP, rotary embeddings: `liger_kernel.transformers._apply_liger_kernel_to_instance` on it)."""
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    model.fused_lm_loss = True
    kernels = {**(kernel_config or {}), "cross_entropy": False, "fused_linear_cross_entropy": False}
    _apply_liger_kernel_to_instance(model=model.model.croc_language_model, **kernels)


class EpochSeededModalitySampler(ModalityGroupedSampler):
    """`ModalityGroupedSampler` whose order depends only on (seed, epoch): the Trainer's `set_epoch` reaches it
    through accelerate's dataloader, so a run resumed in any epoch replays that epoch's order."""

    def __init__(self, *args, seed: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


def _epoch_seeded_sampler(loader) -> EpochSeededModalitySampler | None:
    """The `EpochSeededModalitySampler` under a (wrapped, sharded, skipping) data loader, or None."""
    seen, todo = set(), [loader]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, EpochSeededModalitySampler):
            return item
        todo.extend(getattr(item, name, None) for name in ("batch_sampler", "sampler", "_loader"))
    return None


def packed_tokens_mask(input_ids: torch.Tensor, position_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """`(R, L)` bool: the tokens of a packed batch's samples, without each row's padding tail. The tail is the row's
    last segment of its own positions (from its last 0) when every one of its ids is the pad id; a sample ending in
    an EOS that is also the pad token keeps that token."""
    index = torch.arange(position_ids.shape[-1], device=position_ids.device).expand_as(position_ids)
    last_segment = index >= torch.where(position_ids == 0, index, 0).amax(-1, keepdim=True)
    all_pad = ((input_ids == pad_token_id) | ~last_segment).all(-1, keepdim=True)
    return ~(last_segment & all_pad)


# The Trainer warns when a resumed checkpoint's `trainer_state.json` was written with another per-device batch,
# `logging_steps` or `save_steps`. Here the run record has already decided each of those before the model loaded
# (`trainer.resume.plan_resume`: a change that alters the run is refused, one that does not, such as the same global
# batch split over other processes, is taken), so the warning would only cast doubt on an exact resume.
CHECKPOINT_ARGUMENTS_WARNING = "Warning: The following arguments do not match the ones in the `trainer_state.json`"


def _without_checkpoint_arguments_warning(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(CHECKPOINT_ARGUMENTS_WARNING)


class CrocTrainer(Trainer):
    """Trainer for the three Croc stages; `args` is a `CrocTrainingArguments`.

    Args:
        provenance: base models, licences and datasets the run inherits, for the model card
            (`trainer.model_card.run_provenance`).
        data_report: the run's `DataReport` (from `trainer.data_loading.load_training_rows`); a new one writing to
            `<output_dir>/rejects.jsonl` when not given.
        *args, **kwargs: as `transformers.Trainer`.
    """

    def __init__(self, *args, provenance: Provenance | None = None, data_report: DataReport | None = None,
                 run_record: dict | None = None, stop_signals: StopSignals | None = None,
                 output_lock: OutputDirLock | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.provenance = provenance or Provenance()
        self.data_report = data_report if data_report is not None else DataReport(
            source="train_dataset", rejects_path=Path(self.args.output_dir).absolute() / REJECTS_FILE,
            writes=self.args.should_save, logs=self.args.should_log)  # said once, not once per GPU
        self.run_record = run_record
        # Signals handled by whoever started the run (`trainer.train.main` installs them before the data loads);
        # otherwise the trainer installs its own for the duration of `train()`.
        self._own_signals = stop_signals is None
        self.run_control = RunControl(
            self, signals=stop_signals if stop_signals is not None else StopSignals(self.args.preemption_signals),
            max_nonfinite_steps=self.args.max_nonfinite_steps, save_interval_minutes=self.args.save_interval_minutes,
            output_lock=output_lock)
        self.add_callback(self.run_control)
        self.add_callback(ApplyAcceptedChanges(self.args.resume_accept_changes or []))
        self.logging_window = LoggingWindow(self)
        self.add_callback(self.logging_window)
        if self.args.use_liger_kernel:
            apply_liger_kernels(self.croc_model, self.args.liger_kernel_config)
        self._staging_root: str | None = None  # set while a checkpoint is being written (see `_save_checkpoint`)
        self._lock_lost_in_save = False  # see `_agreed_write_failure`
        config = self.croc_model.config
        pool_size = config.prompt_pool_size if config.croc_pretraining and self.args.log_pool_utilisation else None
        self._croc_metrics = CrocMetrics(pool_size=pool_size, vtr_loss_weight=config.vtr_loss_weight,
                                         croc_objectives=config.croc_pretraining)
        self._step_learning_rates: dict[str, float] = {}

    # ---- the model behind the wrappers ----
    @property
    def croc_model(self) -> torch.nn.Module:
        """The Croc model (either family) inside the accelerate / DeepSpeed / PEFT wrappers."""
        model = self.accelerator.unwrap_model(self.model)
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    @property
    def croc_objectives_on(self) -> bool:
        return bool(self.croc_model.config.croc_pretraining)

    # ---- training entry ----
    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs) -> TrainOutput:
        """Resolve the checkpoint (`True`: the newest intact one in `output_dir`, see
        `trainer.checkpoint_io.checkpoint_problem`), calibrate the pool on a fresh start, train.

        Ends early, by raising a `RunStopped`, when a step is not finite (`TrainingDiverged`); returns early, with
        `run_control.stopped_by` set and a checkpoint written, when a preemption signal arrives."""
        if self.args.should_save:
            try:
                discard_staging(self.args.output_dir)
            except OSError as error:  # left by another user in a shared folder, or read-only: before any step
                raise ConfigError(f"the unfinished checkpoint save in {self.args.output_dir}/{STAGING_DIR} cannot be "
                                  f"removed ({error.strerror or error}: {error.filename}); remove it and rerun the "
                                  "same command (nothing was trained)") from None
        if resume_from_checkpoint is True or (resume_from_checkpoint is None and self.args.auto_resume):
            last = last_complete_checkpoint(self.args.output_dir)
            if last is None and resume_from_checkpoint is True:
                raise ConfigError(f"resume_from_checkpoint=true but {self.args.output_dir} holds no intact "
                                  "checkpoint")
            resume_from_checkpoint = last
        elif isinstance(resume_from_checkpoint, str):
            problem = checkpoint_problem(resume_from_checkpoint)
            if problem is not None:
                raise ConfigError(f"checkpoint {resume_from_checkpoint} cannot be resumed: {problem}")
        if self.args.should_save:
            # Whatever this run would reach again is renamed, never replaced: a roll-back's abandoned line, the newer
            # checkpoints a resume passed over (not intact), every checkpoint of a run started over.
            moved = set_aside_later_checkpoints(self.args.output_dir, resume_from_checkpoint or None)
            if moved:
                why = ("rolling back to " + str(resume_from_checkpoint)
                       if isinstance(self.args.resume_from_checkpoint, str) else
                       f"resuming from {resume_from_checkpoint} past checkpoints that are not intact"
                       if resume_from_checkpoint else "starting over (auto_resume=false)")
                logger.warning("%s: the later checkpoints are kept as %s; they are not resumed, rotated or replaced",
                               why, ", ".join(f"{old.name} -> {new.name}" for old, new in moved))
        if resume_from_checkpoint:
            logger.info("resuming from %s", resume_from_checkpoint)
            self._restore_calibration_flag(resume_from_checkpoint)
            self.data_report.restore(resume_from_checkpoint)
            self.run_control.restore(resume_from_checkpoint)
            self.logging_window.restore(resume_from_checkpoint)
        else:
            self.logging_window.restore(None)
            calibrate_prompt_pool(self.croc_model, self.train_dataset, self.args.pool_calibration_images,
                                  self.args.seed)
        if self.args.save_strategy == "no" and self.args.save_interval_minutes is None and self.args.should_log:
            logger.warning("save_strategy=no: checkpoints are written only when the run is stopped by Ctrl-C or a "
                           "preemption signal; a run killed otherwise starts over (set save_strategy=steps, "
                           "save_steps=N or save_interval_minutes=M to resume from anywhere)")
        signals = self.run_control.signals
        if self._own_signals:
            signals.install()
        upstream = logging.getLogger("transformers.trainer_utils")
        upstream.addFilter(_without_checkpoint_arguments_warning)
        try:
            output = super().train(resume_from_checkpoint=resume_from_checkpoint or None, trial=trial, **kwargs)
        finally:
            upstream.removeFilter(_without_checkpoint_arguments_warning)
            if self._own_signals:
                signals.restore()
        return self._with_run_mean_loss(output)

    def _with_run_mean_loss(self, output: TrainOutput) -> TrainOutput:
        """`output` with the whole run's mean loss, as `log` gave it to the logs."""
        mean = None if self.preempted else self.run_control.run_mean_loss
        if mean is None:
            return output
        return TrainOutput(output.global_step, mean, {**(output.metrics or {}), "train_loss": mean})

    def _run_mean_train_loss(self, logs: dict[str, float]) -> None:
        """The final `train_loss` in `logs` as the mean loss of the whole run's applied steps (the model card states
        it), before any callback reads it: the Trainer's covers the steps of this `train()` call only, so a resumed
        run told the console, TensorBoard and W&B the mean of its last part, a rerun that trains nothing 0.0, and a
        skipped non-finite step counted as its stand-in value."""
        if self.preempted:
            return
        mean = self.run_control.run_mean_loss
        if mean is None:
            # Not known (resumed from an earlier version's checkpoint whose logs do not give it): the Trainer's value
            # is the mean of this call's steps only (0.0 for a rerun that trains nothing), which the card would state
            # as the run's; it states none instead.
            del logs["train_loss"]
        else:
            logs["train_loss"] = mean

    @property
    def preempted(self) -> bool:
        """Whether the last `train()` stopped for a preemption signal (its checkpoint written) before its end."""
        return self.run_control.stopped_by is not None

    def last_checkpoint_message(self) -> str:
        """Where the run can be resumed from, for messages: the newest checkpoint in `output_dir`, or that none
        was written yet."""
        folders = checkpoint_folders(self.args.output_dir)
        # The newest checkpoint of this run's own line: the one it wrote last, else the one it was resumed from. A
        # run rolled back (`resume_from_checkpoint` an older one) leaves the abandoned, higher-numbered checkpoints
        # in output_dir; the highest number names one of those.
        explicit = self.args.resume_from_checkpoint
        own = [Path(path) for path in (getattr(self, "_last_written_checkpoint", None),
                                       explicit if isinstance(explicit, str) else None) if path]
        newest = next((path for path in own if path.is_dir()), folders[0] if folders else None)
        if newest is None:
            return "no checkpoint was written yet (rerunning starts over)"
        hint = continue_hint(self.args, newest)
        how = "rerunning the same command resumes from it" if hint.startswith("rerun") else hint
        return f"the newest checkpoint is {newest} ({how})"

    def _run_epoch(self, *args, **kwargs) -> None:
        # Resumed from the last step's checkpoint (the run was stopped while writing its final folder): the Trainer
        # would start the epoch and take one step past max_steps before checking; there is nothing left to train.
        if 0 < self.state.max_steps <= self.state.global_step:
            self.control.should_training_stop = True
            return
        super()._run_epoch(*args, **kwargs)

    def _restore_calibration_flag(self, checkpoint: str) -> None:
        # The pool itself comes back with the checkpoint's weights; its config flag must follow, or the final
        # folder would claim an uncalibrated pool and the next run would redraw it.
        for folder in (Path(checkpoint), Path(checkpoint) / BASE_CONFIG_DIR):
            config_file = folder / "config.json"
            if config_file.is_file():
                saved = json.loads(config_file.read_text(encoding="utf-8"))
                if saved.get("prompt_pool_calibrated"):
                    self.croc_model.config.prompt_pool_calibrated = True
                return

    def _loads_weights_itself(self, folder: str, model) -> bool:
        """Plain (no DeepSpeed / FSDP / PEFT) models read full checkpoints through `checkpoint_io`: the Trainer
        would skip the Llava key renaming and silently keep most of the current weights."""
        wrapped = self.is_deepspeed_enabled or self.is_fsdp_enabled or hasattr(model, "get_base_model")
        return not wrapped and has_full_weights(folder)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = self.model if model is None else model
        try:
            if self._loads_weights_itself(resume_from_checkpoint, model):
                load_weights_into(model, resume_from_checkpoint)
                return
            super()._load_from_checkpoint(resume_from_checkpoint, model)
        except SafetensorError as error:
            # A weights file that is not what its manifest was made from (a manifest rewritten over a file cut short).
            raise ConfigError(f"{resume_from_checkpoint} cannot be resumed: its weights do not load "
                              f"({' '.join(str(error).split())}); resume another checkpoint") from None
        except (RuntimeError, ValueError) as error:
            # Weights of other shapes or names than this model's (a QLoRA checkpoint of an earlier version holds its
            # projector as packed 4-bit tensors; this one loads it in full precision): PyTorch's multi-line
            # traceback after the model loaded. One line, nothing trained; other errors (memory) stay as they are.
            detail = [line.strip() for line in str(error).splitlines() if line.strip()]
            if not detail or not detail[0].startswith(("Error(s) in loading state_dict", "checkpoint ")):
                raise
            raise ConfigError(f"{resume_from_checkpoint} cannot be resumed: its weights do not fit this model "
                              f"({' '.join(detail[:2])}); it was written by another version or configuration of "
                              "this trainer: resume it with that one, or train anew in another output_dir") from None

    def _load_best_model(self) -> None:
        if self._loads_weights_itself(self.state.best_model_checkpoint, self.model):
            load_weights_into(self.model, self.state.best_model_checkpoint)
            return
        super()._load_best_model()

    # ---- batches ----
    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.group_by_modality_length and hasattr(dataset, "modality_lengths"):
            # One optimiser step spans world_size x accumulation device batches; grouping over all of them keeps
            # each step's rows the same for any split of the step, but the length-balanced deal orders them by the
            # split, so stage 1.5's masks (drawn by position) depend on it: a resume refuses another per-device
            # batch (run_record's `per_device_split`).
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return EpochSeededModalitySampler(
                dataset.modality_lengths,
                batch_size=self.args.per_device_train_batch_size,
                world_size=self.args.world_size * self.args.gradient_accumulation_steps,
                seed=seed,
            )
        return super()._get_train_sampler(train_dataset)

    def get_train_dataloader(self):
        loader = super().get_train_dataloader()
        signals = self.run_control.signals
        if self.args.dataloader_num_workers > 0 and signals is not None:
            # The preemption signals are the training process's to handle: a worker killed by Slurm's SIGTERM to
            # the whole step ended the run with a traceback and no checkpoint. A resumed run's skipping loader is
            # built from this one's settings, this function included. Accelerate's loader forwards the settings of
            # the DataLoader it wraps (`base_dataloader`), which is the one that starts the workers.
            base = getattr(loader, "base_dataloader", loader)
            base.worker_init_fn = signals.ignored_in_data_workers(base.worker_init_fn)
            workers_ended_by_sigkill(base)
        return loader

    def get_resumed_dataloader(self, dataloader, num_batches: int):
        """The Trainer's mid-epoch skip, with the epoch still reaching the modality sampler. On several processes
        the skipped loader nests the sampler one level deeper (`SkipBatchSampler` -> `BatchSamplerShard` ->
        `BatchSampler` -> sampler) than `set_epoch` (accelerate's and the Trainer's) looks, so the resumed epoch was
        drawn in epoch 0's order: a run resumed in its second epoch or later trained other rows than the
        uninterrupted run."""
        resumed = super().get_resumed_dataloader(dataloader, num_batches)
        if self.args.dataloader_num_workers > 0 and self.run_control.signals is not None:
            # Its worker_init_fn is the one `get_train_dataloader` set, but the DataLoader starting the workers is new.
            workers_ended_by_sigkill(getattr(resumed, "base_dataloader", resumed))
        sampler = _epoch_seeded_sampler(resumed)
        if sampler is not None and hasattr(resumed, "set_epoch"):
            forward = resumed.set_epoch

            def set_epoch(epoch: int) -> None:
                forward(epoch)
                sampler.set_epoch(epoch)

            resumed.set_epoch = set_epoch
        return resumed

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device) -> tuple[list, object]:
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._count_rows(batch_samples, device)
        if batch_samples and self.croc_objectives_on:
            self._attach_draws(batch_samples, num_batches, device)
        return batch_samples, num_items_in_batch

    def _count_rows(self, batch_samples: list[dict], device: torch.device) -> None:
        """Take each batch's data report out of the batch, count the step's rows and replaced rows over every
        process, and stop the run once more images failed than the run accepts."""
        rows, replaced, truncated = 0, [], 0
        for batch in batch_samples:
            report = batch.pop(DATA_REPORT_KEY, None)
            rows += report["rows"] if report else int(batch["input_ids"].shape[0])
            replaced += report["replaced_rows"] if report else []
            truncated += len(report["truncated_rows"]) if report else 0
        if self.accelerator.num_processes > 1:
            # Every process must take the same decision, and the checkpoint (written by the main process) must hold
            # every process's rows: sum the counts, and gather the records only when some process has one.
            counts = self.accelerator.reduce(torch.tensor([rows, len(replaced), truncated], device=device),
                                             reduction="sum")
            rows, truncated = int(counts[0]), int(counts[2])
            if int(counts[1]):
                from accelerate.utils import gather_object

                replaced = gather_object(replaced)
        self.data_report.record(rows, replaced, step=self.state.global_step + 1, truncated=truncated)
        self.data_report.check_training()

    def _attach_draws(self, batch_samples: list[dict], num_batches: int, device: torch.device) -> None:
        """Count visual tokens and VTR targets of every micro-batch on every process; attach offsets and totals."""
        model = self.croc_model
        counts = torch.zeros(num_batches, 2, dtype=torch.long, device=device)
        for i, batch in enumerate(batch_samples):
            pixel_values = batch.get("pixel_values")
            num_images = 0 if pixel_values is None else int(pixel_values.shape[0])
            counts[i, 0] = int((batch["input_ids"] == model.config.image_token_id).sum())
            # AnyRes models count each image's own tokens from the batch's image layout (image_sizes, ...).
            layout = {name: batch[name] for name in model.croc_image_layout_inputs if name in batch}
            counts[i, 1] = model.num_vtr_items(batch["input_ids"], num_images, **layout)
        num_processes = self.accelerator.num_processes
        # Every process pads to `num_batches` rows, so the gather has one shape everywhere.
        everywhere = self.accelerator.gather(counts) if num_processes > 1 else counts
        everywhere = everywhere.view(num_processes, num_batches, 2)
        rank = self.accelerator.process_index
        offsets = step_draw_offsets(everywhere[..., 0], rank)
        # Same rule as `num_items_in_batch`: global when the Trainer averages tokens across devices.
        if self.args.average_tokens_across_devices:
            num_vtr_items = everywhere[..., 1].sum()
        else:
            num_vtr_items = everywhere[rank, :, 1].sum()
        step_vtr_items = everywhere[..., 1].sum().to(device)
        for batch, offset in zip(batch_samples, offsets):
            batch[DRAWS_KEY] = MicroBatchDraws(draw_offset=offset, num_vtr_items=num_vtr_items.to(device),
                                               step_vtr_items=step_vtr_items)

    def _track_num_input_tokens(self, inputs) -> None:
        # A packed batch has no attention_mask and the Croc processor no pad_token_id, so transformers counted its
        # padding tail too under include_num_input_tokens_seen=non_padding (the padded run's count, not the tokens
        # trained). The tail is each row's last position-0 segment when it is all padding (`PackingCollator._pack`
        # gives it positions of its own): read off the pad id alone, a last sample ending in an EOS that is also the
        # pad token lost that token.
        pad = getattr(self.data_collator, "pad_token_id", None)
        positions = inputs.get("position_ids")
        if (self.args.include_num_input_tokens_seen == "non_padding" and "attention_mask" not in inputs
                and positions is not None and positions.dim() == 2 and pad is not None):
            inputs = {**inputs, "attention_mask": packed_tokens_mask(inputs["input_ids"], positions, pad)}
        super()._track_num_input_tokens(inputs)

    # ---- non-finite steps ----
    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.run_control.observe_loss(loss)
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        # The Trainer computes the step's gradient norm here (after clipping, or unclipped when max_grad_norm is 0;
        # DeepSpeed's after its own step). tests/faults/test_faults_divergence.py pins that it is called each step.
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        self.run_control.observe_grad_norm(grad_norm)
        return grad_norm

    def _check_finite_weights(self, what: str) -> None:
        """Refuse to write non-finite weights (every process checks its parameters, or its ZeRO-3 partition)."""
        name = first_nonfinite_parameter(self.model)
        bad = torch.tensor([0.0 if name is None else 1.0], device=self.args.device)
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad, reduction="sum")
        if float(bad[0]) > 0:
            where = f" (first: {name})" if name else " (on another process)"
            raise TrainingDiverged(f"{what} not written at step {self.state.global_step}: the weights hold NaN or "
                                   f"infinite values{where}; {self.last_checkpoint_message()}")

    # ---- loss ----
    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        """The model's `lm_loss + vtr_loss_weight * vtr_loss`, both normalised over the whole optimiser step; the
        micro-batch's mask generator and step-wide VTR count go in with the inputs, the terms go to the logs."""
        draws: MicroBatchDraws | None = inputs.pop(DRAWS_KEY, None)
        if draws is not None and model.training:
            inputs["croc_generator"] = mask_generator(self.args.seed, self.state.global_step, draws.draw_offset)
            if num_items_in_batch is not None:
                inputs["num_vtr_items_in_batch"] = draws.num_vtr_items
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            # The rates this step's update will use (the scheduler moves them after the step, before logging).
            self._step_learning_rates = self._group_learning_rates()
            self._croc_metrics.add(
                step=self.state.global_step,
                scale=self._loss_share(num_items_in_batch),
                lm_loss=outputs.get("lm_loss"),
                vtr_loss=outputs.get("vtr_loss"),
                pool_ids=outputs.get("pool_ids"),
                vtr_norm_sums=outputs.get("vtr_norm_sums"),
                aux_loss=self._auxiliary_term(outputs, inputs, num_items_in_batch),
                num_vtr_items=None if draws is None else draws.step_vtr_items,
            )
        return (loss, outputs) if return_outputs else loss

    def _auxiliary_term(self, outputs, inputs, num_items_in_batch) -> torch.Tensor | None:
        """The model's auxiliary loss as this micro-batch's loss holds it (over its weight), or None where the loss
        holds none. The model adds `weight x share x aux_loss`, `share` being the micro-batch's part of the step's
        tokens (`stage15.share_of_step`), and only with an LM loss: summed like `lm_loss`, the logged `aux_loss` is
        then the step's term, the mean of its micro-batches' by their tokens."""
        aux_loss = outputs.get("aux_loss")
        if aux_loss is None or outputs.get("lm_loss") is None:
            return None
        # The count the model was given: the Trainer passes `num_items_in_batch` to a model that accepts loss kwargs.
        items = num_items_in_batch if self.model_accepts_loss_kwargs else None
        return share_of_step(inputs.get("labels"), inputs.get("shift_labels"), items) * aux_loss

    def _loss_share(self, num_items_in_batch) -> float:
        """The factor the Trainer applies to a micro-batch's loss (in `compute_loss` and `training_step`), so the
        logged terms add up over a step to the step's values exactly like its `loss`."""
        if num_items_in_batch is not None and self.model_accepts_loss_kwargs:
            return float(self.accelerator.num_processes // self.get_tp_size()) \
                if self.args.average_tokens_across_devices else 1.0
        return 1.0 / max(self.current_gradient_accumulation_steps, 1)

    # ---- logging ----
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: a window holding a skipped step is its applied steps' mean
            window = self.run_control.window_loss(self.state.global_step)
            # Without the filter such a window logs NaN, as the option asks (the Trainer's value is NaN then).
            if window is not None and self.args.logging_nan_inf_filter:
                logs["loss"] = window
            self.run_control.logged(self.state.global_step)
            if self._croc_metrics.has_data:
                logs.update(self._croc_metrics.compute(self.accelerator, self.state.global_step, loss=logs["loss"]))
                logs.update(self._step_learning_rates)
        if "train_loss" in logs:  # the Trainer's last entry, logged once `train()` ends
            self._run_mean_train_loss(logs)
        super().log(logs, start_time)

    def _maybe_log_save_evaluate(self, tr_loss: torch.Tensor, *args, **kwargs) -> None:
        super()._maybe_log_save_evaluate(tr_loss, *args, **kwargs)
        # With logging_nan_inf_filter=false a non-finite micro-batch loss enters the Trainer's running loss as it is,
        # and its reset after a log (`tr_loss -= tr_loss`) keeps NaN - NaN = NaN: once a step was skipped
        # (max_nonfinite_steps), every later log said NaN although those steps trained on finite losses. The window
        # holding the skipped step still logs NaN, as the option asks.
        if self._globalstep_last_logged == self.state.global_step and not bool(torch.isfinite(tr_loss).all()):
            tr_loss.zero_()

    def _group_learning_rates(self) -> dict[str, float]:
        rates = {}
        for group in getattr(self.optimizer, "param_groups", []):
            name = group.get("croc_group")
            if name is not None:
                rates[f"lr_{name}"] = float(group["lr"])
        return rates

    # ---- optimiser ----
    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """AdamW (or `args.optim`) over one parameter group per (part, decay): each part has its learning rate,
        biases and norms get no weight decay, frozen parameters are left out."""
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        rates = self.args.group_learning_rates
        buckets: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
        for name, param in opt_model.named_parameters():
            if not param.requires_grad:
                continue
            group = parameter_group(name)
            if group not in rates:
                raise ValueError(f"parameter {name} requires grad but its group {group!r} is not trainable "
                                 f"(trainable parts: {sorted(rates)})")
            buckets.setdefault((group, name in decay), []).append(param)
        param_groups = [
            {"params": params, "lr": rates[group], "croc_group": group, "croc_decays": decays,
             "weight_decay": self.args.weight_decay if decays else 0.0}
            for (group, decays), params in sorted(buckets.items(), key=lambda kv: (PARAMETER_GROUPS.index(kv[0][0]),
                                                                                    not kv[0][1]))
        ]
        optimizer_cls, optimizer_kwargs = self._optimizer_class_and_kwargs(opt_model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    def _optimizer_class_and_kwargs(self, model):
        if self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.hf_ds_config.is_offload():
            # ZeRO-Offload steps on the CPU: DeepSpeed's vectorised CPU Adam, with the same groups and betas.
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            return DeepSpeedCPUAdam, {"lr": self.args.learning_rate, "betas": (self.args.adam_beta1,
                                      self.args.adam_beta2), "eps": self.args.adam_epsilon, "adamw_mode": True}
        if self.optimizer_cls_and_kwargs is not None:
            return self.optimizer_cls_and_kwargs
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        optimizer_kwargs.pop("params", None)
        return optimizer_cls, optimizer_kwargs

    # ---- saving and the Hub ----
    def _get_output_dir(self, trial) -> str:
        # While a checkpoint is written, the Trainer's run folder is the staging folder: `checkpoint-N` is built
        # there in full, and the Trainer's rotation (which lists that folder) finds nothing older to delete.
        return self._staging_root if self._staging_root is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's checkpoint, written under `STAGING_DIR` and renamed to `checkpoint-N` once complete, with the
        data report, the run record and a manifest of every file; older checkpoints are rotated only after that
        (`save_total_limit`). Non-finite weights are never written; a write that fails (a full disk) stops the run
        with one line and leaves the earlier checkpoints as they were."""
        self._check_finite_weights(f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        # Before anything is staged: the staging folder is shared with whichever run holds output_dir's lock, and
        # `prepare` below empties it.
        self.run_control.check_output_dir_lock()
        run_dir = Path(super()._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging = run_dir / STAGING_DIR
        # Every process's open logging window (a collective, so before the parts, which may stop a process early).
        windows = self.logging_window.gather()

        def prepare() -> None:
            if self.args.should_save:
                discard_staging(run_dir)
                staging.mkdir(parents=True)

        def write_own_files() -> None:
            self._staging_root = str(staging)
            try:
                super(CrocTrainer, self)._save_checkpoint(model, trial)
            finally:
                self._staging_root = None

        def finish() -> None:
            if self.args.should_save:
                self.data_report.save(staging / name)
                self.run_control.save(staging / name)
                self.logging_window.save(staging / name, windows)
                if self.run_record is not None:
                    write_run_record(staging / name, self.run_record, step=self.state.global_step)
                if self._fix_best_checkpoint_path(staging, run_dir):
                    self.state.save_to_json(str(staging / name / TRAINER_STATE))
                write_manifest(staging / name)
                # The lock is read again right before the rename (after the flushes, which can take long): a run
                # that lost it while writing leaves its staged files, not a checkpoint among the new holder's.
                promote_checkpoint(staging / name, run_dir / name, before_rename=self._stop_if_lock_lost)
                shutil.rmtree(staging)
                self._stop_if_lock_lost()  # rotation deletes older checkpoints: the new holder's, by now
                rotate_checkpoints(run_dir, self.args.save_total_limit, keep=(self.state.best_model_checkpoint,))

        # Each part ends where every process has done it (the part's agreement takes the place of a barrier): a
        # write that failed on one process only (its RNG state, or the main process's files) stops every process
        # with the same line, where the others, waiting in a barrier, ended in gloo's "Connection closed by peer"
        # traceback once it had exited (on several nodes; on one node torchrun killed them without a word).
        # Under DeepSpeed (or FSDP) the Trainer's own writes run the library's collectives (ZeRO-3's weight gather,
        # DeepSpeed's closing barrier): a process whose write failed among them cannot agree with the others, who
        # wait in those collectives and would never reach the agreement (both sides hung). It stops on its own.
        sharded = self.is_deepspeed_enabled or self.is_fsdp_enabled
        for part, alone in ((prepare, False), (write_own_files, sharded), (finish, False)):
            failure = self._agreed_write_failure(part, alone_on_failure=alone)
            if self._lock_lost_in_save:
                # Nothing is cleaned up either: the staging folder may be the new holder's by now.
                self.run_control.check_output_dir_lock()
            if failure is not None:
                # A write that failed because a new holder of the lock emptied the staging folder: what is there
                # now is its own (a local read: a process stopping alone must not enter a collective).
                self._stop_if_lock_lost()
                if self.args.should_save:
                    shutil.rmtree(staging, ignore_errors=True)  # give the space back; the next start would remove it
                raise RunStopped(f"could not write {name} into {run_dir}: {failure}; nothing else was changed; "
                                 f"{self.last_checkpoint_message()}")
        self._last_written_checkpoint = str(run_dir / name)

    def _stop_if_lock_lost(self) -> None:
        """Within a save's writes (main process): stop them when output_dir's lock is no longer this run's."""
        lock = self.run_control.output_lock
        if lock is not None and not lock.verify():
            raise self.run_control.taken_over(lock.lost_message())

    def _agreed_write_failure(self, part, alone_on_failure: bool = False) -> str | None:
        """Run `part` (some of a checkpoint's writes) on this process, then agree with the others on whether a write
        failed on any of them (`is_write_failure`): the first failing process's reason, named when it is not the
        only one; None when every process wrote its files. Any other error is raised as it is. With
        `alone_on_failure` (a part whose writes run collectives), this process's failure is returned without the
        agreement, which the others, waiting in a collective it left, would not enter. A part stopped because the
        lock was lost (`OutputDirTakenOver`) sets `_lock_lost_in_save` on every process."""
        reason, lost = None, False
        try:
            part()
        except OutputDirTakenOver:
            lost = True
        except Exception as error:  # safetensors, torch.save and tokenizers raise their own: `is_write_failure`
            if not is_write_failure(error):
                raise
            reason = write_failure_reason(error)
        if self.args.world_size <= 1 or (reason is not None and alone_on_failure):
            self._lock_lost_in_save = lost
            return reason
        outcomes = gather_object([(reason, lost)])
        self._lock_lost_in_save = any(taken for _, taken in outcomes)
        reasons = [text for text, _ in outcomes]
        failed = [(rank, text) for rank, text in enumerate(reasons) if text is not None]
        if not failed:
            return None
        rank, text = failed[0]
        return f"{text} (on process {rank})"

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The Trainer's `save_model` (final folder, checkpoint, push), refused for non-finite weights (all processes
        call it, as under ZeRO-3)."""
        self._check_finite_weights(f"the model folder {output_dir or self.args.output_dir}")
        # With push_to_hub the Trainer's own save would upload all of output_dir here, unchecked; the run pushes
        # through `push_to_hub` below (`trainer.hub.push`: the scanned upload set only).
        super().save_model(output_dir, _internal_call=True)

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True,
                    token: str | None = None, revision: str | None = None, private: bool | None = None, **kwargs):
        """Upload the final folder's upload set (`trainer.hub.files_to_upload`: no local records, no checkpoints),
        after the leak scanner passed on it (`modeling_croc.upload_scan`)."""
        from .hub import push

        return push(self, commit_message=commit_message, token=token, revision=revision, private=private)

    def _fix_best_checkpoint_path(self, staging: Path, run_dir: Path) -> bool:
        """When this step's checkpoint is the best one (evaluation with `metric_for_best_model`), the Trainer recorded
        it under the staging folder: point it at the run folder, where it is about to be. Returns whether it changed."""
        best = self.state.best_model_checkpoint
        if best and Path(best).parent == staging:
            self.state.best_model_checkpoint = str(run_dir / Path(best).name)
            return True
        return False

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict=state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        model = self.accelerator.unwrap_model(self.model)
        if self.args.should_save and hasattr(model, "get_base_model"):
            # A LoRA folder holds only adapters; the base's effective Croc config (stage, preset, pool size) makes it
            # mergeable on its own (`trainer.merge_lora`).
            config = model.get_base_model().config.to_dict()
            config.pop("quantization_config", None)
            target = Path(output_dir) / BASE_CONFIG_DIR
            target.mkdir(parents=True, exist_ok=True)
            (target / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            # The run's start value where it has one (the weights it loaded), else the base as it is now.
            fingerprint = (self.run_record or {}).get("lora_base_weights") or weights_fingerprint(
                getattr(model.get_base_model(), "name_or_path", None))
            if fingerprint:
                (target / BASE_WEIGHTS_FILE).write_text(json.dumps({"weights_fingerprint": fingerprint}) + "\n",
                                                        encoding="utf-8")

    def create_model_card(self, model_name: str | None = None, **kwargs) -> None:
        """Write `README.md` in `output_dir`: the Croc model card (`trainer.model_card`) instead of the generic one."""
        if not self.is_world_process_zero():
            return
        from .model_card import build_model_card

        card = build_model_card(self, model_name=model_name)
        card.save(os.path.join(self.args.output_dir, "README.md"))
