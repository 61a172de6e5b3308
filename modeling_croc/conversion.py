"""Writing other checkpoint layouts as Croc folders: load a source with `modeling_croc.loading.load_croc` (which reads
it with the readers of `modeling_croc.convert`), then save the model, its processor and, for a stage-0 folder built
from parts, the card recording the parts' licences. `python -m modeling_croc.convert` runs these.
"""

from __future__ import annotations

from pathlib import Path

from .convert import stage0_card
from .loading import load_croc
from .provenance import carry_card


def _save(model, processor, out_dir: str | Path) -> Path:
    """Save `model` and, when there is one, its processor into `out_dir`."""
    model.save_pretrained(out_dir)
    if processor is not None:
        processor.save_pretrained(out_dir)
    return Path(out_dir)


def convert_llava_folder(source: str | Path, out_dir: str | Path, **croc_fields) -> Path:
    """Load the llava folder `source` as Croc (transformers' own llava renames apply) and save it to `out_dir`,
    with its processor re-saved as a `CrocProcessor` and the licence and base models its card states."""
    out_dir = _save(*load_croc(source, croc_fields=croc_fields), out_dir)
    carry_card(source, out_dir, "converted to the Croc layout (`python -m modeling_croc.convert`)")
    return out_dir


def convert_original_checkpoint(
    source: str | Path,
    out_dir: str | Path,
    vision_tower: str | Path | None = None,
    vocab_multiple: int = 64,
    **croc_fields,
) -> Path:
    """Write `source` (a released fork layout: LLaVA-1.5 / Croc, or ViCToR's `llava_qwen`, which `load_croc` tells
    apart) as a Croc folder at `out_dir`; arguments as `read_original_checkpoint` / `read_victor_checkpoint`."""
    out_dir = _save(*load_croc(source, vision_tower=vision_tower, vocab_multiple=vocab_multiple,
                               croc_fields=croc_fields), out_dir)
    carry_card(source, out_dir, "converted to the Croc layout (`python -m modeling_croc.convert`)")
    return out_dir


def build_from_parts(
    vision_tower: str | Path,
    language_model: str | Path,
    out_dir: str | Path | None = None,
    vocab_multiple: int = 64,
    image_aspect_ratio: str = "square",
    base_models: list[str] | None = None,
    vision_feature_layer: int = -2,
    vision_feature_select_strategy: str | None = None,
    **croc_fields,
):
    """The Croc model and processor of `read_parts`, also saved to `out_dir` when given, with a card recording the
    parts' licences and `base_models` (the parts' Hub ids; needed when they are local folders)."""
    model, processor = load_croc(vision_tower=vision_tower, language_model=language_model,
                                 vocab_multiple=vocab_multiple, image_aspect_ratio=image_aspect_ratio,
                                 vision_feature_layer=vision_feature_layer,
                                 vision_feature_select_strategy=vision_feature_select_strategy,
                                 croc_fields=croc_fields)
    if out_dir is not None:
        _save(model, processor, out_dir)
        stage0_card(vision_tower, language_model, base_models).save(Path(out_dir) / "README.md")
    return model, processor


__all__ = ["build_from_parts", "convert_llava_folder", "convert_original_checkpoint"]
