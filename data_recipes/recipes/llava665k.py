"""Stage 2: LLaVA-1.5 mix665K."""

from __future__ import annotations

from pathlib import Path

from ..catalog import source_info
from ..parts import RecipeResult, llava_part, locate
from ..registry import register_recipe


@register_recipe("llava665k")
def llava665k(
    data_root: Path,
    *,
    seed: int,
    annotation: str | None = None,
    count: int | None = None,
    hub: bool | str = False,
) -> RecipeResult:
    """Stage 2 (instruction tuning): LLaVA-1.5 mix665K (624,610 image rows + 40,688 text-only rows).

    Expected layout (the LLaVA-1.5 `playground/data` folder)::

        ROOT/llava_v1_5_mix665k.json
        ROOT/coco/train2017/000000033471.jpg
        ROOT/gqa/images/2354786.jpg
        ROOT/ocr_vqa/images/140031996.jpg
        ROOT/textvqa/train_images/0a0bc91825468c45.jpg
        ROOT/vg/VG_100K/2316.jpg   ROOT/vg/VG_100K_2/1.jpg

    Parameters (`--set key=value`):
        annotation: annotation file (absolute or relative to ROOT); default `llava_v1_5_mix665k.json`.
        count: rows to draw with the seed (None: all).
        hub: true (or a repo id) to fetch the annotation from `liuhaotian/LLaVA-Instruct-150K`.
    """
    info = source_info("llava665k")
    part = llava_part(info, locate(info, data_root, path=annotation, hub_ref=hub), count=count, seed=seed)
    return RecipeResult(
        parts=[part],
        image_root=data_root,
        pretty_name="LLaVA-1.5 mix665K (Croc stage 2)",
        params={"annotation": annotation, "count": count, "hub": hub},
    )
