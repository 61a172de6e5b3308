"""The run's model card as a file of its output folder: written as `README.md` only while that file is absent or
still the card this project last wrote there when the run starts (`claim_card`), else beside it as `README.croc.md`.

The card is a file the user may well edit (a section of their own evaluation, a usage note): rewriting it at every
save of a continued run deleted such an edit unsaid. What the run last wrote is recorded (size and SHA-256, the
publish marker's digest) in a hidden file, which no upload takes (`.*`) and no resume reads. What the card says is
`trainer.model_card`'s.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from huggingface_hub import ModelCard

from modeling_croc.publish_folder import CARD_NAME, changed_since, file_digest, keep_earlier_card

logger = logging.getLogger(__name__)

SIDE_CARD_NAME = "README.croc.md"
CARD_RECORD = ".croc-card.json"
_CARD_KIND = "croc run card"


def _recorded_cards(folder: Path) -> dict[str, list[tuple[int, str]]]:
    """{file name: the (size, SHA-256) this project wrote it with} from `folder`'s `CARD_RECORD`; empty where there is
    none or it does not read as one (nothing vouches for a card then)."""
    try:
        record = json.loads((folder / CARD_RECORD).read_text(encoding="utf-8"))
        written = record["written"] if record.get("kind") == _CARD_KIND else {}
        return {name: [(int(size), str(digest)) for size, digest in entries] for name, entries in written.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def record_card(folder: Path, name: str, digests: list[tuple[int, str]]) -> None:
    """Record `digests` as those `name` may have as this project wrote it, whole or not at all (a temporary file
    renamed over the record: a cut record would make the run's own card look edited)."""
    written = _recorded_cards(folder)
    written[name] = [list(entry) for entry in digests]
    temporary = folder / f"{CARD_RECORD}.{os.getpid()}.tmp"
    try:
        temporary.write_text(json.dumps({"kind": _CARD_KIND, "written": written}, indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, folder / CARD_RECORD)
    finally:
        temporary.unlink(missing_ok=True)


def card_as_written(folder: str | Path, name: str = CARD_NAME) -> bool:
    """Whether `folder`'s card file `name` is a regular file that this project wrote, as it wrote it: the publish
    folder's test of an edit (`modeling_croc.publish_folder`: size, then SHA-256) against the recorded digest. A
    README.md without a record (written before cards were recorded, or by the user) is not vouched for."""
    folder = Path(folder)
    path = folder / name
    if path.is_symlink() or not path.is_file():
        return False
    return any(not changed_since(folder, {name: (size, digest, None)})
               for size, digest in _recorded_cards(folder).get(name, []))


def _unrecorded_run_card(folder: Path) -> bool:
    """Whether `folder`'s README.md, with no record of it, is a Croc run's card (its `croc_stage`, its `croc` tag):
    one an earlier version of this project wrote, which kept no record (a run resumed across the upgrade), not a file
    of the user's."""
    path = folder / CARD_NAME
    if path.is_symlink() or not path.is_file() or CARD_NAME in _recorded_cards(folder):
        return False
    try:
        data = ModelCard.load(path).data
    except Exception:  # noqa: BLE001 (any card that does not parse is no run's)
        return False
    return data.get("croc_stage") is not None and "croc" in (data.get("tags") or [])


# The output folders whose README.md this process's run found absent or its own when it started (`claim_card`): the
# run writes its card there at its save whatever a library wrote in between (PEFT's `save_pretrained` writes its
# template README.md into the folder first).
_CLAIMED: set[str] = set()


def claim_card(folder: str | Path) -> bool:
    """At the start of a run: whether the run may write its card as `folder`'s README.md (`edited_card` finds none
    of the user's there); if so, remembered for this process, so that its save does. A Croc card an earlier version
    wrote (no record says whether it was edited since) is kept as `.README.earlier.md` first (`keep_earlier_card`), said in one line."""
    folder = Path(folder)
    if edited_card(folder) is not None:
        return False
    if _unrecorded_run_card(folder):
        kept = keep_earlier_card(folder)
        logger.warning("%s is a model card an earlier version of this project wrote, which kept no record of it, so "
                       "whether it was edited since cannot be told: this run's card replaces it, and its "
                       "text as it is now is kept in %s (merge a section of yours by hand)", folder / CARD_NAME, kept)
    _CLAIMED.add(str(folder.resolve()))
    return True


def edited_card(folder: str | Path) -> Path | None:
    """`folder`'s README.md when the run may not rewrite it (there, and not the card this project last wrote there:
    edited since, a link, or written by no run); None when the run's card can go there."""
    folder = Path(folder)
    path = folder / CARD_NAME
    if (not (path.exists() or path.is_symlink()) or str(folder.resolve()) in _CLAIMED or card_as_written(folder)
            or _unrecorded_run_card(folder)):
        return None
    return path


def card_target(folder: str | Path) -> Path:
    """Where the run's card goes in `folder`: README.md unless `edited_card`, else `SIDE_CARD_NAME` (then
    `README.croc-2.md`, ... while the one before is edited too)."""
    folder = Path(folder)
    if edited_card(folder) is None:
        return folder / CARD_NAME
    name, count = SIDE_CARD_NAME, 2
    while ((folder / name).exists() or (folder / name).is_symlink()) and not card_as_written(folder, name):
        name, count = f"README.croc-{count}.md", count + 1
    return folder / name


def edited_card_message(folder: str | Path) -> str | None:
    """The line a run says, at its start and when it writes its card, when `folder`'s README.md is the user's; None
    otherwise."""
    edited = edited_card(folder)
    if edited is None:
        return None
    return (f"{edited} was changed since this run wrote it (or not written by it): it is kept as it is, and the "
            f"run's model card is written to {card_target(folder).name} beside it (a publish uploads README.md as "
            "it is: merge them by hand)")


def save_run_card(card: ModelCard, folder: str | Path) -> Path:
    """Write `card` as `folder`'s README.md, or beside a README.md the user edited (`card_target`), and record what
    was written; returns the path. The card is written to a hidden temporary file and renamed into place (a link
    at the name is replaced, never followed), the record naming both the old and the new bytes until the rename
    is done, so a kill at any moment leaves a card the next run still knows as its own."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = card_target(folder)
    if target.name != CARD_NAME:
        logger.warning("%s", edited_card_message(folder))
    temporary = folder / f".{target.name}.{os.getpid()}.tmp"
    try:
        with temporary.open("w", newline="", encoding="utf-8") as file:
            file.write(str(card))
        new = file_digest(temporary)
        before = [file_digest(target)] if card_as_written(folder, target.name) else []
        record_card(folder, target.name, [new, *before])
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    record_card(folder, target.name, [new])
    return target


def card_title(text: str) -> str | None:
    """The name a card's heading (`# NAME`) gives its model, or None where it has none."""
    return next((line[2:].strip() for line in text.split("\n") if line.startswith("# ")), None) or None


def run_card_path(folder: Path) -> Path:
    """The run's card in `folder`: beside a README.md the user edited (`card_target`), else README.md."""
    target = card_target(folder)
    return target if target.is_file() else folder / CARD_NAME


class RunCard(ModelCard):
    """The card `build_model_card` makes: saved as a folder's README.md (`CrocTrainer.create_model_card`), it goes
    through `save_run_card`, so that no caller can replace a README.md the user edited; any other path is written
    as ModelCard writes it."""

    def save(self, filepath: str | Path) -> None:
        if Path(filepath).name == CARD_NAME:
            save_run_card(self, Path(filepath).parent)
        else:
            super().save(filepath)
