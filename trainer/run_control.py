"""When a run stops, and what it leaves behind: non-finite steps, preemption signals and timed checkpoints.

Three promises, decided once per optimiser step and agreed by every process in one small all-reduce:

* **Divergence stops the run, not the weights.** A step whose loss (any micro-batch, any process) or gradient norm
  is not finite never reaches the weights: the run stops there with one line naming the step and the newest
  checkpoint (`TrainingDiverged`), or, with `max_nonfinite_steps` > 0, the step is skipped (its gradients dropped,
  no update) until that many steps were skipped, as large-scale trainers skip loss spikes. The count travels in
  every checkpoint (`NONFINITE_FILE`). Under fp16 the loss scaler (torch's GradScaler, DeepSpeed's fp16 optimiser)
  skips a step whose scaled gradients overflow and lowers its scale, routinely in the first steps: while its scale is
  at least 1 (DeepSpeed's: dynamic, and above its floor) such a step (its loss finite) is the scaler's, neither
  divergence nor counted.
* **Preemption saves.** SIGTERM (what Slurm and Kubernetes send before a kill) and the signals of
  `preemption_signals` (SIGUSR1 for Slurm's `--signal=USR1@SECONDS`) are recorded by a handler that does nothing
  else; at the end of the step in progress every process agrees, a complete checkpoint is written and the run ends
  with `PREEMPTED_EXIT_CODE`. The rerun resumes on the uninterrupted loss curve. Repeated signals change nothing:
  on a cluster the same signal often arrives twice (Slurm signals every process of a step, and torchrun forwards
  what it receives to its workers); SIGKILL ends a run at once.
* **Timed checkpoints.** `save_interval_minutes` adds a checkpoint whenever that much wall time passed since the last
  one, so a hard kill (a node lost, no signal) costs at most that much work whatever `save_steps` says.
* **A run whose output folder was taken over writes nothing more.** The main process holds `output_dir`'s lock
  (`trainer.output_lock`); when its heartbeat finds another run's token there (this run was suspended, or cut off
  from the filesystem, for longer than the lock's stale time, and a requeued run took the folder), every process
  stops at the end of the step in progress without a checkpoint (`OutputDirTakenOver`, status 1: rerunning would
  only meet the other run's lock). Every save reads the lock file again first (`check_output_dir_lock`).

The all-reduce carries four flags (a non-finite loss seen here, a signal received here, the save timer due here, the
output folder's lock lost here);
the gradient norm is already global (computed after the gradient all-reduce), so every process takes the same
decision at the same step without another collective.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from .checkpoint_io import read_trainer_state
from .early_signals import (
    PREEMPTION_SIGNAL_CHOICES,
    after_the_run,
    deliver_with_default_action,
    release_held_signals,
    take_held_signal,
)
from .output_lock import OutputDirLock

logger = logging.getLogger(__name__)

# EX_TEMPFAIL (sysexits.h): "a temporary failure; the user is invited to retry". A preempted run exits with it, so a
# job script can requeue on exactly this status (docs/SCALING.md's Slurm script does).
PREEMPTED_EXIT_CODE = 75
# The signals that always save and stop; `preemption_signals` adds to them.
DEFAULT_PREEMPTION_SIGNALS: tuple[str, ...] = ("SIGTERM",)
# The checkpoint file holding the steps skipped for non-finite values, so a resumed run keeps its budget.
NONFINITE_FILE = "nonfinite_steps.json"


class RunStopped(Exception):  # noqa: N818  (a way a run ends, not a failure of the code)
    """A run that ended early on purpose; `exit_code` is what the command line exits with, the message one line."""

    exit_code = 1


class TrainingDiverged(RunStopped):
    """A non-finite loss, gradient norm or weight: the run stopped before anything non-finite was written."""


class OutputDirTakenOver(RunStopped):
    """Another run took `output_dir`'s lock over: this run stopped without writing anything more into it. Status 1,
    not `PREEMPTED_EXIT_CODE`: a requeue would only find the folder held by the other run."""


class RunPreempted(RunStopped):
    """A preemption signal: a complete checkpoint was written (or nothing had trained yet); rerun to continue."""

    exit_code = PREEMPTED_EXIT_CODE


def signal_number(name: str) -> signal.Signals:
    """`signal.Signals` for a name ("SIGUSR1", "USR1", "sigusr1"); ValueError for one this platform lacks."""
    key = name.strip().upper()
    key = key if key.startswith("SIG") else f"SIG{key}"
    try:
        return signal.Signals[key]
    except KeyError:
        raise ValueError(f"unknown signal {name!r} (e.g. SIGTERM, SIGUSR1)") from None


class StopSignals:
    """Records the first preemption signal; the process carries on until the trainer stops at a step's end.

    `install()` replaces the handlers of `names` and of SIGINT (main thread only: elsewhere it warns and does
    nothing), taking over a signal held since the command started (`trainer.early_signals`), and `restore()` puts
    the previous ones back. Later signals are ignored (see the module docstring),
    except a second Ctrl-C (SIGINT), which interrupts at once (`KeyboardInterrupt`): the first one asks for a
    checkpoint at the step's end, as a preemption does.
    """

    def __init__(self, names: tuple[str, ...] | list[str] = DEFAULT_PREEMPTION_SIGNALS) -> None:
        self.signals = tuple(dict.fromkeys([*(signal_number(name) for name in names), signal.SIGINT]))
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def install(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            logger.warning("preemption signals are not handled: the run does not start on the main thread")
            return self
        for number in self.signals:
            self._previous[number] = signal.signal(number, self._handle)
        release_held_signals(self.signals)
        held = take_held_signal()  # one that came while the command imported and read its config
        if held in self.signals:
            self._handle(held, None)
        elif held is not None:
            deliver_with_default_action(held)
        return self

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, after_the_run(handler))
        self._previous.clear()

    def _handle(self, number: int, frame) -> None:
        # Only a flag: logging from a signal handler can deadlock on the logging lock (the message comes at the
        # step's end), and raising here would interrupt whatever the step was doing, a checkpoint write included.
        if self.received is None:
            self.received = signal.Signals(number)
        elif number == signal.SIGINT:  # Ctrl-C twice: now
            raise KeyboardInterrupt

    def __enter__(self) -> StopSignals:
        return self.install()

    def ignored_in_data_workers(self, init: Callable[[int], None] | None) -> Callable[[int], None]:
        """A DataLoader `worker_init_fn` that ignores these signals, then runs `init` (the Trainer's seeding).

        Slurm signals every process of a step and torchrun the process group of each rank, DataLoader workers
        included; torch's workers die on a SIGTERM that is not their parent's, and the training process then failed
        with `DataLoader worker (pid N) is killed by signal: Terminated` instead of saving. The training process
        decides when to stop and ends its workers itself (`workers_ended_by_sigkill`; they also exit once it is gone).
        """
        return functools.partial(_ignore_signals_then, tuple(self.signals), init)

    def __exit__(self, *exc) -> None:
        self.restore()


def _ignore_signals_then(signals: tuple[signal.Signals, ...], init: Callable[[int], None] | None,
                         worker_id: int) -> None:
    for number in signals:
        # A handler that does nothing, neither SIG_IGN nor a signal blocked in this thread: a handler holds in every
        # thread (a spawned worker's imports start some before this runs: a SIGTERM blocked here only was delivered
        # to one of them and torch's handler ended the worker), and a process the worker execs (an image decoder)
        # starts with the default action again (a blocked or ignored SIGTERM stayed so there: no terminate() ended
        # it). One the worker forks gets the default back too.
        signal.signal(number, _ignore)
    os.register_at_fork(after_in_child=functools.partial(_default_actions, signals))
    if init is not None:
        init(worker_id)


def _ignore(number: int, frame) -> None:
    pass


def _default_actions(signals: tuple[signal.Signals, ...]) -> None:
    for number in signals:
        signal.signal(number, signal.SIG_DFL)


def workers_ended_by_sigkill(loader: torch.utils.data.DataLoader) -> None:
    """`loader`'s workers, which ignore SIGTERM (`StopSignals.ignored_in_data_workers`), are ended by SIGKILL where
    torch (a worker that did not join in time) or multiprocessing (a daemon still alive at exit, persistent workers:
    it then waits for them without a time limit) would send SIGTERM: the run would never end."""
    start = loader._get_iterator  # what DataLoader.__iter__ calls to start the workers (once, if persistent)

    def started():
        iterator = start()
        for worker in getattr(iterator, "_workers", ()):
            worker._popen.terminate = worker._popen.kill
        return iterator

    loader._get_iterator = started


def is_finite(value: float | torch.Tensor | None) -> bool:
    """Whether a loss or gradient norm is a finite number (None, where a backend reports no norm, counts as finite)."""
    if value is None:
        return True
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value).all())
    return math.isfinite(float(value))


def first_nonfinite_parameter(model: torch.nn.Module) -> str | None:
    """The name of the first parameter holding a NaN or an infinity, or None; one host synchronisation for the whole
    model. Under ZeRO-3 each process sees its own partition (`ds_tensor`): the caller reduces the answer."""
    parameters = list(model.named_parameters())
    flags = []
    for _, param in parameters:
        data = getattr(param, "ds_tensor", None)
        data = param.data if data is None else data
        if data.numel() and data.is_floating_point():
            flags.append(torch.isfinite(data).all())
        else:
            flags.append(torch.ones((), dtype=torch.bool, device=data.device))
    if not flags:
        return None
    device = flags[0].device
    finite = torch.stack([flag.to(device) for flag in flags])
    if bool(finite.all()):
        return None
    return parameters[int((~finite).nonzero()[0])][0]


class RunControl(TrainerCallback):
    """The step-level decisions of a `CrocTrainer` (see the module docstring). The trainer feeds it every
    micro-batch's loss (`observe_loss`) and every step's gradient norm (`observe_grad_norm`).

    Args:
        trainer: the `CrocTrainer` (for its accelerator, model, optimiser and output folder).
        signals: the `StopSignals` of the run (installed by the caller), or None for no signal handling.
        max_nonfinite_steps: steps with a non-finite loss or gradient norm skipped before the run stops (0: stop at
            the first).
        save_interval_minutes: write a checkpoint whenever this much wall time passed since the last (None: off).
        output_lock: the `OutputDirLock` this process holds (the main process of a run started by `trainer.train`),
            or None.
    """

    def __init__(self, trainer, signals: StopSignals | None = None, max_nonfinite_steps: int = 0,
                 save_interval_minutes: float | None = None, output_lock: OutputDirLock | None = None) -> None:
        self.trainer = trainer
        self.signals = signals
        self.output_lock = output_lock
        self.max_nonfinite_steps = int(max_nonfinite_steps)
        self.save_interval = None if save_interval_minutes is None else 60.0 * float(save_interval_minutes)
        self.skipped_steps: list[dict[str, Any]] = []
        # The loss of every applied step of the run (mean over processes), carried by checkpoints: the Trainer's own
        # `train_loss` averages only the steps of one `train()` call (0.0 for a rerun that trains nothing) and counts
        # a skipped step's stand-in value. None: resumed from a checkpoint that did not carry it.
        self.loss_sum: float | None = 0.0
        self.loss_steps = 0
        # (`loss_sum`, `loss_steps`, the step) at the last log, carried by checkpoints too (`window_loss`); a None
        # total: not known (resumed from a checkpoint that did not carry it).
        self._logged: tuple[float | None, int, int] = (0.0, 0, 0)
        self._step_loss: torch.Tensor | None = None
        self.stopped_by: str | None = None  # the signal that stopped the run, once it has
        self._loss_bad: torch.Tensor | None = None
        self._grad_norm: float | torch.Tensor | None = None
        self._last_save = time.monotonic()
        self._stop_requested = False
        self._save_due = False

    # ---- what the trainer reports ----
    def observe_loss(self, loss: torch.Tensor) -> None:
        """Record whether a micro-batch's loss is finite, on the device (no host synchronisation)."""
        bad = ~torch.isfinite(loss.detach()).all()
        self._loss_bad = bad if self._loss_bad is None else self._loss_bad | bad
        total = loss.detach().float().sum()
        self._step_loss = total if self._step_loss is None else self._step_loss + total

    def observe_grad_norm(self, grad_norm: float | torch.Tensor | None) -> None:
        self._grad_norm = grad_norm

    # ---- agreement ----
    def _agree(self, loss_bad: bool, step_loss: float = 0.0) -> tuple[bool, bool, bool, float]:
        """(a non-finite loss somewhere, a signal somewhere, the save timer due somewhere, the step's loss averaged
        over processes as the Trainer logs it), the same on every process. Raises `OutputDirTakenOver` on every
        process when the lock holder's heartbeat found the lock taken over."""
        flags = [float(loss_bad), float(self.signals is not None and self.signals.received is not None),
                 float(self.save_interval is not None and time.monotonic() - self._last_save >= self.save_interval),
                 0.0 if loss_bad else step_loss, float(self.output_lock is not None and self.output_lock.lost)]
        accelerator = self.trainer.accelerator
        if accelerator.num_processes > 1:
            agreed = accelerator.reduce(torch.tensor(flags, device=accelerator.device), reduction="sum")
            flags = [float(value) for value in agreed.tolist()]
            flags[3] /= accelerator.num_processes
        if flags[4] > 0:
            self._stop_taken_over()
        return flags[0] > 0, flags[1] > 0, flags[2] > 0, flags[3]

    def check_output_dir_lock(self) -> None:
        """Before a save, on every process: read the lock file now (the heartbeat reads it only every
        `HEARTBEAT_SECONDS`) and stop every process with `OutputDirTakenOver` when it is no longer this run's."""
        lost = self.output_lock is not None and not self.output_lock.verify()
        accelerator = self.trainer.accelerator
        if accelerator.num_processes > 1:
            lost = bool(accelerator.reduce(torch.tensor([float(lost)], device=accelerator.device),
                                           reduction="sum").item() > 0)
        if lost:
            self._stop_taken_over()

    def _stop_taken_over(self) -> None:
        """Raise `OutputDirTakenOver` with the lock holder's one line on every process (the others have no lock to
        name the new holder from: the main process's line is broadcast; only called where every process is)."""
        message = [self.output_lock.lost_message() if self.output_lock is not None and self.output_lock.lost else None]
        if self.trainer.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(message, from_process=0)
        raise self.taken_over(message[0])

    def taken_over(self, message: str | None) -> OutputDirTakenOver:
        """The error of a run that lost its lock, from the holder's `lost_message` (None: not known here)."""
        return OutputDirTakenOver(f"{message or 'the lock of output_dir was taken over by another run'}; this run "
                                  f"stopped after step {self.trainer.state.global_step} and wrote nothing more into "
                                  "the folder")

    def _signal_name(self) -> str:
        received = None if self.signals is None else self.signals.received
        return received.name if received is not None else "a preemption signal (on another process)"

    # ---- events ----
    def on_train_begin(self, args, state, control, **kwargs):
        self._last_save = time.monotonic()
        _, signalled, _, _ = self._agree(False)
        if signalled:
            # Received while the data or the model loaded: nothing has trained since the last checkpoint.
            self.stopped_by = self._signal_name()
            raise RunPreempted(f"stopped by {self.stopped_by} before training step {state.global_step + 1}; nothing "
                               "new to save; rerun the same command to continue")
        return control

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        loss_bad = False if self._loss_bad is None else bool(self._loss_bad)
        step_loss = 0.0 if self._step_loss is None or loss_bad else float(self._step_loss)
        self._loss_bad = self._step_loss = None
        loss_bad, self._stop_requested, self._save_due, step_loss = self._agree(loss_bad, step_loss)
        if not loss_bad and not is_finite(self._grad_norm) and self._loss_scaler_skips():
            # fp16's loss scaler found its scaled gradients overflowing: it skips this step and lowers its scale, as
            # it does routinely in the first steps (65536 is its start). Not divergence, nor a skipped step to count.
            if self.trainer.is_world_process_zero():
                logger.info("step %d: fp16 gradients overflowed at loss scale %s; the scaler skips the step",
                            state.global_step + 1, self._loss_scale())
        elif loss_bad or not is_finite(self._grad_norm):
            self._nonfinite_step(state.global_step + 1, loss_bad)
        elif self.loss_sum is not None:
            self.loss_sum += step_loss
            self.loss_steps += 1
        return control

    @property
    def run_mean_loss(self) -> float | None:
        """The mean loss of the run's applied steps, every resume included; None when not known."""
        return self.loss_sum / self.loss_steps if self.loss_sum is not None and self.loss_steps else None

    def window_loss(self, step: int) -> float | None:
        """The mean loss of the applied steps logged at `step` (those since the last log) where a skipped step lies
        among them, NaN where none was applied; None for a window without one (the Trainer's value stands) or when
        not known. The Trainer logs such a window with a stand-in for the skipped step's loss
        (`logging_nan_inf_filter`: the window's running mean, added once per micro-batch): a skipped step alone in
        its window was logged as 0.0, a dip where the loss was NaN, and under gradient accumulation the stand-ins
        compounded (14% above the applied steps' mean with logging_steps=4)."""
        logged_sum, logged_steps, logged_step = self._logged
        if self.loss_sum is None or logged_sum is None:
            return None
        if not any(isinstance(entry.get("step"), int) and logged_step < entry["step"] <= step
                   for entry in self.skipped_steps):
            return None
        applied = self.loss_steps - logged_steps
        return (self.loss_sum - logged_sum) / applied if applied else math.nan

    def logged(self, step: int) -> None:
        """Start the next logging window after the log at `step` (`window_loss`)."""
        self._logged = (self.loss_sum, self.loss_steps, step)

    def on_step_end(self, args, state, control, **kwargs):
        if self._save_due:
            control.should_save = True
        if self._stop_requested and state.global_step < state.max_steps:
            self.stopped_by = self._signal_name()
            control.should_save = True
            control.should_training_stop = True
            # No early log of the open window: the checkpoint carries it (`trainer.logging_window`), and the resumed
            # run logs it at the uninterrupted run's step, entry for entry (a log here added one entry).
            if self.trainer.is_world_process_zero():
                logger.warning("%s received: saving checkpoint-%d and stopping", self.stopped_by, state.global_step)
        return control

    def on_save(self, args, state, control, **kwargs):
        self._last_save = time.monotonic()
        if self.stopped_by is None and state.global_step < state.max_steps:
            # A signal that arrived while this checkpoint was written stops here, on it: agreed at the next step's
            # optimiser step, it cost one more step and one more checkpoint, inside the grace period before SIGKILL.
            _, signalled, _, _ = self._agree(False)
            if signalled:
                self.stopped_by = self._signal_name()
                control.should_training_stop = True
                if self.trainer.is_world_process_zero():
                    logger.warning("%s received while checkpoint-%d was written: stopping on it", self.stopped_by,
                                   state.global_step)
        return control

    # ---- non-finite steps ----
    def _loss_scale(self) -> float | None:
        """The scale of fp16's loss scaler (torch's GradScaler under accelerate; the loss scaler of DeepSpeed's ZeRO
        optimiser), or None where no loss is scaled."""
        scaler = getattr(self.trainer.accelerator, "scaler", None)
        if scaler is not None and scaler.is_enabled():
            return float(scaler.get_scale())
        deepspeed_scaler = self._deepspeed_loss_scaler()
        return None if deepspeed_scaler is None else float(deepspeed_scaler.cur_scale)

    def _deepspeed_loss_scaler(self) -> Any:
        if not (self.trainer.is_deepspeed_enabled and self.trainer.args.fp16):
            return None
        return getattr(getattr(self.trainer.model_wrapped, "optimizer", None), "loss_scaler", None)

    def _loss_scaler_skips(self) -> bool:
        """Whether the loss scaler skips a step whose gradient norm is not finite (the loss being finite) and lowers
        its scale: torch's while its scale is at least 1 (gradients that overflow unscaled are the model's, and
        divergence); DeepSpeed's only when dynamic and above its floor (`min_loss_scale`, 1 in this project's
        configs: there it raises a traceback; a static scale never moves, and would skip every step from then on)."""
        scaler = getattr(self.trainer.accelerator, "scaler", None)
        if scaler is not None and scaler.is_enabled():
            return scaler.get_scale() >= 1.0
        deepspeed_scaler = self._deepspeed_loss_scaler()
        if deepspeed_scaler is None or not getattr(deepspeed_scaler, "dynamic", False):
            return False
        return deepspeed_scaler.cur_scale >= 1.0 and deepspeed_scaler.cur_scale > deepspeed_scaler.min_scale

    def _nonfinite_step(self, step: int, loss_bad: bool) -> None:
        norm = self._grad_norm
        norm = float(norm) if isinstance(norm, (int, float, torch.Tensor)) else norm
        what = ", ".join(part for part in ("loss" if loss_bad else "", "" if is_finite(norm) else f"grad_norm {norm}")
                         if part)
        record = {"step": step, "nonfinite": what}
        if len(self.skipped_steps) < self.max_nonfinite_steps:
            self._drop_gradients()
            self.skipped_steps.append(record)
            report = getattr(self.trainer, "data_report", None)
            if report is not None:  # its rows were counted as seen; none of them trained
                report.skip_step(step)
            metrics = getattr(self.trainer, "_croc_metrics", None)
            if metrics is not None:  # its loss terms leave the logging window, as its loss does (`window_loss`)
                metrics.discard_step(step - 1)
            if self.trainer.is_world_process_zero():
                logger.warning("step %d: non-finite %s; skipped (no update), %d of max_nonfinite_steps=%d", step,
                               what, len(self.skipped_steps), self.max_nonfinite_steps)
            return
        last = self.trainer.last_checkpoint_message()
        budget = (f"after skipping {len(self.skipped_steps)} step(s) (max_nonfinite_steps="
                  f"{self.max_nonfinite_steps})" if self.max_nonfinite_steps else "")
        raise TrainingDiverged(f"training diverged at step {step}: non-finite {what}{' ' + budget if budget else ''}; "
                               f"that step was not applied and nothing was saved; {last}. Lower the learning "
                               "rates, or let such steps be skipped with --max_nonfinite_steps=N")

    def _drop_gradients(self) -> None:
        """Make the coming optimiser step a no-op: every parameter without a gradient is left as it is (AdamW and
        the other torch optimisers skip it, weight decay included). DeepSpeed has already skipped the step."""
        if self.trainer.is_deepspeed_enabled:
            return
        self.trainer.model_wrapped.zero_grad(set_to_none=True)
        self.trainer.optimizer.zero_grad(set_to_none=True)

    # ---- checkpoints ----
    def save(self, folder: str | Path) -> None:
        state = {"skipped_steps": self.skipped_steps, "loss_sum": self.loss_sum, "loss_steps": self.loss_steps,
                 "logged": list(self._logged)}
        (Path(folder) / NONFINITE_FILE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")

    def restore(self, folder: str | Path) -> None:
        file = Path(folder) / NONFINITE_FILE
        state = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
        self.skipped_steps = list(state.get("skipped_steps", []))
        if "loss_sum" in state:
            self.loss_sum, self.loss_steps = state.get("loss_sum"), int(state.get("loss_steps") or 0)
        else:  # a checkpoint of an earlier version carries no loss total: its logged losses may give it
            self.loss_sum, self.loss_steps = logged_loss_total(folder, [entry.get("step") for entry in
                                                                        self.skipped_steps])
        logged = state.get("logged")
        self._logged = (logged[0], int(logged[1]), int(logged[2])) if isinstance(logged, list) and len(logged) == 3 \
            else (None, 0, 0)


def logged_loss_total(folder: str | Path, skipped: list[Any]) -> tuple[float | None, int]:
    """(the loss total of the applied steps, their count) up to the checkpoint `folder`, from its logged losses, or
    (None, 0) when they do not give it. For a checkpoint of an earlier version, which carries no total: each logged
    `loss` is the mean of the steps since the previous one, so the total is known when the last log is at the
    checkpoint's step and every skipped step (logged as a stand-in) was alone in its window."""
    state = read_trainer_state(folder) or {}
    try:
        step = int(state["global_step"])
        logged = [(int(entry["step"]), float(entry["loss"])) for entry in state["log_history"] if "loss" in entry]
    except (OSError, ValueError, TypeError, KeyError):
        return None, 0
    total, count, previous = 0.0, 0, 0
    for at, loss in logged:
        window = at - previous
        if window == 1 and at in skipped:  # a skipped step alone in its window: its stand-in is left out
            previous = at
            continue
        if window <= 0 or not math.isfinite(loss) or any(isinstance(s, int) and previous < s <= at for s in skipped):
            return None, 0
        total, count, previous = total + loss * window, count + window, at
    return (total, count) if previous == step else (None, 0)


# A write fails with these once the stream's reader is gone for good: a closed pipe (EPIPE; ECONNRESET and
# ESHUTDOWN on a socket) or a hung-up terminal (EIO).
_READER_GONE = frozenset({errno.EPIPE, errno.EIO, errno.ECONNRESET, errno.ESHUTDOWN})


class DetachableStream:
    """`sys.stdout` / `sys.stderr` of a run that outlives its reader: a job detached from its terminal (a write to
    a hung-up terminal fails with EIO) or piped into a `tee` that died with it (EPIPE). The Trainer prints every log
    entry, and one failed write ended a days-long run with a traceback (a preempted one with status 1 or 120, not
    75). The first write failing as its reader is gone (EPIPE, EIO) sends the stream to /dev/null for good: the
    reader never comes back, and the run record and `trainer_state.json` keep what the log said. Any other failed
    write (a full disk) loses its text only."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def _detach(self) -> None:
        # The file descriptor, not only this object: what the stream still buffers, C++ code writing to it, and the
        # interpreter's last flush (which turns a failure into status 120) all go to /dev/null from now on.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)
        self.write = self.flush = self._ignore  # type: ignore[method-assign]

    @staticmethod
    def _ignore(*args) -> int:
        return len(args[0]) if args else 0

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as error:
            self._failed(error)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as error:
            self._failed(error)

    def _failed(self, error: OSError) -> None:
        # Only a reader that is gone is gone for good. A log file on a disk full for now (ENOSPC, EDQUOT: a
        # checkpoint filled it) or a non-blocking stream that is full for now (EAGAIN) loses this text, not the
        # stream: sent to /dev/null, the run's last line (why it stopped) was lost once the disk had room again.
        if error.errno in _READER_GONE:
            self._detach()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def survive_a_lost_reader() -> None:
    """Wrap `sys.stdout` and `sys.stderr` in `DetachableStream` (once), before any log handler takes them."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, DetachableStream):
            setattr(sys, name, DetachableStream(stream))

__all__ = [
    "DEFAULT_PREEMPTION_SIGNALS",
    "PREEMPTION_SIGNAL_CHOICES",
    "NONFINITE_FILE",
    "OutputDirTakenOver",
    "PREEMPTED_EXIT_CODE",
    "RunControl",
    "RunPreempted",
    "RunStopped",
    "StopSignals",
    "DetachableStream",
    "TrainingDiverged",
    "first_nonfinite_parameter",
    "is_finite",
    "signal_number",
    "survive_a_lost_reader",
]
