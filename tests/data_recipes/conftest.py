"""Tiny fake upstream downloads, laid out exactly like the real ones (see each recipe's docstring).

Every fixture here is session-scoped and read-only for the tests: builds write to their own tmp folders.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from recipe_fakes import (
    EXTRA_802K,
    MIX665K_IMAGES,
    SHAREGPT4V_IMAGES,
    TEXT_ROWS,
    caption_row,
    text_row,
    write_image,
    write_json,
    write_jsonl,
    write_parquet,
)

# Belt and braces: nothing in these tests may reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def lcs_root(tmp_path_factory) -> Path:
    """LLaVA-Pretrain: blip_laion_cc_sbu_558k.json + images/NNNNN/NNNNNNNNN.jpg; 6 rows, ids mixing int and str."""
    root = tmp_path_factory.mktemp("lcs558k")
    rows = []
    for i in range(6):
        image = f"{i // 3:05d}/{i:09d}.jpg"
        write_image(root / "images" / image, (10 * i, 100, 100))
        rows.append({"id": f"{i:09d}" if i % 2 else i, "image": image,
                     "conversations": [{"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
                                       {"from": "gpt", "value": f"caption {i}"}]})
    write_json(root / "blip_laion_cc_sbu_558k.json", rows)
    return root


@pytest.fixture(scope="session")
def croc_root(tmp_path_factory) -> Path:
    """ShareGPT4V data/ folder (3 image prefixes, 6 caption rows) + the eight text sets under text/."""
    root = tmp_path_factory.mktemp("croc15m")
    rows = []
    for i, image in enumerate(SHAREGPT4V_IMAGES):
        write_image(root / image, (40 * i, 80, 120))
        rows.append(caption_row(i if i % 2 else f"sg{i}", image, f"A detailed caption of image {i}.",
                                prompt="Analyze the image in a comprehensive and detailed manner."))
    write_json(root / "share-captioner_coco_lcs_sam_1246k_1107.json", rows)
    text = root / "text"
    write_json(text / "MathInstruct" / "MathInstruct.json", TEXT_ROWS["mathinstruct"])
    # Parquet sets come as folders (data/train-*.parquet); alpaca is split over two shards to test ordering.
    write_parquet(text / "alpaca" / "data" / "train-00000-of-00002.parquet", TEXT_ROWS["alpaca"][:3])
    write_parquet(text / "alpaca" / "data" / "train-00001-of-00002.parquet", TEXT_ROWS["alpaca"][3:])
    write_json(text / "train_0.5M_CN" / "Belle_open_source_0.5M.json", TEXT_ROWS["belle"])
    write_parquet(text / "Open-Platypus" / "data" / "train-00000-of-00001.parquet", TEXT_ROWS["open_platypus"])
    write_json(text / "CodeAlpaca-20k" / "code_alpaca_20k.json", TEXT_ROWS["code_alpaca"])
    write_jsonl(text / "firefly-train-1.1M" / "firefly-train-1.1M.jsonl", TEXT_ROWS["firefly"])
    write_jsonl(text / "webqa" / "train.json", TEXT_ROWS["webqa"])  # JSON lines despite the suffix
    write_jsonl(text / "databricks-dolly-15k" / "databricks-dolly-15k.jsonl", TEXT_ROWS["dolly"])
    return root


@pytest.fixture(scope="session")
def mix665k_root(tmp_path_factory) -> Path:
    """LLaVA-1.5 playground/data: llava_v1_5_mix665k.json (6 image rows, one per prefix, multi-turn,
    + 2 text-only rows) and InternVL's opensource/*.jsonl extras (4 rows each) with their image folders."""
    root = tmp_path_factory.mktemp("mix665k")
    rows = []
    for i, image in enumerate(MIX665K_IMAGES):
        write_image(root / image, (30 * i, 30, 30))
        rows.append({"id": f"{i:012d}" if i % 2 else i, "image": image, "conversations": [
            {"from": "human", "value": f"<image>\nQuestion {i}?"}, {"from": "gpt", "value": f"Answer {i}."},
            {"from": "human", "value": "And then?"}, {"from": "gpt", "value": "Done."}]})
    rows += [text_row(100, "Tell me a joke.", "No."), text_row("t-101", "Count to two.", "One, two.")]
    write_json(root / "llava_v1_5_mix665k.json", rows)
    for name, (annotation, image_dir, pattern) in EXTRA_802K.items():
        extra = []
        for i in range(4):
            image = pattern.format(i=i)
            write_image(root / image_dir / image, (60 * i, 0, 200))
            extra.append(caption_row(i, image, f"{name} answer {i}", prompt=f"{name} question {i}?"))
        write_jsonl(root / annotation, extra)
    return root
