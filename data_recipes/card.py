"""The dataset card (README.md) of a build: sources, counts, licences, seed, parameters, rejects."""

from __future__ import annotations

import json
import re
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


# The paper whose recipes these are, as its authors cite it (their repository's README; arXiv 2410.14332).
CITATION = """@misc{xie2024croc,
  title={Croc: Pretraining Large Multimodal Models with Cross-Modal Comprehension},
  author={Yin Xie and Kaicheng Yang and Ninghua Yang and Weimo Deng and Xiangzi Dai and Tiancheng Gu and Yumeng Wang
          and Xiang An and Yongle Zhao and Ziyong Feng and Jiankang Deng},
  year={2024},
  eprint={2410.14332},
  archivePrefix={arXiv},
  primaryClass={cs.CV},
  url={https://arxiv.org/abs/2410.14332}
}"""
# Where the card's `license_link` points when a source's terms are not one of the Hub's licences: its own section.
LICENCES_LINK = "README.md#licences"


def _licence_metadata(licence_ids: list[str], sources: dict[str, Any]) -> dict[str, Any]:
    """The card's licence fields. `other` alone is not enough for the Hub, which asks for `license_name` and
    `license_link` with it: named after the sources whose terms are not a Hub licence, linked to the Licences
    section that states them."""
    licences = sorted(set(licence_ids))
    fields: dict[str, Any] = {"license": licences if len(licences) > 1 else licences[0] if licences else "unknown"}
    if "other" in licences:
        others = [name for name, source in sources.items() if source.get("licence_id") == "other"] or ["upstream"]
        slug = "-and-".join(re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-") for name in others)
        fields.update(license_name=f"{slug}-terms", license_link=LICENCES_LINK)
    return fields


def build_card(summary: dict[str, Any], *, pretty_name: str, licence_ids: list[str], hub_ids: list[str],
               image_storage: str = "path", published: bool = False) -> DatasetCard:
    """Render the card from a build summary (see :func:`data_recipes.build.build_recipe`), for rows whose images are
    paths (the build folder) or embedded (`image_storage="embedded"`: what a push uploads). `published`: the card
    that goes up (`summary` from `publish.public_summary`), which says what stays with the local build."""
    sources = summary["sources"]
    rows = summary["rows"]
    data = DatasetCardData(
        **_licence_metadata(licence_ids, sources),
        pretty_name=pretty_name,
        task_categories=["image-text-to-text"],
        size_categories=[size_category(summary["rows"]["kept"])],
        source_datasets=sorted(set(hub_ids)) or None,
        tags=["croc", "llava", "data_recipes"],
    )
    # The placeholders the command shows: a data root that is the working directory goes up as `.`, not DATA_ROOT.
    folders = {name: meaning for name, meaning in (summary.get("folders") or {}).items()
               if re.search(rf"(?<![\w-]){re.escape(name)}(?!\w)", summary["command"])}
    lines = [
        f"# {pretty_name}",
        "",
        f"Built by the `data_recipes` recipe **`{summary['recipe']}`** with seed **{summary['seed']}**:",
        "",
        "```bash",
        summary["command"],
        "```",
        "",
        *([("The folders in it are the building machine's, written as: "
            + "; ".join(f"`{name}` {meaning}" for name, meaning in folders.items()) + "."), ""] if folders else []),
        f"{rows['kept']:,} rows kept out of {rows['read']:,} read ({rows['dropped']:,} rejected).",
        ("Each image row carries its image (a `datasets.Image` feature, bytes embedded in the Parquet shards): "
         "`datasets.load_dataset` returns PIL images; the image's `path` is the one the row named, relative to the "
         "image root." if image_storage == "embedded" else
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
        ("The rejected rows, each with its reason, are in `rejects.jsonl` of the local build folder, which stays "
         "with the build and is not uploaded" if published else "Every rejected row is in `rejects.jsonl` with its "
         "reason") + ("" if summary["image_check"] else " (image files were **not** checked in this build)") + ".",
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
        "`conversations` (list of `{from: human|gpt, value}` turns, starting with human and alternating, ending with "
        "gpt), `source` (upstream set). An image row holds exactly one `<image>` marker, in a human turn (any one, not "
        "necessarily the first); answers and text-only rows hold none.",
        "",
        "No column identifies a row on its own: `id` repeats across sources, and within one (mix665K asks several "
        "questions about one image under one id). A row with the same `id`, image and turns as an earlier one was "
        "rejected (`duplicate_row`), so `id`, `image` and `conversations` together identify a row; `(source, id)` "
        "does not.",
        "",
        "## Licences",
        "",
        "Using this mixture means following the terms of every source, as each upstream card states them (the "
        "metadata's licence ids cannot carry every term):",
        "",
        *[f"- `{name}`: {source['licence']}" for name, source in sources.items()],
        "",
        "## Citation",
        "",
        "The recipes reproduce the data of the Croc paper (arXiv 2410.14332):",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
