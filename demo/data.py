"""The demo's data: synthetic scenes (`data_recipes`) and the baseline's stage-1 caption mixture."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from data_recipes import generate_synthetic_scenes
from data_recipes.synthetic_scenes import ANSWER_SUFFIX
from modeling_croc import IMAGE_TOKEN

from .runs import BASELINE_STAGE1_DATA, QA_MULTI_TURN_DATA
from .settings import DemoSettings

# Caption files of the baseline's stage 1, in this order: the LLaVA-1.5* row of the paper's table 5 adds the
# stage-1.5 captions to the stage-1 data (trained as plain captioning, projector only).
BASELINE_CAPTION_FILES: tuple[str, ...] = ("brief_captions.json", "detailed_captions.json")


def build_data(out_dir: Path, settings: DemoSettings, seed: int) -> dict[str, int]:
    """Write the scenes folder and the baseline mixture; returns the row count of every file."""
    scenes = generate_synthetic_scenes(
        out_dir, num_images=settings.num_images, seed=seed, image_size=settings.image_size,
        test_fraction=settings.test_fraction, val_fraction=settings.val_fraction, progress=True,
    )
    rows = []
    for name in BASELINE_CAPTION_FILES:
        rows += json.loads((out_dir / name).read_text(encoding="utf-8"))
    with (out_dir / BASELINE_STAGE1_DATA).open("w", encoding="utf-8") as f:
        json.dump(rows, f, ensure_ascii=False, indent=1)
    conversations = multi_turn_questions(json.loads((out_dir / "qa_train.json").read_text(encoding="utf-8")), seed)
    with (out_dir / QA_MULTI_TURN_DATA).open("w", encoding="utf-8") as f:
        json.dump(conversations, f, ensure_ascii=False, indent=1)
    return {**scenes.counts, BASELINE_STAGE1_DATA: len(rows), QA_MULTI_TURN_DATA: len(conversations)}


def multi_turn_questions(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """One conversation per image with all its questions as turns, as LLaVA-1.5's instruction data is laid out.

    Every turn is supervised, so a step carries ~5x more answer tokens than with one question per row for little
    more sequence. The turn order is shuffled per image (seeded), so every question type also comes first, where
    the held-out questions are asked (with the short-answer instruction, which only the first turn keeps).
    """
    by_image: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_image.setdefault(row["image"], []).append(row)
    out = []
    for image, questions in by_image.items():
        order = list(questions)
        random.Random(f"{seed}:{image}").shuffle(order)
        turns = []
        for k, row in enumerate(order):
            human, gpt = row["conversations"]
            text = human["value"].replace(IMAGE_TOKEN, "").strip()
            if k > 0:  # the short-answer instruction once per conversation: a third fewer tokens per step
                text = text.removesuffix(ANSWER_SUFFIX).strip()
            turns += [{"from": "human", "value": f"{IMAGE_TOKEN}\n{text}" if k == 0 else text},
                      {"from": "gpt", "value": gpt["value"]}]
        out.append({"id": f"qa-{Path(image).stem}", "image": image, "conversations": turns})
    return out
