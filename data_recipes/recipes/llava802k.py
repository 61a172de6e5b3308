"""Stage 2, 802K variant: mix665K + ~142K rows from public document/chart/diagram/OCR sets."""

from __future__ import annotations

from pathlib import Path

from ..catalog import source_info
from ..parts import RecipeResult, llava_part, locate, merge_overrides, require_local_sources
from ..registry import register_recipe

# The paper (table 6) adds 142K rows but does not publish per-source counts. These defaults take every
# row of InternVL-Chat-V1-2-SFT-Data's DocVQA, ChartQA, AI2D and SynthDoG-EN files (their published
# lengths) and fill the rest of the 142,000 from DVQA. They are a documented choice, not the paper's draw.
EXTRA_802K_COUNTS: dict[str, int | None] = {
    "docvqa": 10_211,
    "chartqa": 18_317,
    "ai2d": 12_413,
    "synthdog_en": 29_765,
    "dvqa": 71_294,
}

# InternVL's image roots (`playground/data/<dir>/`), i.e. where each file's relative image paths start.
EXTRA_802K_IMAGE_DIRS: dict[str, str] = {
    "docvqa": "docvqa",
    "chartqa": "chartqa",
    "ai2d": "ai2d",
    "synthdog_en": "synthdog-en",
    "dvqa": "dvqa",
}


@register_recipe("llava802k")
def llava802k(
    data_root: Path,
    *,
    seed: int,
    counts: dict[str, int | None] | None = None,
    paths: dict[str, str] | None = None,
    image_dirs: dict[str, str] | None = None,
    hub: dict[str, bool | str] | None = None,
) -> RecipeResult:
    """Stage 2, 802K variant: mix665K + 142K public LLaVA-format rows (DocVQA, ChartQA, AI2D, SynthDoG-EN, DVQA).

    Expected layout (LLaVA-1.5's `playground/data` plus InternVL's `opensource/` annotation files)::

        ROOT/llava_v1_5_mix665k.json              ROOT/coco/ gqa/ ocr_vqa/ textvqa/ vg/  (as llava665k)
        ROOT/opensource/docvqa_train_10k.jsonl    ROOT/docvqa/train/documents/xxx.png
        ROOT/opensource/chartqa_train_18k.jsonl   ROOT/chartqa/train/png/xxx.png
        ROOT/opensource/ai2d_train_12k.jsonl      ROOT/ai2d/images/xxx.png
        ROOT/opensource/synthdog_en.jsonl         ROOT/synthdog-en/images/xxx.jpg
        ROOT/opensource/dvqa_train_200k.jsonl     ROOT/dvqa/images/xxx.png

    The extra files' image paths are relative to their own folder (`image_dirs.NAME`); the recipe prefixes
    them so every row of the build is relative to ROOT.

    Parameters (`--set key=value`; per-source keys are llava665k, docvqa, chartqa, ai2d, synthdog_en, dvqa):
        counts.NAME: rows to draw (llava665k: null = all; extras: see EXTRA_802K_COUNTS, summing to 142,000;
            0 leaves a source out). Per-source counts of the paper's 142K are unpublished.
        paths.NAME: annotation file replacing the default (absolute or relative to ROOT).
        image_dirs.NAME: folder under ROOT holding an extra source's images.
        hub.NAME: true (or a repo id) to fetch that annotation file from the Hub; images stay local.
    """
    names = ["llava665k", *EXTRA_802K_COUNTS]
    counts = merge_overrides({"llava665k": None, **EXTRA_802K_COUNTS}, counts, "counts")
    paths = merge_overrides(dict.fromkeys(names), paths, "paths")
    image_dirs = merge_overrides({"llava665k": "", **EXTRA_802K_IMAGE_DIRS}, image_dirs, "image_dirs")
    hub = merge_overrides(dict.fromkeys(names, False), hub, "hub")

    locations = {name: locate(source_info(name), data_root, path=paths[name], hub_ref=hub[name])
                 for name in names if counts[name] != 0}
    require_local_sources(locations, data_root)
    parts = [llava_part(source_info(name), location, count=counts[name], seed=seed, image_prefix=image_dirs[name])
             for name, location in locations.items()]
    return RecipeResult(
        parts=parts,
        image_root=data_root,
        pretty_name="LLaVA-1.5 mix665K + 142K public extras (Croc stage 2, 802K variant)",
        params={"counts": counts, "paths": paths, "image_dirs": image_dirs, "hub": hub},
    )
