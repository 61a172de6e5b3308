"""Helpers of the trainer tests: run `python -m trainer.train` in-process or under torchrun from the cpu_tiny YAMLs,
and compare parameters and logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from trainer import train as train_module
from trainer.stages import parameter_group

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "trainer" / "configs" / "cpu_tiny"


def run_stage(config: str, output_dir: Path, *overrides: str):
    """`python -m trainer.train trainer/configs/cpu_tiny/<config> --output_dir=... <overrides>` in this process."""
    argv = [str(CONFIGS / config), f"--output_dir={output_dir}", "--disable_tqdm=true", *overrides]
    return train_module.main(argv)


def _torch_env() -> dict[str, str]:
    # PYTHONFAULTHANDLER: a process that dies on a signal (an abort in a C++ thread at exit) prints every Python
    # thread's stack, so a failure that happens once in many runs says where it happened.
    return dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                PYTHONFAULTHANDLER="1")


def _train_command(launcher: list[str], config: str, output_dir: Path, overrides: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "trainer.train", str(CONFIGS / config),
            f"--output_dir={output_dir}", "--disable_tqdm=true", *overrides]


def torchrun(nproc: int, config: str, output_dir: Path, *overrides: str, timeout: int = 600) -> None:
    """The same under `torchrun --nproc_per_node <nproc>` (gloo on CPU), in a subprocess."""
    command = _train_command(["--nproc_per_node", str(nproc), "--master_port", str(_free_port())], config,
                             output_dir, overrides)
    result = subprocess.run(command, cwd=REPO, env=_torch_env(), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")


def torchrun_nodes(nnodes: int, config: str, output_dir: Path, *overrides: str, timeout: int = 600) -> list[str]:
    """A multi-node launch simulated on this machine: one `torchrun --nnodes <nnodes> --node_rank <r>
    --rdzv-endpoint 127.0.0.1:PORT --nproc_per_node 1` per node, all started at once, as each machine of a cluster
    would run it (static rendezvous: node r hosts global rank r; loopback only). Returns each node's stderr."""
    endpoint = f"127.0.0.1:{_free_port()}"
    commands = [
        _train_command(["--nnodes", str(nnodes), "--node_rank", str(rank), "--nproc_per_node", "1",
                        "--rdzv-backend", "static", "--rdzv-endpoint", endpoint], config, output_dir, overrides)
        for rank in range(nnodes)
    ]
    nodes = [subprocess.Popen(command, cwd=REPO, env=_torch_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for command in commands]
    failures, logs = [], []
    try:
        for rank, node in enumerate(nodes):
            stdout, stderr = node.communicate(timeout=timeout)
            logs.append(stderr)
            if node.returncode != 0:
                failures.append(f"node {rank}: {' '.join(commands[rank])} failed:\n{stdout[-3000:]}\n{stderr[-6000:]}")
    finally:
        for node in nodes:  # a node left waiting for a failed peer
            if node.poll() is None:
                node.kill()
                node.communicate()
    if failures:
        raise AssertionError("\n\n".join(failures))
    return logs


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def changed_groups(before: dict[str, torch.Tensor], model: torch.nn.Module) -> set[str]:
    """Parameter groups with at least one parameter that differs from `before`."""
    after = model.state_dict()
    assert set(after) == set(before)
    return {parameter_group(name) for name, tensor in after.items() if not torch.equal(tensor, before[name])}


def read_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def log_history(folder: Path) -> list[dict]:
    return json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def shaped_image_rows(folder: Path, sizes: dict[str, tuple[int, int]]) -> list[dict]:
    """One image row per `name: (width, height)` (images of different shapes, so of different tile, view or patch
    layouts), saved under `folder`, then a text-only row."""
    from PIL import Image

    for index, (name, size) in enumerate(sizes.items()):
        Image.new("RGB", size, (40 * index, 200, 90)).save(folder / name)
    rows = [{"id": name, "image": name, "conversations": [
        {"from": "human", "value": "<image>\nDescribe the image."},
        {"from": "gpt", "value": f"A picture {index}."}]} for index, name in enumerate(sizes)]
    rows.append({"id": "text", "conversations": [{"from": "human", "value": "Name a prime."},
                                                 {"from": "gpt", "value": "Seven."}]})
    return rows
