"""`python -m trainer.train` with one fault injected from the environment, for runs started by a real launcher
(tests/faults/test_faults_launchers.py runs it under torchrun, as a cluster job would):

    torchrun --nproc_per_node 2 tests/faults/fault_driver.py CONFIG.yaml [--key=value ...]

CROC_FAULT is one of
* `sigterm-launcher:STEP`: during optimiser step STEP, process 0 sends SIGTERM to its launcher (torchrun), as Slurm
  or Kubernetes do before a preemption; the launcher forwards it to every worker;
* `sigterm-self:STEP`: during optimiser step STEP, every process sends SIGTERM to itself (a run without a launcher);
* `nan-loss:RANK:STEP`: the loss of process RANK becomes NaN in step STEP (the other processes' stays finite);
* `write-fail:RANK:NAME`: torch.save on process RANK fails as it does on a full disk for a file whose path contains
  NAME (the other processes write theirs);
* `lock-takeover:STEP`: during optimiser step STEP, output_dir's lock is replaced by another host's run (what a
  requeued run does once this one's heartbeat stopped for STALE_AFTER_SECONDS); the heartbeat beats every 0.05 s;
* `lock-takeover-saving:STEP`: the same, while checkpoint-STEP is staged, right before its rename;
* `parses-to:PATH`: no fault, an observation: every process that parses a JSON file of rows appends its rank to PATH.
"""

from __future__ import annotations

import os
import signal

from trainer import croc_trainer
from trainer import train as train_module


def _install(fault: str) -> None:
    kind, *where = fault.split(":")
    if kind == "write-fail":
        _fail_writes(int(where[0]), where[1])
        return
    if kind.startswith("lock-takeover"):
        _take_lock_over(kind, int(where[0]))
        return
    if kind == "parses-to":
        _record_parses(":".join(where))
        return
    compute_loss = croc_trainer.CrocTrainer.compute_loss
    rank = int(os.environ.get("RANK", "0"))

    def faulty(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        step = self.state.global_step + 1
        result = compute_loss(self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if kind == "sigterm-launcher" and rank == 0 and step == int(where[0]) and not getattr(self, "_sent", False):
            self._sent = True
            os.kill(os.getppid(), signal.SIGTERM)
        if kind == "sigterm-self" and step == int(where[0]) and not getattr(self, "_sent", False):
            self._sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        if kind == "nan-loss" and rank == int(where[0]) and step == int(where[1]):
            loss, outputs = result if return_outputs else (result, None)
            loss = loss * float("nan")
            result = (loss, outputs) if return_outputs else loss
        return result

    croc_trainer.CrocTrainer.compute_loss = faulty


def _take_over(folder: str) -> None:
    import json
    import time
    from pathlib import Path

    from trainer.output_lock import LOCK_FILE, LockHolder

    lock_file = Path(folder) / LOCK_FILE
    lock_file.unlink()
    lock_file.write_text(json.dumps({**LockHolder.here().__dict__, "host": "node-9", "pid": 4321,
                                     "token": "new-holder"}))
    time.sleep(0.5)  # a few heartbeats


def _take_lock_over(kind: str, step: int) -> None:
    from trainer import resume
    from trainer.output_lock import OutputDirLock

    resume.OutputDirLock = lambda folder: OutputDirLock(folder, heartbeat=0.05)
    rank = int(os.environ.get("RANK", "0"))
    if kind == "lock-takeover-saving":
        write_manifest = croc_trainer.write_manifest

        def taken_over_while_saving(folder):
            result = write_manifest(folder)
            if os.path.basename(folder) == f"checkpoint-{step}":
                _take_over(os.path.dirname(os.path.dirname(folder)))
            return result

        croc_trainer.write_manifest = taken_over_while_saving
        return
    compute_loss = croc_trainer.CrocTrainer.compute_loss

    def taken_over(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if rank == 0 and self.state.global_step + 1 == step and not getattr(self, "_taken", False):
            self._taken = True
            _take_over(self.args.output_dir)
        return compute_loss(self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    croc_trainer.CrocTrainer.compute_loss = taken_over


def _record_parses(path: str) -> None:
    from data_recipes import row_cache

    batches = row_cache.llava_json_batches

    def recorded(*args, **kwargs):
        with open(path, "a") as record:
            record.write(os.environ.get("RANK", "0") + "\n")
        return batches(*args, **kwargs)

    row_cache.llava_json_batches = recorded


def _fail_writes(rank: int, name: str) -> None:
    import torch

    save = torch.save

    def failing(obj, f, *args, **kwargs):
        if int(os.environ.get("RANK", "0")) == rank and name in str(f):
            # What torch's zip writer raises when the disk fills (or `ulimit -f` is reached) under it.
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")
        return save(obj, f, *args, **kwargs)

    torch.save = failing


if __name__ == "__main__":
    if os.environ.get("CROC_FAULT"):
        _install(os.environ["CROC_FAULT"])
    train_module.cli()
