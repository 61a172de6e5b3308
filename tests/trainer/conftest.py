"""Fixtures of the trainer tests: a tiny LLaVA-format data folder, a tiny saved "stage-1" model folder, and a capture
of the model parameters `trainer.train` starts from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from croc_testing.tiny import save_tiny_croc
from trainer import train as train_module

COLOURS = {"red": (220, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 220), "yellow": (240, 200, 30),
           "purple": (140, 60, 180), "orange": (245, 135, 30), "pink": (240, 120, 180), "cyan": (40, 190, 210)}
SHAPES = ("square", "circle")

# Two cores shared by the xdist workers and the processes they start.
torch.set_num_threads(1)


def _conversation(question: str, answer: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """`images/*.png` (56 px, one coloured shape each) and three LLaVA JSON files: `captions.json` (stage 1),
    `detailed.json` (images + text-only rows, stage 1.5) and `qa.json` (stage 2)."""
    root = tmp_path_factory.mktemp("croc_data")
    (root / "images").mkdir()
    captions, detailed, qa = [], [], []
    for i, (colour, rgb) in enumerate(COLOURS.items()):
        shape = SHAPES[i % 2]
        image = Image.new("RGB", (56 + 8 * (i % 3), 56), (245, 245, 245))
        box = (12, 12, 44, 44)
        (image.paste(rgb, box) if shape == "square" else _circle(image, box, rgb))
        name = f"images/{i:03d}.png"
        image.save(root / name)
        captions.append({"id": f"cap-{i}", "image": name,
                         "conversations": _conversation("<image>\n", f"a {colour} {shape}.")})
        detailed.append({"id": f"det-{i}", "image": name, "conversations": _conversation(
            "<image>\nDescribe the image.", f"A {colour} {shape} in the middle of a white image.")})
        qa.append({"id": f"qa-{i}", "image": name,
                   "conversations": _conversation("What colour is the shape?\n<image>", colour)})
    for i in range(4):
        text = {"id": f"text-{i}", "conversations": _conversation(f"What is {i} plus {i}?", f"{2 * i}.")}
        detailed.append(text)
        qa.append(dict(text, id=f"qa-text-{i}"))
    for name, rows in (("captions.json", captions), ("detailed.json", detailed), ("qa.json", qa)):
        (root / name).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return root


def _circle(image: Image.Image, box, rgb) -> None:
    from PIL import ImageDraw

    ImageDraw.Draw(image).ellipse(box, fill=rgb)


@pytest.fixture(scope="session")
def stage0_dir(tmp_path_factory) -> Path:
    """The random tiny Croc folder a cpu_tiny stage 1 starts from (`python -m croc_testing tiny-model`)."""
    return save_tiny_croc(tmp_path_factory.mktemp("stage0_model"), seed=0)


@pytest.fixture(scope="session")
def stage1_dir(tmp_path_factory) -> Path:
    """A saved tiny Croc folder standing in for a stage-1 output (model + processor, safetensors)."""
    return save_tiny_croc(tmp_path_factory.mktemp("stage1_model"), seed=0)


@pytest.fixture
def initial_state(monkeypatch) -> dict[str, torch.Tensor]:
    """Filled with a copy of the model's parameters as `trainer.train` built them, before any training."""
    captured: dict[str, torch.Tensor] = {}
    original = train_module.load_model_and_processor

    def capture(model_args, args):
        model, processor = original(model_args, args)
        captured.update({name: tensor.detach().clone() for name, tensor in model.state_dict().items()})
        return model, processor

    monkeypatch.setattr(train_module, "load_model_and_processor", capture)
    return captured


