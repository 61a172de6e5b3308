"""Writing other checkpoint layouts as Croc folders: load a source with `modeling_croc.loading.load_croc` (which reads
it with the readers of `modeling_croc.convert`), then save the model, its processor and, for a stage-0 folder built
from parts, the card recording the parts' licences. `python -m modeling_croc.convert` runs these.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .convert import stage0_card
from .convert.common import conversion_card
from .loading import load_croc
from .model_folders import NAME_MAX
from .provenance import write_without_local_paths

# The hidden folders next to OUT: the conversion being written, and the old OUT while `--overwrite` swaps in the new.
STAGING_SUFFIX, REPLACED_SUFFIX = ".convert-partial", ".convert-replaced"


def _save(model, processor, out_dir: str | Path) -> Path:
    """Save `model` and, when there is one, its processor into `out_dir`, the local folders they were read from
    written as their names (`write_without_local_paths`): a converted folder is one to share."""
    model.save_pretrained(out_dir)
    if processor is not None:
        processor.save_pretrained(out_dir)
    write_without_local_paths(out_dir)
    return Path(out_dir)


def _card(source: str | Path, out_dir: Path, name: str | None, command: str) -> None:
    """Write the card of a folder converted from `source` (`conversion_card`), titled `name` (OUT's, given by the
    command, which writes a staging folder) or `out_dir`'s own."""
    conversion_card(source, name or out_dir.resolve().name,
                    f"converted to the Croc layout (`python -m modeling_croc.convert {command}`)"
                    ).save(out_dir / "README.md")


def convert_llava_folder(source: str | Path, out_dir: str | Path, *, name: str | None = None, **croc_fields) -> Path:
    """Load the llava folder `source` as Croc (transformers' own llava renames apply) and save it to `out_dir`,
    with its processor re-saved as a `CrocProcessor` and a card (`name` its title, default `out_dir`'s name) with
    the licence and base models the source's card states."""
    out_dir = _save(*load_croc(source, croc_fields=croc_fields), out_dir)
    _card(source, out_dir, name, "from-llava")
    return out_dir


def convert_original_checkpoint(
    source: str | Path,
    out_dir: str | Path,
    vision_tower: str | Path | None = None,
    vocab_multiple: int = 64,
    *,
    name: str | None = None,
    command: str = "from-original",
    **croc_fields,
) -> Path:
    """Write `source` (a released fork layout: LLaVA-1.5 / Croc, or ViCToR's `llava_qwen`, which `load_croc` tells
    apart) as a Croc folder at `out_dir`; arguments as `read_original_checkpoint` / `read_victor_checkpoint`. Its
    card is titled `name` (default `out_dir`'s name) and names `command` (`from-original` or `from-victor`)."""
    out_dir = _save(*load_croc(source, vision_tower=vision_tower, vocab_multiple=vocab_multiple,
                               croc_fields=croc_fields), out_dir)
    _card(source, out_dir, name, command)
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


def _beside(out: Path, suffix: str) -> Path:
    """The hidden folder `.OUT<suffix>` next to `out` (same parent, so a rename moves it into place); a hash of the
    name where OUT's own name leaves no room for the suffix within `NAME_MAX` bytes."""
    name = f".{out.name}{suffix}"
    if len(os.fsencode(name)) > NAME_MAX:
        name = f".{hashlib.sha256(os.fsencode(out.name)).hexdigest()[:16]}{suffix}"
    return out.parent / name


def _discard(path: Path) -> None:
    """Remove one of the hidden folders `written_whole` makes (a link or file of that name too)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def clear_interrupted(out_dir: str | Path) -> None:
    """Clear what a conversion into `out_dir` killed midway left next to it: its staging folder, and an old OUT moved
    aside for `--overwrite`, which is put back when the new one had not taken its place (removed when it had). Run
    before OUT is checked, so that the old folder is refused or replaced as any other."""
    out = Path(out_dir).expanduser().resolve()
    staging, aside = _beside(out, STAGING_SUFFIX), _beside(out, REPLACED_SUFFIX)
    if aside.is_dir() and not aside.is_symlink() and not out.exists():
        os.rename(aside, out)
    _discard(staging)
    _discard(aside)


@contextlib.contextmanager
def written_whole(out_dir: str | Path) -> Iterator[Path]:
    """A hidden staging folder next to `out_dir` for a conversion to write, which becomes `out_dir` by a rename once
    the body completes: a conversion interrupted (Ctrl-C, kill, an error) never leaves a folder at OUT that loads as a
    model without its processor or card. A folder already at OUT (empty, or replaced under `--overwrite`) is moved
    aside only once the new one is complete, and removed after the rename. On an error or interrupt the staging
    folder is removed, and so are the parent folders made for it; what a kill left (a staging folder, or an old OUT
    moved aside with no OUT in its place) is cleared or put back first (`clear_interrupted`)."""
    out = Path(out_dir).expanduser().resolve()  # a link at OUT: the folder it points to is the one written
    staging, aside = _beside(out, STAGING_SUFFIX), _beside(out, REPLACED_SUFFIX)
    clear_interrupted(out)
    made = []  # the parent folders that do not exist yet, deepest first
    for parent in out.parents:
        if parent.exists():
            break
        made.append(parent)
    try:
        yield staging
        if out.exists():
            os.rename(out, aside)
            try:
                os.rename(staging, out)
            except BaseException:
                os.rename(aside, out)
                raise
            _discard(aside)
        else:
            os.rename(staging, out)
    except BaseException:
        _discard(staging)
        for parent in made:
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise


__all__ = ["build_from_parts", "convert_llava_folder", "convert_original_checkpoint", "clear_interrupted",
           "written_whole"]
