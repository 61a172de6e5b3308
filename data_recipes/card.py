"""The dataset card (README.md) of a build: sources, counts, licences, seed, parameters, rejects."""

from __future__ import annotations

import json
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData

from .validation import REJECT_REASONS


def size_category(n: int) -> str:
    """The Hub's size bucket for `n` rows."""
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < bound:
            return label
    return "10M<n<100M"


def _count(value: int | None) -> str:
    return "all" if value is None else f"{value:,}"


def build_card(summary: dict[str, Any], *, pretty_name: str, licence_ids: list[str], hub_ids: list[str],
               image_storage: str = "path") -> DatasetCard:
    """Render the card from a build summary (see :func:`data_recipes.build.build_recipe`), for rows whose images are
    paths (the build folder) or embedded (`image_storage="embedded"`: what a push uploads)."""
    licences = sorted(set(licence_ids))
    data = DatasetCardData(
        license=licences if len(licences) > 1 else licences[0] if licences else "unknown",
        pretty_name=pretty_name,
        task_categories=["image-text-to-text"],
        size_categories=[size_category(summary["rows"]["kept"])],
        source_datasets=sorted(set(hub_ids)) or None,
        tags=["croc", "llava", "data_recipes"],
    )
    sources = summary["sources"]
    rows = summary["rows"]
    lines = [
        f"# {pretty_name}",
        "",
        f"Built by the `data_recipes` recipe **`{summary['recipe']}`** with seed **{summary['seed']}**:",
        "",
        "```bash",
        summary["command"],
        "```",
        "",
        f"{rows['kept']:,} rows kept out of {rows['read']:,} read ({rows['dropped']:,} rejected).",
        ("Each image row carries its image (a `datasets.Image` feature, bytes embedded in the Parquet shards): "
         "`datasets.load_dataset` returns PIL images." if image_storage == "embedded" else
         "Image paths are relative to the image root the build used"
         + (f" (`{summary['image_root']}`)." if summary.get("image_root") else ".")),
        "",
        "## Sources",
        "",
        "| source | upstream | licence | requested | available | taken | kept | dropped |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in sources.items():
        origin = s["hub_id"] or s["origin"]
        lines.append(f"| {name} | `{origin}` | {s['licence']} | {_count(s['requested'])} | {s['available']:,} "
                     f"| {s['taken']:,} | {s['kept']:,} | {s['dropped']:,} |")
    short = {n: s["shortfall"] for n, s in sources.items() if s["shortfall"]}
    if short:
        lines += ["", "Shortfalls (asked for more rows than the source has; every row was taken): "
                  + ", ".join(f"{n}: {v:,}" for n, v in short.items()) + "."]
    lines += [
        "",
        "Rows are drawn per source with `numpy.random.default_rng([seed, crc32(source)])` without replacement "
        "and kept in upstream order; converted text-only rows, and rows without an upstream id, get the id "
        "`<source>-<upstream row index>`.",
        "",
        "## Parameters",
        "",
        "```json",
        json.dumps({"seed": summary["seed"], **summary["params"]}, indent=2, ensure_ascii=False, default=str),
        "```",
        "",
        "## Rejected rows",
        "",
        "Every rejected row is in `rejects.jsonl` with its reason"
        + ("" if summary["image_check"] else " (image files were **not** checked in this build)") + ".",
        "",
        "| reason | rows | meaning |",
        "|---|---:|---|",
    ]
    lines += [f"| {r} | {summary['dropped_by_reason'][r]:,} | {meaning} |" for r, meaning in REJECT_REASONS.items()]
    lines += [
        "",
        "## Schema",
        "",
        "`id` (string), `image` ("
        + ("image, a `datasets.Image` feature" if image_storage == "embedded" else "string relative path")
        + ", null for text-only rows), "
        "`conversations` (list of `{from: human|gpt, value}`, `<image>` marks the image in the first human turn), "
        "`source` (upstream set).",
        "",
        "## Licences",
        "",
        "Using this mixture means following the terms of every source listed above (see each source's own card).",
        "",
    ]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
