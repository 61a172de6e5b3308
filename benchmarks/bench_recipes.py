"""Recipe build throughput (not a timed test).

Measures, on generated data in a temporary folder:
  * a 100K-row LLaVA-format JSON (mixed int/str ids, 10% text-only rows) built with `llava_json` and image
    checks skipped: reading + normalising, validation, and the whole build (save_to_disk, card, summary,
    with and without the data.jsonl export);
  * a few thousand tiny JPEG rows built with image checks on, in 1 and in `--num-proc` processes;
  * writing 200 synthetic scenes at 336 px.

    python -m benchmarks.bench_recipes [--rows 100000] [--image-rows 3000] [--num-proc 2] [--out FILE]

Prints a Markdown table and writes JSON (default benchmarks/results/recipes.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import datasets
from PIL import Image

from data_recipes import build_recipe, generate_synthetic_scenes, load_llava_json, validate_dataset

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "recipes.json"


def _fake_rows(n: int, image_every: int = 10) -> list[dict[str, Any]]:
    """LLaVA-format rows shaped like mix665K: int and str ids, every `image_every`-th row text-only."""
    rows = []
    for i in range(n):
        text_only = i % image_every == image_every - 1
        row: dict[str, Any] = {"id": i if i % 2 else f"{i:012d}", "conversations": [
            {"from": "human", "value": ("" if text_only else "<image>\n") + f"What is shown in example {i}?"},
            {"from": "gpt", "value": f"Example {i} shows a scene with several objects and some text. " * 3},
        ]}
        if not text_only:
            row["image"] = f"images/{i // 1000:05d}/{i:09d}.jpg"
        rows.append(row)
    return rows


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _metadata_cases(tmp: Path, n_rows: int) -> list[dict[str, Any]]:
    root = tmp / "meta"
    root.mkdir()
    (root / "data.json").write_text(json.dumps(_fake_rows(n_rows)))
    ds, t_read = _timed(lambda: load_llava_json(root / "data.json"))
    report, t_validate = _timed(lambda: validate_dataset(ds, root, check_images=False))
    assert report.num_rejected == 0
    params = {"annotation": "data.json"}
    _, t_build = _timed(lambda: build_recipe("llava_json", root, tmp / "b1", params=params, check_images=False))
    _, t_build_nojsonl = _timed(lambda: build_recipe("llava_json", root, tmp / "b2", params=params,
                                                     check_images=False, export_jsonl=False))
    return [
        {"case": "read + normalise (load_llava_json)", "rows": n_rows, "seconds": t_read},
        {"case": "validate, text checks only", "rows": n_rows, "seconds": t_validate},
        {"case": "build llava_json, --skip-image-check", "rows": n_rows, "seconds": t_build},
        {"case": "build llava_json, --skip-image-check --no-jsonl", "rows": n_rows, "seconds": t_build_nojsonl},
    ]


def _image_cases(tmp: Path, n_rows: int, num_proc: int) -> list[dict[str, Any]]:
    root = tmp / "img"
    rows = _fake_rows(n_rows, image_every=n_rows + 1)  # all image rows
    for row in rows:
        path = root / row["image"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (row["id"] if isinstance(row["id"], int) else 0) % 256).save(path, quality=90)
    (root / "data.json").write_text(json.dumps(rows))
    params = {"annotation": "data.json"}
    out = []
    for procs in sorted({1, num_proc}):
        result, seconds = _timed(lambda procs=procs: build_recipe("llava_json", root, tmp / f"i{procs}", params=params,
                                                                  num_proc=procs, export_jsonl=False))
        assert result.summary["rows"]["dropped"] == 0
        out.append({"case": f"build llava_json, image checks, num_proc={procs}", "rows": n_rows, "seconds": seconds})
    return out


def _synth_case(tmp: Path) -> dict[str, Any]:
    _, seconds = _timed(lambda: generate_synthetic_scenes(tmp / "synth", num_images=200, seed=0, image_size=336))
    return {"case": "synthetic scenes, 200 images at 336 px", "rows": 200, "seconds": seconds}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_recipes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of metadata for the no-image build")
    parser.add_argument("--image-rows", type=int, default=3_000, help="rows (one tiny JPEG each) for image checks")
    parser.add_argument("--num-proc", type=int, default=2, help="processes for the parallel image-check run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args(argv)
    datasets.disable_progress_bars()

    with tempfile.TemporaryDirectory(prefix="bench_recipes_") as tmp:
        tmp = Path(tmp)
        results = _metadata_cases(tmp, args.rows)
        results += _image_cases(tmp, args.image_rows, args.num_proc)
        results.append(_synth_case(tmp))
    for r in results:
        r["rows_per_s"] = r["rows"] / r["seconds"]

    print("| case | rows | seconds | rows/s |")
    print("|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['case']} | {r['rows']:,} | {r['seconds']:.2f} | {r['rows_per_s']:,.0f} |")
    payload = {
        "benchmark": "recipes",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "datasets": datasets.__version__},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
