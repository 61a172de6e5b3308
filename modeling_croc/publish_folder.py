"""Publishing to the Hugging Face Hub without deleting anything: the publish-folder rule the trainer
(`--hub_dry_run DIR`, `--push_to_hub`) and the data recipes (`--hub-folder DIR`, `--push-to-hub`) share; what may
leave the machine is `upload_scan.py`'s rule.

The rule (:func:`check_publish_folder`, :func:`prepare_publish_folder`). A folder the user names
for a publish is written only if it does not exist, is empty, or was written by an earlier publish of this project:
such a folder holds :data:`PUBLISH_MARKER`, which lists the files that publish wrote with their size and SHA-256,
and only those files are replaced (a file the user added since, or one of them the user edited since, is a refusal,
not a deletion; a marker of an earlier version of this project, names only, vouches for its names as they are, but
its `README.md`, which a user may have written into, is kept as `.README.earlier.md` first, said in one line). The
folder may not be, contain or lie inside the run's own folders (`output_dir`, a build's `--out` or data root), nor
hold a symbolic link at any depth (a link is never followed out of the folder, to delete or to write). Anything else
is refused with one line naming the folder and what it holds, and nothing is deleted. The marker is hidden and never
part of an upload set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from .model_folders import overlong_name

logger = logging.getLogger(__name__)

# Written into a publish folder when a publish creates or replaces it; lists the files that publish wrote.
PUBLISH_MARKER = ".croc-publish.json"
# Inside a publish folder while `fill_publish_folder` copies the files in (on the folder's own disk), before each is
# renamed into place; removed when the fill ends, whichever way, and by the next publish if a kill left it.
FILLING_DIR = ".croc-publish-filling"
_MARKER_KIND = "croc publish folder"
# What huggingface_hub keeps inside a folder it uploaded (`hf upload-large-folder DIR`) or downloaded into
# (`--local-dir`): its own bookkeeping, never uploaded, not the user's files; a dry run's folder uploaded by hand
# holds it.
HUB_BOOKKEEPING = (".cache", "huggingface")
_HASH_BLOCK_BYTES = 8 * 1024 * 1024  # a publish folder holds weights of many GB: hashed a block at a time
_RACY_NS = 2_000_000_000  # the coarsest modification-time resolution in use (FAT's 2 s)
CARD_NAME = "README.md"
# Where a card no record vouches for is kept before a publish or a run replaces it (`keep_earlier_card`): hidden, and
# never a publish's to replace or to refuse.
EARLIER_CARD_NAME = ".README.earlier.md"
_EARLIER_CARDS = re.compile(r"\.README\.earlier(?:-[0-9]+)?\.md")


class PublishError(ValueError):
    """A publish refused before anything was written, deleted or uploaded; the message is one line."""


class PublishFolderError(PublishError):
    """The folder named for a publish may not be written (see the module docstring)."""


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def _describe_entries(folder: Path, names: Sequence[str], limit: int = 5) -> str:
    shown = [name + ("/" if (folder / name).is_dir() else "") for name in names[:limit]]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(shown) + more


def _recorded_files(folder: Path) -> list[str] | None:
    """The files an earlier publish wrote into `folder`, from its marker; None when the folder holds no valid marker
    (one that names a file outside the folder is not ours)."""
    try:
        record = json.loads((folder / PUBLISH_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = record.get("files") if isinstance(record, dict) and record.get("kind") == _MARKER_KIND else None
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        return None
    for name in files:
        parts = PurePosixPath(name).parts
        if not parts or PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name:
            return None
    return files


def _recorded_digests(folder: Path) -> dict[str, tuple[int, str, int | None]]:
    """(size, SHA-256, modification time in ns or None) of each file an earlier publish wrote into `folder`, from its
    marker's `written`; empty for a marker of an earlier version (names only) and for an entry that does not read as
    one (nothing to compare)."""
    try:
        marker = json.loads((folder / PUBLISH_MARKER).read_text(encoding="utf-8"))
        written, recorded_ns = marker.get("written"), marker.get("recorded_ns")
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(written, dict):
        return {}

    def settled(entry: dict) -> int | None:
        # A time within the clock's and the file system's resolution of the record may be shared by an edit made
        # right after it (the "racy" case of git's index): such a file is always hashed.
        mtime_ns = entry.get("mtime_ns")
        return (mtime_ns if isinstance(mtime_ns, int) and isinstance(recorded_ns, int)
                and mtime_ns < recorded_ns - _RACY_NS else None)

    return {name: (entry["size"], entry["sha256"], settled(entry))
            for name, entry in written.items()
            if isinstance(entry, dict) and isinstance(entry.get("size"), int)
            and isinstance(entry.get("sha256"), str)}


def file_digest(path: str | Path) -> tuple[int, str]:
    """(size, SHA-256 hex digest) of the file at `path`, read a block at a time."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK_BYTES):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def changed_since(folder: Path, recorded: dict[str, tuple[int, str, int | None]]) -> list[str]:
    """The recorded files of `folder` whose bytes are no longer those the publish wrote (a file gone is not one:
    there is nothing left to lose). The size and the modification time are compared first: a file hashed only when
    its time changed at the same size, so the check before a run and the one at its end read no weights file of
    many GB that nobody touched."""
    changed = []
    for name, (size, digest, mtime_ns) in sorted(recorded.items()):
        path = folder / name
        if not path.is_file():
            continue
        stat = path.stat()
        if stat.st_size != size:
            changed.append(name)
        elif stat.st_mtime_ns != mtime_ns and file_digest(path) != (size, digest):
            changed.append(name)
    return changed


