"""Shared by the fault tests of whole runs (divergence, preemption, output folders, long rows): a small data folder,
the argv of a tiny run, the CLI's one-line exit, reading a run's curve and weights, and a folder's files (what a
refused run must leave as it was). The module name is unique on purpose: the test tree has no __init__.py files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch
from fault_cases import image_row, text_row, write_good_image
from safetensors.torch import load_file

from trainer import croc_trainer
from trainer import train as train_module

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "trainer" / "configs" / "cpu_tiny"


def _launcher_environment(fault: str | None = None) -> tuple[dict[str, str], int]:
    """The environment of a launched run (offline, this checkout first on the path, `fault` as its CROC_FAULT) and a
    free local port for its rendezvous."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("CROC_FAULT", None)
    if fault:
        env["CROC_FAULT"] = fault
    return env, port


def torchrun(argv, fault=None, timeout=600):
    """`tests/faults/fault_driver.py` with `argv` under torchrun, 2 processes on a free port (`fault`: its
    CROC_FAULT, one process's fault); the finished process, output captured."""
    import subprocess

    env, port = _launcher_environment(fault)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               str(Path(__file__).with_name("fault_driver.py")), *argv]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def two_nodes(argv_per_node: list[list[str]], cwd_per_node: list[Path], timeout: int = 300):
    """Two "nodes" of one process each: a torchrun agent per node (static rendezvous on a free local port,
    `--node_rank` 0 and 1) running `python -m trainer.train` with that node's argv in that node's working directory,
    as two machines of a cluster job do; the two finished agents, output captured (into files: a pipe one agent
    fills while the test waits on the other would block both)."""
    import subprocess
    import tempfile

    env, port = _launcher_environment()
    with tempfile.TemporaryDirectory() as logs:
        outputs = [(open(Path(logs, f"{rank}.out"), "w+"), open(Path(logs, f"{rank}.err"), "w+")) for rank in (0, 1)]
        agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
                                    "--nproc_per_node", "1", "--node_rank", str(rank), "--master_addr", "127.0.0.1",
                                    "--master_port", str(port), "-m", "trainer.train", *argv],
                                   cwd=cwd, env=env, text=True, stdout=out, stderr=err)
                  for rank, (argv, cwd, (out, err)) in enumerate(zip(argv_per_node, cwd_per_node, outputs))]
        try:
            codes = [agent.wait(timeout=timeout) for agent in agents]
        finally:
            for agent in agents:
                if agent.poll() is None:  # SIGTERM first: torchrun passes it on to its worker, SIGKILL would orphan it
                    agent.terminate()
                    try:
                        agent.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        agent.kill()
                        agent.wait()
        done = []
        for agent, code, (out, err) in zip(agents, codes, outputs):
            out.seek(0), err.seek(0)
            done.append(subprocess.CompletedProcess(agent.args, code, out.read(), err.read()))
            out.close(), err.close()
        return done


COLOURS = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (240, 200, 30), (140, 60, 180), (245, 135, 30)]


def write_small_folder(root: Path) -> Path:
    """Six image rows and two text rows; returns the LLaVA file."""
    rows = []
    for i, colour in enumerate(COLOURS):
        write_good_image(root / "images" / f"{i}.png", colour)
        rows.append(image_row(f"img-{i}", f"images/{i}.png", f"A shape of colour {i}."))
    rows += [text_row(f"text-{i}", f"{4 + i}.") for i in range(2)]
    path = root / "rows.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def run_argv(config: str, out: Path, model: Path, data: Path, *extra: str) -> list[str]:
    """`python -m trainer.train trainer/configs/cpu_tiny/<config>` on the tiny model: 4 rows a step, 2 per micro-batch."""
    return [str(CONFIGS / config), f"--output_dir={out}", f"--model.name_or_path={model}", f"--data.path={data}",
            "--disable_tqdm=true", "--per_device_train_batch_size=2", "--global_batch_size=4", *extra]


def checkpointed_argv(out: Path, model: Path, data: Path, *extra: str) -> list[str]:
    """`run_argv` of stage 2 with a checkpoint after every step (the output-folder and resume tests)."""
    return run_argv("stage2.yaml", out, model, data, "--save_strategy=steps", "--save_steps=1", *extra)


def checkpoints_only(two_steps: Path, target: Path) -> Path:
    """The run's checkpoints in a new output folder (as a killed run leaves them: no final folder)."""
    for name in ("checkpoint-1", "checkpoint-2"):
        shutil.copytree(two_steps / name, target / name)
    return target


def listing(folder: Path) -> list[tuple[str, int]]:
    """Every file under `folder` with its size."""
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def cli_error(argv: list[str], monkeypatch) -> str:
    """What `python -m trainer.train ARGV` prints when it stops with a configuration or data error: the SystemExit
    message of `cli()`, one line."""
    monkeypatch.setattr(sys, "argv", ["trainer.train", *argv])
    with pytest.raises(SystemExit) as stop:
        train_module.cli()
    message = str(stop.value.code)
    assert "\n" not in message and "Traceback" not in message, message
    return message


def cli_exit(argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """(exit status, the one line it ends with) of `python -m trainer.train ARGV` when it stops: the SystemExit
    message for configuration and data errors, the last line on stderr for a stopped run."""
    monkeypatch.setattr(sys, "argv", ["trainer.train", *argv])
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        train_module.cli()
    code = stop.value.code
    if isinstance(code, str):  # sys.exit(message): status 1, the message on stderr
        status, message = 1, code
    else:
        lines = capsys.readouterr().err.strip().splitlines()
        status, message = int(code or 0), (lines[-1] if lines else "")
    assert "Traceback" not in message, message
    return status, message


def curve(folder: Path) -> dict[int, dict]:
    """step -> the training log entry of that step, from a run or checkpoint folder's trainer_state.json."""
    history = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]
    return {entry["step"]: entry for entry in history if "loss" in entry}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> None:
    assert set(left) == set(right)
    for name, tensor in left.items():
        assert torch.equal(tensor, right[name]), name


def signal_during_step(monkeypatch, step: int, *numbers: signal.Signals) -> None:
    """Deliver `numbers` (SIGTERM, as Slurm sends it, by default) to this process, one after the other, in the middle
    of optimiser step `step` (in its first forward)."""
    numbers = numbers or (signal.SIGTERM,)
    compute_loss = croc_trainer.CrocTrainer.compute_loss

    def signalled(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.state.global_step + 1 == step and not getattr(self, "_signalled", False):
            self._signalled = True
            for number in numbers:
                os.kill(os.getpid(), number)
        return compute_loss(self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    monkeypatch.setattr(croc_trainer.CrocTrainer, "compute_loss", signalled)
