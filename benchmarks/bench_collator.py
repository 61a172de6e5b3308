"""Collator benchmark: samples per second one data-loading process turns into model inputs.

The path timed is the one a DataLoader worker runs: `CrocSupervisedDataset.__getitem__` (render the template,
tokenise segment by segment, decode the JPEG, pad to square if asked, CLIP preprocessing) and
`CrocDataCollator` on batches of 16. Images are synthetic 480x640 JPEGs (smooth backgrounds with shapes and
mild noise, so they compress and decode like photos) at the LLaVA-1.5 resolution: 336 px, patch 14 -> 576 image
tokens. Text is Vicuna v1 with a caption instruction and a 100-200 word caption (stage 1.5 rows); stage 1
(`plain`) and text-only rows are timed for comparison. Each row of the table also splits the time into image
(decode + preprocess), text (template + tokenisation + fitting) and collate.

By default torch runs on one thread, as in a DataLoader worker (PyTorch sets that in every worker).

    python -m benchmarks.bench_collator [--samples 512] [--threads 1] [--quick] [--out benchmarks/results/collator.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL
import torch
import transformers
from PIL import Image, ImageDraw

from croc_testing.tiny import tiny_croc_processor
from modeling_croc import with_image_aspect_ratio
from trainer.collator import build_collator
from trainer.data import CrocSupervisedDataset

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "collator.json"
IMAGE_SIZE, PATCH_SIZE = 336, 14
BATCH_SIZE = 16
DISTINCT_IMAGES = 32  # reused across rows; the OS page cache holds them either way, as it would warm files
WORDS = (
    "the a small large red blue green yellow square circle triangle sits near left right top bottom corner "
    "of image background is textured with soft gradient light shadow while two three objects overlap each "
    "other and one appears slightly rotated against dark bright surface edges sharp blurred centre"
).split()
# (label, template, image rows?, image_aspect_ratio)
CASES = [
    ("stage 1.5/2: vicuna_v1, image, pad", "vicuna_v1", True, "pad"),
    ("vicuna_v1, image, square", "vicuna_v1", True, "square"),
    ("stage 1: plain, image, square", "plain", True, "square"),
    ("vicuna_v1, text-only", "vicuna_v1", False, "square"),
]


def _write_images(folder: Path, rng: np.random.Generator) -> list[str]:
    names = []
    for index in range(DISTINCT_IMAGES):
        y, x = np.mgrid[0:480, 0:640]
        base = rng.integers(40, 200, 3)
        pixels = (
            base + 0.1 * x[..., None] * rng.uniform(-1, 1, 3) + 0.1 * y[..., None] * rng.uniform(-1, 1, 3)
        )
        pixels += rng.normal(0, 6, pixels.shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.integers(2, 6)):
            x0, y0 = int(rng.integers(0, 500)), int(rng.integers(0, 340))
            box = (x0, y0, x0 + int(rng.integers(30, 140)), y0 + int(rng.integers(30, 140)))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        name = f"img_{index:03d}.jpg"
        image.save(folder / name, quality=90)
        names.append(name)
    return names


def _rows(count: int, images: list[str] | None, rng: np.random.Generator) -> list[dict]:
    rows = []
    for index in range(count):
        caption = " ".join(rng.choice(WORDS, int(rng.integers(100, 201)))).capitalize() + "."
        rows.append(
            {
                "id": str(index),
                "image": images[index % len(images)] if images else None,
                "conversations": [
                    {
                        "from": "human",
                        "value": "<image>\nDescribe this image in detail." if images else "Describe a scene.",
                    },
                    {"from": "gpt", "value": caption},
                ],
                "source": "synthetic",
            }
        )
    return rows


def _bench_case(processor, rows: list[dict], template: str, aspect: str, image_root: Path, reps: int) -> dict:
    processor = with_image_aspect_ratio(processor, aspect)
    dataset = CrocSupervisedDataset(rows, processor, template, image_root=image_root, model_max_length=2048)
    collator = build_collator(processor)
    # Warm-up: first calls pay for lazy imports and allocator growth.
    collator([dataset[i] for i in range(min(BATCH_SIZE, len(rows)))])

    totals, collate_times, image_times, text_times = [], [], [], []
    tokens = 0
    for _ in range(reps):
        collate_seconds = 0.0
        start = time.perf_counter()
        for batch_start in range(0, len(rows), BATCH_SIZE):
            samples = [dataset[i] for i in range(batch_start, min(batch_start + BATCH_SIZE, len(rows)))]
            collate_start = time.perf_counter()
            batch = collator(samples)
            collate_seconds += time.perf_counter() - collate_start
            tokens += int(batch["attention_mask"].sum())
        totals.append(time.perf_counter() - start)
        collate_times.append(collate_seconds)

        # The same work split in two: image loading alone, then everything but the image.
        start = time.perf_counter()
        for row in rows:
            if row["image"]:
                dataset._load_image(row)
        image_times.append(time.perf_counter() - start)
        text_only = CrocSupervisedDataset([{**row, "image": None} for row in rows], processor, template)
        start = time.perf_counter()
        for index in range(len(rows)):
            text_only[index]
        text_times.append(time.perf_counter() - start)

    count = len(rows)
    total = statistics.median(totals)
    sample = dataset[0]
    return {
        "template": template,
        "image_rows": bool(rows[0]["image"]),
        "image_aspect_ratio": aspect,
        "samples": count,
        "batch_size": BATCH_SIZE,
        "reps": reps,
        "samples_per_s": count / total,
        "ms_per_sample": total / count * 1e3,
        "image_ms_per_sample": statistics.median(image_times) / count * 1e3,
        "text_ms_per_sample": statistics.median(text_times) / count * 1e3,
        "collate_ms_per_batch": statistics.median(collate_times) / -(-count // BATCH_SIZE) * 1e3,
        "mean_tokens_per_sample": tokens / (count * reps),
        "image_tokens_per_sample": int((sample["input_ids"] == processor.image_token_id).sum()),
        "stats": dict(dataset.stats),
    }


def _markdown(results: list[dict]) -> str:
    header = (
        "| case | samples/s | ms/sample | image ms | text ms | collate ms/batch | tokens/sample (image) |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = [
        f"| {r['label']} | **{r['samples_per_s']:.0f}** | {r['ms_per_sample']:.2f} | {r['image_ms_per_sample']:.2f} | "
        f"{r['text_ms_per_sample']:.2f} | {r['collate_ms_per_batch']:.2f} | "
        f"{r['mean_tokens_per_sample']:.0f} ({r['image_tokens_per_sample']}) |"
        for r in results
    ]
    notes = (
        f"\nOne process, batches of {BATCH_SIZE}, medians over repetitions. *samples/s* covers `__getitem__` + "
        "collate end to end; *image*: JPEG decode (480x640) + pad/CLIP preprocessing to 336 px; *text*: template, "
        "segment tokenisation and fitting alone; *collate*: padding and stacking one batch.\n"
    )
    return header + "\n".join(lines) + "\n" + notes


def _machine_info(threads: int) -> dict:
    import tokenizers

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": threads,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "pillow": PIL.__version__,
        # Other processes on the machine slow the run down; record how busy it was.
        "load_average_1_5_15": list(os.getloadavg()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=512, help="rows per case")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per case (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a DataLoader worker uses 1)")
    parser.add_argument("--quick", action="store_true", help="128 rows, one repetition")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = parser.parse_args(argv)
    samples, reps = (128, 1) if args.quick else (args.samples, args.reps)
    torch.set_num_threads(args.threads)
    load_at_start = list(os.getloadavg())

    processor = tiny_croc_processor(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        image_root = Path(folder)
        images = _write_images(image_root, rng)
        jpeg_kib = statistics.mean((image_root / name).stat().st_size for name in images) / 1024
        for label, template, with_images, aspect in CASES:
            rows = _rows(samples, images if with_images else None, rng)
            result = {"label": label, **_bench_case(processor, rows, template, aspect, image_root, reps)}
            results.append(result)
            print(f"  {label}: {result['samples_per_s']:.0f} samples/s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started

    table = _markdown(results)
    print(table)
    payload = {
        "benchmark": "collator",
        "quick": args.quick,
        "elapsed_s": elapsed,
        "image": {"size": [640, 480], "format": "JPEG", "mean_kib": jpeg_kib, "model_size": IMAGE_SIZE},
        "machine": {**_machine_info(args.threads), "load_average_at_start": load_at_start},
        "results": results,
        "markdown": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {os.path.relpath(args.out)} ({elapsed:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