def _files_under(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if not path.is_dir())


def _links_under(folder: Path) -> list[str]:
    """Every symbolic link under `folder` (files and folders, at any depth, broken ones too), relative to it; a link
    to a folder is listed, not entered."""
    found = []
    for parent, folders, files in os.walk(folder):
        found += [Path(parent, name).relative_to(folder).as_posix() for name in folders + files
                  if os.path.islink(os.path.join(parent, name))]
    return sorted(found)


def _through_link(folder: Path, name: str) -> bool:
    """Whether the relative path `name` under `folder` is, or passes through, a symbolic link."""
    path = folder
    for part in PurePosixPath(name).parts:
        path = path / part
        if path.is_symlink():
            return True
    return False


def check_publish_folder(folder: str | Path, *, option: str, keep_clear_of: Mapping[str, str | Path | None]) -> None:
    """Raise :class:`PublishFolderError` unless a publish may write `folder` (see the module docstring).

    Args:
        option: how the user named the folder, for the message (`--hub_dry_run`, `--hub-folder`).
        keep_clear_of: the run's own folders by the name the message gives them (`{"output_dir": ...}`); `folder`
            may not be one of them, contain one or lie inside one. None values are skipped.
    """
    problem = overlong_name(folder)
    if problem is not None:  # every look at such a path (`Path.exists()` among them) raises "File name too long"
        raise PublishFolderError(f"{option}: {problem} (nothing was written or deleted)")
    try:
        _check_folder(folder, option, keep_clear_of)
    except OSError as error:  # a folder this user may not look into, a path the system refuses
        raise PublishFolderError(f"{option} {folder} cannot be used: {error.strerror or error}; choose a folder you "
                                 "can write (nothing was written or deleted)") from None


def _check_folder(folder: str | Path, option: str, keep_clear_of: Mapping[str, str | Path | None]) -> None:
    real = _real(folder)
    for name, other in keep_clear_of.items():
        if other is None:
            continue
        other_real = _real(other)
        if real == other_real:
            relation = "is"
        elif other_real in real.parents:
            relation = "is inside"
        elif real in other_real.parents:
            relation = "contains"
        else:
            continue
        raise PublishFolderError(f"{option} {folder} {relation} the {name} {other}: a publish folder is replaced as a "
                                 "whole, so it must be a separate folder; choose one outside it (nothing was written "
                                 "or deleted)")
    if real.exists() and not real.is_dir():
        raise PublishFolderError(f"{option} {folder} is a file, not a folder: choose a new or empty folder (nothing "
                                 "was written or deleted)")
    if not real.is_dir():
        _check_creatable(real, folder, option)
        return
    entries = sorted(os.listdir(real))
    if not entries:
        return
    recorded = _recorded_files(real)
    if recorded is None:
        raise PublishFolderError(f"{option} {folder} is not empty and no earlier publish wrote it (it holds "
                                 f"{_describe_entries(real, entries)}): choose a new or empty folder (nothing was "
                                 "written or deleted)")
    links = _links_under(real)
    if links:
        # Refused, not left alone as a file the publish did not write: a publish writes its files at the paths it
        # recorded, so a link at `data/` would take the new shards (and the removal of the old ones) into the folder
        # it points to, the user's own.
        raise PublishFolderError(f"{option} {folder} holds symbolic link(s) ({', '.join(links[:5])}"
                                 f"{f' and {len(links) - 5} more' if len(links) > 5 else ''}): a publish never "
                                 "follows a link out of its folder; remove the link(s) or choose another folder "
                                 "(nothing was written or deleted)")
    ours = {PUBLISH_MARKER, *recorded}
    foreign = [name for name in _files_under(real) if name not in ours and PurePosixPath(name).parts[0] != FILLING_DIR
               and PurePosixPath(name).parts[:2] != HUB_BOOKKEEPING and not _EARLIER_CARDS.fullmatch(name)]
    if foreign:
        raise PublishFolderError(f"{option} {folder} was written by an earlier publish but now also holds "
                                 f"{_describe_entries(real, foreign)}, which that publish did not write: move them "
                                 "or choose another folder (nothing was written or deleted)")
    # A file the publish wrote and the user edited since (a hand-written evaluation section in README.md) is the
    # user's now: replacing it would lose the edit without a word.
    edited = changed_since(real, {name: entry for name, entry in _recorded_digests(real).items()
                                   if name in recorded})
    if edited:
        raise PublishFolderError(f"{option} {folder} was written by an earlier publish but "
                                 f"{_describe_entries(real, edited)} changed since, which this publish would "
                                 "replace: move them out of the folder to keep them, or choose another folder "
                                 "(nothing was written or deleted)")


