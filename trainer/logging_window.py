"""The open logging window, carried by every checkpoint, so a resumed run logs the uninterrupted run's entries.

With `logging_steps` > 1 a checkpoint is often written between two logs (`save_steps` not a multiple of
`logging_steps`, a timed save, a preemption signal). The Trainer's running loss of the steps since the last log
(`Trainer._tr_loss`), the step it last logged at (`_globalstep_last_logged`) and the Croc terms summed beside it
(`trainer.metrics.CrocMetrics`) are not in its checkpoint: the resumed run's first entry averaged only the steps
after the resume, and a kill after such a save lost the window's steps from the curve. `WINDOW_FILE` holds them,
for every process (each one's sums are its own until the log reduces them), and `LoggingWindow` puts them back once
the Trainer has opened its own (empty) window at the start of training. tests/faults/test_faults_curve.py pins the
private attributes it reads and writes.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

WINDOW_FILE = "logging_window.json"
WINDOW_FORMAT = 1


class LoggingWindow(TrainerCallback):
    """Captures the open logging window of a `CrocTrainer` for its checkpoints and restores it on resume.

    Args:
        trainer: the `CrocTrainer` (its Trainer logging state and its `_croc_metrics`).
    """

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self._pending: dict[str, Any] | None = None  # this process's window, read from the resumed checkpoint

    # ---- saving ----
    def capture(self) -> dict[str, Any]:
        """This process's open window: its loss sum and its Croc sums since the last log (all empty right after one;
        the Trainer's loss may then still be the NaN of a logged non-finite window, see `CrocTrainer`)."""
        trainer = self.trainer
        last_logged = int(getattr(trainer, "_globalstep_last_logged", trainer.state.global_step))
        loss = getattr(trainer, "_tr_loss", None)
        open_steps = last_logged < trainer.state.global_step
        return {"loss_sum": float(loss) if open_steps and loss is not None else 0.0,
                "croc": trainer._croc_metrics.window_state(), "last_logged_step": last_logged}

    def gather(self) -> list[dict[str, Any]]:
        """Every process's `capture()`, in process order (a collective: every process calls it, at the save)."""
        windows = [self.capture()]
        if self.trainer.args.world_size > 1:
            from accelerate.utils import gather_object

            windows = gather_object(windows)
        return windows

    def save(self, folder: str | Path, windows: list[dict[str, Any]]) -> None:
        """Write `WINDOW_FILE` into a checkpoint being staged (main process)."""
        state = {"format": WINDOW_FORMAT, "step": self.trainer.state.global_step,
                 "last_logged_step": windows[0]["last_logged_step"],
                 "processes": [{"loss_sum": w["loss_sum"], "croc": w["croc"]} for w in windows]}
        # NaN stays NaN (a window holding a non-finite step with logging_nan_inf_filter=false logs NaN, as it would
        # have uninterrupted): Python's json reads back what it writes.
        (Path(folder) / WINDOW_FILE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")

    # ---- resuming ----
    def restore(self, folder: str | Path | None) -> None:
        """Read this process's window from checkpoint `folder` (None: a fresh start, nothing to restore). A
        checkpoint without the file (an earlier version's) resumes as before, said in one line."""
        self._pending = None
        if folder is None:
            return
        file = Path(folder) / WINDOW_FILE
        try:
            state = json.loads(file.read_text(encoding="utf-8"))
            processes = list(state["processes"])
            self._pending = {"step": int(state["step"]), "last_logged_step": int(state["last_logged_step"]),
                             **self._share(processes)}
        except FileNotFoundError:
            if self.trainer.is_world_process_zero():
                logger.warning("%s holds no %s (an earlier version's checkpoint): the first loss logged after the "
                               "resume averages only the steps trained from here", folder, WINDOW_FILE)
        except (OSError, ValueError, KeyError, TypeError, IndexError, ZeroDivisionError) as error:
            if self.trainer.is_world_process_zero():
                logger.warning("%s: unreadable %s (%s): the first loss logged after the resume averages only the "
                               "steps trained from here", folder, WINDOW_FILE, type(error).__name__)

    def _share(self, processes: list[dict[str, Any]]) -> dict[str, Any]:
        """This process's part of the saved windows: its own on the same number of processes. On another number, a
        share that reduces to the same logged values: the losses' mean on each process (the log averages them over
        processes), the histogram's and norms' sums split evenly (the log sums them)."""
        world, rank = self.trainer.args.world_size, self.trainer.args.process_index
        if len(processes) == world:
            mine = processes[rank]
            return {"loss_sum": float(mine["loss_sum"]), "croc": mine["croc"],
                    "loss_mean": sum(float(p["loss_sum"]) for p in processes) / len(processes)}
        crocs = [p["croc"] for p in processes]

        def combined(key: str, scale: float) -> list[float] | None:
            parts = [c[key] for c in crocs if c[key] is not None]
            return [sum(values) * scale for values in zip(*parts)] if parts else None

        loss_mean = sum(float(p["loss_sum"]) for p in processes) / len(processes)
        starts = [c["window_start_step"] for c in crocs if c["window_start_step"] is not None]
        croc = {"window_start_step": starts[0] if starts else None,
                "losses": combined("losses", 1.0 / len(processes)), "histogram": combined("histogram", 1.0 / world),
                "norms": combined("norms", 1.0 / world)}
        opened = [c for c in crocs if c.get("losses") is not None]
        if opened and all(c.get("steps") is not None and c.get("vtr_steps") is not None for c in opened):
            # Every process applied the same steps; the VTR-step counts are averaged like the losses they divide.
            croc["steps"] = opened[0]["steps"]
            croc["vtr_steps"] = sum(float(c["vtr_steps"]) for c in opened) / len(processes)
        return {"loss_sum": loss_mean, "croc": croc, "loss_mean": loss_mean}

    def on_train_begin(self, args, state, control, **kwargs):
        """Put the read window back: the Trainer has just opened an empty one at the resumed step."""
        pending, self._pending = self._pending, None
        if pending is None or pending["step"] != state.global_step:
            return control
        trainer = self.trainer
        trainer._globalstep_last_logged = pending["last_logged_step"]
        trainer._tr_loss.fill_(pending["loss_sum"])
        # The Trainer's `train_loss` is the mean over this call's steps: the restored steps were trained before it.
        if math.isfinite(pending["loss_mean"]):
            trainer._total_loss_scalar -= pending["loss_mean"]
        trainer._croc_metrics.load_window_state(pending["croc"], trainer._tr_loss.device)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        """logging_strategy=epoch: log the epoch's window at its last step's end, before that step's save. The
        Trainer logs it at the epoch's end, after the save: a checkpoint written at an epoch's last step (save_steps,
        a timed save, a signal, the run's last step) held the window as open and not the entry, so its resume lost
        the entry and logged those steps again with the next epoch's."""
        if args.logging_strategy == "epoch" and (float(state.epoch or 0).is_integer() or (
                control.should_training_stop and not self.trainer.preempted)):
            control.should_log = True
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        """A signal stop within an epoch: no epoch-end log (the Trainer's logging_strategy=epoch logs as the loop
        ends): the checkpoint carries the open window, logged on resume at the uninterrupted run's step; a log here
        added an entry (and save_strategy=epoch saved the checkpoint again, with that entry and no window)."""
        if self.trainer.preempted and not float(state.epoch or 0).is_integer():
            control.should_log = control.should_evaluate = control.should_save = False
        return control


__all__ = ["WINDOW_FILE", "LoggingWindow"]
