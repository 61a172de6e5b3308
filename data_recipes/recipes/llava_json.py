"""Any LLaVA-format annotation file + image root."""

from __future__ import annotations

from pathlib import Path

from ..catalog import SourceInfo
from ..parts import RecipeResult, llava_part, locate
from ..registry import register_recipe


@register_recipe("llava_json")
def llava_json(
    data_root: Path,
    *,
    seed: int,
    annotation: str | None = None,
    image_root: str = ".",
    source: str = "llava_json",
    count: int | None = None,
    licence: str = "unknown",
    hub: str | None = None,
) -> RecipeResult:
    """Generic: any LLaVA-format JSON/JSONL file whose `image` paths are relative to one image root.

    Expected layout::

        ROOT/<annotation>.json     rows {"id", "image"?, "conversations": [{"from", "value"}, ...]}
        ROOT/<image_root>/<image paths of the rows>

    Parameters (`--set key=value`):
        annotation: the annotation file (required; absolute or relative to ROOT; with `hub`, the file in the repo).
        image_root: folder the image paths are relative to (absolute or relative to ROOT); default ROOT.
        source: value of the `source` column and name in the card/summary.
        count: rows to draw with the seed (None: all).
        licence: Hub licence id recorded in the card (e.g. cc-by-4.0).
        hub: a Hub dataset repo id to download `annotation` from.
    """
    if not annotation:
        raise ValueError("llava_json needs an annotation file: --set annotation=path/to/file.json")
    info = SourceInfo(source, hub, annotation, annotation, licence, licence)
    part = llava_part(info, locate(info, data_root, hub_ref=hub), count=count, seed=seed)
    root = Path(image_root)
    return RecipeResult(
        parts=[part],
        image_root=root if root.is_absolute() else data_root / root,
        pretty_name=f"{source} (LLaVA format)",
        params={"annotation": annotation, "image_root": image_root, "source": source, "count": count,
                "licence": licence, "hub": hub},
    )
