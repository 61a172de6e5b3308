"""Kill real training runs in the middle of a checkpoint save, then resume them (run by test_faults_checkpoints.py).

    python tests/faults/kill_driver.py SPEC.json

SPEC: {"argv": [CONFIG, --key=value, ...] without --output_dir, "reference": DIR, "scenarios": [{"name", "out",
"file", "moment", "step"}, ...], "results": FILE}. Each run is a separate process forked from this one after the
heavy imports (so a run costs its training, not a Python start-up), and runs the real entry point,
`trainer.train.main`. A scenario's first run is killed with SIGKILL at `moment` ("before", "during": the file cut to
half its size, "after") of writing `file` into checkpoint-`step`; `file` "rename" is the checkpoint's final rename.
`moment` "legacy" instead damages a finished checkpoint-`step` the way a save without staging would leave it (an
earlier version of this project). The second run is the same command, unpatched: it must resume. The results file
gets, per scenario, how the first run ended, what its output folder held, and the second run's log.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import traceback
from pathlib import Path

import torch
import transformers.modeling_utils as modeling_utils
from transformers.trainer_callback import TrainerState

from trainer import croc_trainer
from trainer import train as train_module


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _install_kill(file: str, moment: str, step: int) -> None:
    """Patch the writers of a checkpoint so that writing `file` into checkpoint-`step` kills this process."""
    folder = f"checkpoint-{step}"

    def hit(path) -> bool:
        path = str(path)
        return os.path.basename(path) == file and os.path.basename(os.path.dirname(path)) == folder

    def around(write, path, *args, **kwargs):
        if not hit(path):
            return write(*args, **kwargs)
        if moment == "before":
            _die()
        result = write(*args, **kwargs)
        if moment == "during":  # what a kill half-way through the write leaves: the first half of the bytes
            os.truncate(path, os.path.getsize(path) // 2)
        _die()
        return result

    torch_save, safe_save, save_state = torch.save, modeling_utils.safe_save_file, TrainerState.save_to_json
    torch.save = lambda obj, f, *a, **k: around(torch_save, f, obj, f, *a, **k)
    modeling_utils.safe_save_file = lambda tensors, filename, *a, **k: around(safe_save, filename, tensors, filename,
                                                                              *a, **k)
    TrainerState.save_to_json = lambda self, json_path: around(save_state, json_path, self, json_path)
    promote = croc_trainer.promote_checkpoint

    def promote_then_maybe_die(staged, final, **kwargs):
        if file == "rename" and Path(final).name == folder and moment == "before":
            _die()
        promote(staged, final, **kwargs)
        if file == "rename" and Path(final).name == folder and moment == "after":
            _die()

    croc_trainer.promote_checkpoint = promote_then_maybe_die


def _damage_like_an_unstaged_save(out: Path, step: int) -> None:
    """checkpoint-`step` as a save killed while writing trainer_state.json in place would leave it."""
    state = out / f"checkpoint-{step}" / "trainer_state.json"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])


def _run(argv: list[str], log: Path, kill: dict | None = None) -> dict:
    """Run `trainer.train.main(argv)` in a forked process; returns how it ended."""
    pid = os.fork()
    if pid == 0:  # the run
        code = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            torch.set_num_threads(1)
            if kill is not None:
                _install_kill(kill["file"], kill["moment"], kill["step"])
            train_module.main(argv)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return {"killed": os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL,
            "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "log": log.read_text(errors="replace")}


def _listing(out: Path) -> dict:
    staging = out / croc_trainer.STAGING_DIR
    return {"checkpoints": sorted(p.name for p in out.glob("checkpoint-*")),
            "staging": sorted(p.name for p in staging.iterdir()) if staging.exists() else None}


def main(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    # Everything imported so far is shared by the runs: keep the garbage collector of each run from walking it
    # (accelerate collects at the start of training), as pre-forking servers do.
    gc.freeze()
    argv = spec["argv"]
    results = {"reference": _run([*argv, f"--output_dir={spec['reference']}"], Path(spec["reference"] + ".log"))}
    for scenario in spec["scenarios"]:
        out = Path(scenario["out"])
        command = [*argv, f"--output_dir={out}"]
        legacy = scenario["moment"] == "legacy"
        # The legacy case: killed once checkpoint-`step` is complete, which is then damaged by hand.
        kill = {**scenario, "file": "rename", "moment": "after"} if legacy else scenario
        first = _run(command, Path(f"{out}.first.log"), kill)
        if legacy:
            _damage_like_an_unstaged_save(out, scenario["step"])
        after_kill = _listing(out)
        second = _run(command, Path(f"{out}.second.log"))
        results[scenario["name"]] = {"first": first, "after_kill": after_kill, "second": second,
                                     "after_resume": _listing(out)}
    Path(spec["results"]).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