def _check_creatable(real: Path, folder: str | Path, option: str) -> None:
    """Raise :class:`PublishFolderError` unless the missing folder `real` can be created: its nearest existing
    ancestor is a folder this process may write (found now, not after hours of training)."""
    ancestor = real.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        reason = f"{ancestor} is a file"
    elif not os.access(ancestor, os.W_OK | os.X_OK):
        reason = f"{ancestor} is not writable by this user"
    else:
        return
    raise PublishFolderError(f"{option} {folder} cannot be created: {reason}; choose a folder you can write (nothing "
                             "was written or deleted)")


def prepare_publish_folder(folder: str | Path, files: Sequence[str], *, option: str,
                           keep_clear_of: Mapping[str, str | Path | None]) -> Path:
    """Check `folder` again (it may have been created since the run started), remove the files an earlier publish
    wrote there, and mark it as written by this publish, listing `files` (relative paths, written next by the
    caller: a publish interrupted halfway leaves a folder the next one may still replace). The caller records what
    it wrote once the files are in place (`fill_publish_folder` does, else `record_publish_files`). Returns the
    folder."""
    check_publish_folder(folder, option=option, keep_clear_of=keep_clear_of)
    folder = Path(folder).expanduser()
    previous = (_recorded_files(folder) or []) if folder.is_dir() else []
    if CARD_NAME in previous and CARD_NAME not in _recorded_digests(folder) and (folder / CARD_NAME).is_file() \
            and not (folder / CARD_NAME).is_symlink():
        # A marker of an earlier version (names only) cannot tell the card it wrote from one the user wrote into.
        logger.warning("%s was written by an earlier publish whose marker keeps no digest of it, so whether it was "
                       "edited since cannot be told: it is replaced, and its text as it is now is kept in %s",
                       folder / CARD_NAME, keep_earlier_card(folder))
    for name in previous:
        if _through_link(folder, name):  # one made since the check: what it points to is not this publish's
            continue
        (folder / name).unlink(missing_ok=True)
        for parent in (folder / name).parents:  # the earlier publish's now-empty subfolders
            if parent == folder or parent.is_symlink() or not parent.is_dir() or any(parent.iterdir()):
                break
            parent.rmdir()
    folder.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder / FILLING_DIR, ignore_errors=True)  # a fill killed outright
    record = {"kind": _MARKER_KIND, "files": sorted(files)}
    (folder / PUBLISH_MARKER).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return folder


def keep_earlier_card(folder: str | Path) -> Path:
    """Copy `folder`'s README.md to `EARLIER_CARD_NAME`, or to `.README.earlier-2.md`, ... when that holds other
    bytes; the same bytes kept already are not copied again (a run that stopped before its first save claims the card
    again at its next start). Returns where the text is."""
    folder = Path(folder)
    card = (folder / CARD_NAME).read_bytes()
    name, count = EARLIER_CARD_NAME, 2
    while (folder / name).exists() or (folder / name).is_symlink():
        if not (folder / name).is_symlink() and (folder / name).is_file() and (folder / name).read_bytes() == card:
            return folder / name
        name, count = f".README.earlier-{count}.md", count + 1
    temporary = folder / f"{name}.{os.getpid()}.tmp"
    try:
        temporary.write_bytes(card)
        os.replace(temporary, folder / name)
    finally:
        temporary.unlink(missing_ok=True)
    return folder / name


