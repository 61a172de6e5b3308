"""Helpers that write fake upstream files; shared by conftest.py and the tests (unique module name on purpose:
the test tree has no __init__.py files, so module basenames must not clash with other test folders)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def write_image(path: Path, color: tuple[int, int, int] = (200, 30, 30)) -> None:
    """A 4x4 image; JPEG or PNG by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), color).save(path)


def write_json(path: Path, rows: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1))


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def caption_row(row_id: Any, image: str | None, caption: str, prompt: str = "Describe the image.") -> dict[str, Any]:
    row = {"id": row_id, "conversations": [{"from": "human", "value": f"<image>\n{prompt}"},
                                            {"from": "gpt", "value": caption}]}
    if image is not None:
        row["image"] = image
    return row


def text_row(row_id: Any, question: str, answer: str) -> dict[str, Any]:
    return {"id": row_id, "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}


SHAREGPT4V_IMAGES = [
    "coco/train2017/000000000009.jpg",
    "coco/train2017/000000000025.jpg",
    "llava/llava_pretrain/images/00000/000000012.jpg",
    "llava/llava_pretrain/images/00013/000133209.jpg",
    "sam/images/sa_1.jpg",
    "sam/images/sa_2.jpg",
]


# The eight text-only sources, in their upstream field layouts, 5 rows each (webqa: 3, to force a shortfall).
TEXT_ROWS: dict[str, list[dict[str, Any]]] = {
    "mathinstruct": [{"source": "data/CoT/gsm_rft.json", "instruction": f"What is {i} + {i}?", "output": str(2 * i)}
                     for i in range(5)],
    "alpaca": [{"instruction": f"Give a synonym of word{i}.", "input": "" if i % 2 else f"context {i}",
                "output": f"synonym{i}", "text": "ignored"} for i in range(5)],
    "belle": [{"instruction": f"翻译 {i}", "input": "", "output": f"translation {i}"} for i in range(5)],
    "open_platypus": [{"instruction": f"Prove lemma {i}.", "input": "", "output": f"proof {i}",
                       "data_source": "MATH/PRM-800K"} for i in range(5)],
    "code_alpaca": [{"instruction": f"Write function f{i}.", "input": f"n = {i}", "output": f"def f{i}(): pass"}
                    for i in range(5)],
    "firefly": [{"kind": "NLI", "input": f"Premise {i}?", "target": f"entailment {i}"} for i in range(5)],
    "webqa": [{"id": i, "input": f"Where is place {i}?", "output": f"Place {i} is here."} for i in range(3)],
    "dolly": [{"instruction": f"Summarise text {i}.", "context": f"Long text {i}." if i % 2 == 0 else "",
               "response": f"Summary {i}.", "category": "summarization"} for i in range(5)],
}


MIX665K_IMAGES = [
    "coco/train2017/000000033471.jpg",
    "gqa/images/2354786.jpg",
    "ocr_vqa/images/140031996.jpg",
    "textvqa/train_images/0a0bc91825468c45.jpg",
    "vg/VG_100K/2316.jpg",
    "vg/VG_100K_2/1.jpg",
]


EXTRA_802K = {  # name: (annotation file, image dir, image path inside it)
    "docvqa": ("opensource/docvqa_train_10k.jsonl", "docvqa", "train/documents/doc{i}.png"),
    "chartqa": ("opensource/chartqa_train_18k.jsonl", "chartqa", "train/png/chart{i}.png"),
    "ai2d": ("opensource/ai2d_train_12k.jsonl", "ai2d", "images/{i}.png"),
    "synthdog_en": ("opensource/synthdog_en.jsonl", "synthdog-en", "images/{i}.jpg"),
    "dvqa": ("opensource/dvqa_train_200k.jsonl", "dvqa", "images/bar_{i}.png"),
}
