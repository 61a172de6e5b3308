"""Stage 1.5: the Croc 1.5M mixture (1.2M ShareGPT4V detailed captions + ~300K text-only rows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modeling_croc.constants import IMAGE_TOKEN

from ..catalog import CROC_1_5M_COUNTS, TEXT_SOURCE_NAMES, source_info
from ..parts import (
    RecipeResult,
    RowTransform,
    SourcePart,
    llava_part,
    locate,
    merge_overrides,
    require_local_sources,
    text_part,
)
from ..registry import check_instruction, register_recipe
from ..sampling import source_seed

DEFAULT_CAPTION_INSTRUCTION = "Please generate detailed descriptions of the given image."


def caption_instruction(instruction: str | list[str] | None, seed: int) -> RowTransform | None:
    """A row transform that puts Croc's caption instruction in the first human turn.

    ShareGPT4V's rows carry the share-captioner's own prompts; Croc's prompt is unpublished, so it is
    a parameter. A list is a pool: each row draws one with a seeded generator. None (or "none") keeps the upstream
    prompt.
    """
    # `--set instruction=none` reads as the string "none" (YAML's null is `null`); recap_cc3m documents it as "keep
    # each row's own", so every recipe sharing this transform takes it so, never as a one-word prompt.
    if instruction is None or instruction == "none":
        return None
    check_instruction(instruction)
    pool = [instruction] if isinstance(instruction, str) else list(instruction)
    rng = np.random.default_rng(source_seed(seed, "caption_instruction"))

    def transform(row: dict[str, Any]) -> dict[str, Any]:
        turns = row["conversations"]
        if turns and turns[0]["from"] == "human":
            prompt = pool[int(rng.integers(len(pool)))] if len(pool) > 1 else pool[0]
            turns[0] = {"from": "human", "value": f"{IMAGE_TOKEN}\n{prompt}"}
        return row

    return transform


@register_recipe("croc1.5m")
def croc_1_5m(
    data_root: Path,
    *,
    seed: int,
    instruction: str | list[str] | None = DEFAULT_CAPTION_INSTRUCTION,
    counts: dict[str, int | None] | None = None,
    paths: dict[str, str] | None = None,
    hub: dict[str, bool | str] | None = None,
) -> RecipeResult:
    """Stage 1.5: ShareGPT4V detailed captions sampled to 1.2M + eight text-only sets (~301K).

    Expected layout (ShareGPT4V's `data/` folder; text sets as `hf download <repo> --local-dir ROOT/text/<name>`)::

        ROOT/share-captioner_coco_lcs_sam_1246k_1107.json
        ROOT/coco/train2017/000000000009.jpg
        ROOT/llava/llava_pretrain/images/00000/000000012.jpg
        ROOT/sam/images/sa_1.jpg
        ROOT/text/MathInstruct/MathInstruct.json
        ROOT/text/alpaca/data/train-00000-of-00001.parquet           (a folder: all parquet/json files in it)
        ROOT/text/train_0.5M_CN/Belle_open_source_0.5M.json
        ROOT/text/Open-Platypus/data/train-00000-of-00001.parquet    (a folder)
        ROOT/text/CodeAlpaca-20k/code_alpaca_20k.json
        ROOT/text/firefly-train-1.1M/firefly-train-1.1M.jsonl
        ROOT/text/webqa/train.json                                   (JSON lines)
        ROOT/text/databricks-dolly-15k/databricks-dolly-15k.jsonl

    Each text row becomes one human turn (instruction, plus "\\n" + input/context when present) and one
    gpt turn (output/target/response), with no image. Every caption row's prompt becomes
    "<image>\\n" + `instruction`.

    Parameters (`--set key=value`; per-source keys are sharegpt4v, mathinstruct, alpaca, belle,
    open_platypus, code_alpaca, firefly, webqa, dolly):
        instruction: caption prompt, a list (a pool drawn per row with the seed) or null / none (keep upstream's).
        counts.NAME: rows to draw from a source (the paper's counts by default; null: all; 0: leave out).
            A source with fewer rows than asked gives all it has; the shortfall is recorded.
        paths.NAME: file or folder replacing the default local path (absolute or relative to ROOT).
        hub.NAME: true (or a repo id) to read that source from the Hub instead.
    """
    counts = merge_overrides(dict(CROC_1_5M_COUNTS), counts, "counts")
    paths = merge_overrides(dict.fromkeys(CROC_1_5M_COUNTS), paths, "paths")
    hub = merge_overrides(dict.fromkeys(CROC_1_5M_COUNTS, False), hub, "hub")

    locations = {name: locate(source_info(name), data_root, path=paths[name], hub_ref=hub[name])
                 for name in ("sharegpt4v", *TEXT_SOURCE_NAMES) if counts[name] != 0}
    require_local_sources(locations, data_root)
    parts: list[SourcePart] = []
    for name, location in locations.items():
        if name == "sharegpt4v":
            parts.append(llava_part(source_info(name), location, count=counts[name], seed=seed,
                                    transform=caption_instruction(instruction, seed)))
        else:
            parts.append(text_part(source_info(name), location, count=counts[name], seed=seed))
    return RecipeResult(
        parts=parts,
        image_root=data_root,
        pretty_name="Croc stage-1.5 mixture (ShareGPT4V detailed captions + text-only)",
        params={"instruction": instruction, "counts": counts, "paths": paths, "hub": hub},
    )