def _write_record(folder: Path, files: Sequence[str], written: Mapping[str, tuple[int, str]]) -> None:
    """Replace `folder`'s marker by one listing `files` and the size, SHA-256 and modification time of those in
    `written` (in place in `folder` by now), through a file in `FILLING_DIR`: a marker cut short by a full disk would
    make the folder a stranger's to the next publish."""
    record = {"kind": _MARKER_KIND, "files": sorted(files), "recorded_ns": time.time_ns(),
              "written": {name: {"size": size, "sha256": digest, "mtime_ns": (folder / name).stat().st_mtime_ns}
                          for name, (size, digest) in sorted(written.items())}}
    staged = folder / FILLING_DIR / PUBLISH_MARKER
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(staged, folder / PUBLISH_MARKER)


def record_publish_files(folder: str | Path, files: Sequence[str]) -> None:
    """Record in the marker of `folder` (made ready by `prepare_publish_folder`) the size and SHA-256 of `files`,
    just written there by the caller, so that the next publish knows an edit of one of them for the user's."""
    folder = Path(folder)
    try:
        _write_record(folder, _recorded_files(folder) or files, {name: file_digest(folder / name) for name in files})
    finally:
        shutil.rmtree(folder / FILLING_DIR, ignore_errors=True)


def copy_file(source: str | Path, destination: str | Path, *, link: bool = False) -> None:
    """Copy `source` to `destination` (parents created); with `link`, hard-link it where the file system allows (a
    staging folder next to multi-GB weights), copying otherwise."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(source, destination)
            return
        except OSError:  # another file system, or links not supported: copy
            pass
    shutil.copy2(source, destination)


def fill_publish_folder(source: str | Path, files: Sequence[str], folder: str | Path, *, move: bool = False) -> None:
    """Put `files` (relative paths under `source`, scanned) into `folder`, made ready by `prepare_publish_folder`:
    copied (`move`: moved) into `FILLING_DIR` inside it first, so that a full disk, an error or an interrupt stops
    there, then renamed into place, each a rename on the folder's own disk. Whatever stops the fill, the files it
    placed are removed again: the folder never holds part of the set, a truncated weights file beside a marker
    listing them all, ready to upload by hand. Once all are placed, the marker records their sizes and SHA-256
    (hashed in `FILLING_DIR`, after the copy)."""
    source, folder = Path(source), Path(folder)
    filling = folder / FILLING_DIR
    placed: list[Path] = []
    try:
        for name in files:
            if move:
                (filling / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(source / name, filling / name)
            else:
                copy_file(source / name, filling / name)
        written = {name: file_digest(filling / name) for name in files}
        for name in files:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(filling / name, folder / name)
            placed.append(folder / name)
        _write_record(folder, _recorded_files(folder) or files, written)
    except BaseException:
        for path in placed:
            path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(filling, ignore_errors=True)


def relative_text(text: str, folders: Mapping[str | Path, str]) -> str:
    """`text` with every occurrence of each local folder (as given, absolute, and resolved) replaced by its public
    name (`{"/scratch/me/data": "data"}`: `/scratch/me/data/x.json` -> `data/x.json`). Deeper folders are replaced
    first; a folder is matched only as whole path components."""
    variants: dict[str, str] = {}
    for folder, public in folders.items():
        if folder is None:
            continue
        expanded = os.path.expanduser(str(folder))
        for variant in (os.path.abspath(expanded), os.path.realpath(expanded)):
            if len(PurePosixPath(variant).parts) > 1:
                variants.setdefault(variant, public)
    for variant in sorted(variants, key=len, reverse=True):
        public = variants[variant]
        text = re.sub(r"(?<![\w.~-])" + re.escape(variant) + r"(?![\w.~-])", lambda _, public=public: public, text)
    return text


__all__ = [
    "EARLIER_CARD_NAME",
    "PUBLISH_MARKER",
    "PublishError",
    "PublishFolderError",
    "changed_since",
    "check_publish_folder",
    "copy_file",
    "file_digest",
    "fill_publish_folder",
    "keep_earlier_card",
    "prepare_publish_folder",
    "record_publish_files",
    "relative_text",
]
