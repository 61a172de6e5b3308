"""Stage 1: LCS-558K."""

from __future__ import annotations

from pathlib import Path

from ..catalog import source_info
from ..parts import RecipeResult, llava_part, locate
from ..registry import register_recipe


@register_recipe("lcs558k")
def lcs558k(
    data_root: Path,
    *,
    seed: int,
    annotation: str | None = None,
    image_root: str = "images",
    count: int | None = None,
    hub: bool | str = False,
) -> RecipeResult:
    """Stage 1 (projector alignment): LCS-558K, BLIP captions of LAION/CC/SBU images.

    Expected layout (`hf download liuhaotian/LLaVA-Pretrain --repo-type dataset --local-dir ROOT`,
    then `unzip ROOT/images.zip -d ROOT/images`)::

        ROOT/blip_laion_cc_sbu_558k.json
        ROOT/images/00000/000000012.jpg
        ...

    Parameters (`--set key=value`):
        annotation: annotation file (absolute or relative to ROOT); default `blip_laion_cc_sbu_558k.json`.
        image_root: folder the `image` paths are relative to (absolute or relative to ROOT); default `images`.
        count: rows to draw with the seed (None: all 558,128).
        hub: true (or a repo id) to fetch the annotation file from the Hub; images stay local.
    """
    info = source_info("lcs558k")
    part = llava_part(info, locate(info, data_root, path=annotation, hub_ref=hub), count=count, seed=seed)
    root = Path(image_root)
    return RecipeResult(
        parts=[part],
        image_root=root if root.is_absolute() else data_root / root,
        pretty_name="LCS-558K (Croc stage 1)",
        params={"annotation": annotation, "image_root": image_root, "count": count, "hub": hub},
    )
