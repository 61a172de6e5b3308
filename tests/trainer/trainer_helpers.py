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


def torchrun(nproc: int, config: str, output_dir: Path, *overrides: str, timeout: int = 600) -> None:
    """The same under `torchrun --nproc_per_node <nproc>` (gloo on CPU), in a subprocess."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
               str(_free_port()), "-m", "trainer.train", str(CONFIGS / config), f"--output_dir={output_dir}",
               "--disable_tqdm=true", *overrides]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")


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
