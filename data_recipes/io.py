"""Reading upstream annotation files (JSON array, JSON lines, parquet, or a folder of them).

Everything is read into a list of plain values: the largest upstream file (ShareGPT4V, ~1.25M rows) fits comfortably
in memory, and sampling needs random access anyway. A file that cannot be read as rows raises `DataError` naming the
file and the line (and column) of the problem; a single record that is not an object is *not* a file error: it is
returned as it is and rejected as a row (`data_recipes.schema.normalise_row`), so one bad row costs one row.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_SUFFIXES = (".json", ".jsonl", ".parquet")
# Suffixes of compressed files, named as such where a folder holds one it does not read (`part1.json.gz`).
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip", ".tar", ".tgz", ".7z")


def readable_suffix(path: str | Path) -> str:
    """`path`'s suffix, lower-cased: `part2.JSON` is JSON as `part2.json` is (files copied from Windows tools or
    cameras carry upper-case suffixes, which a case-sensitive match skipped without a word)."""
    return Path(path).suffix.lower()


def files_not_read(folder: str | Path) -> list[Path]:
    """The files under `folder` that `read_records` does not read (not `.json`/`.jsonl`/`.parquet`), sorted; hidden
    files and those under hidden folders are left out: `hf download --local-dir` writes its `.cache/` metadata and
    `.gitattributes` beside every download, which are never rows."""
    folder = Path(folder)
    return sorted(file for file in _visible_files(folder) if readable_suffix(file) not in _SUFFIXES)


def _visible_files(folder: Path) -> list[Path]:
    """The files under `folder` that are neither hidden nor under a hidden folder (relative to `folder`, which may
    itself sit under one): `.ipynb_checkpoints/x-checkpoint.json` is a copy of the rows (read, it doubled them), a
    macOS `._x.parquet` is no parquet at all (it stopped the build), and the trainer skips both."""
    return [file for file in folder.rglob("*")
            if file.is_file() and not any(part.startswith(".") for part in file.relative_to(folder).parts)]


def describe_files_not_read(folder: str | Path, files: list[Path]) -> str:
    """One line naming `files` (at most 10), relative to `folder`, a compressed one said to be so."""
    def name(file: Path) -> str:
        relative = str(file.relative_to(folder))
        return relative + (" (compressed: unpack it to read it)" if readable_suffix(file) in _COMPRESSED else "")

    shown = ", ".join(name(file) for file in files[:10]) + (f", and {len(files) - 10} more" if len(files) > 10 else "")
    return f"{folder}: {len(files)} file(s) not read (not {'/'.join(_SUFFIXES)}): {shown}"


class DataError(ValueError):
    """Data that cannot be used as a whole: a file that does not read as rows, or (subclasses, callers) too many
    rejected rows. The message is one line and names the file (and line) or the rejects file."""


def _line_and_column(raw: bytes, offset: int) -> tuple[int, int]:
    line_start = raw.rfind(b"\n", 0, offset) + 1
    return raw.count(b"\n", 0, offset) + 1, offset - line_start + 1


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line, column = _line_and_column(raw, error.start)
        raise DataError(f"{path}:{line}:{column}: not UTF-8 text (byte 0x{raw[error.start]:02x}); LLaVA annotation "
                        "files are UTF-8 JSON") from None
    return text.removeprefix("\ufeff")  # a byte-order mark some editors write


def _read_json_or_jsonl(path: Path) -> list[Any]:
    text = _decode(path)
    stripped = text.lstrip()
    if not stripped:
        return []
    # Suffixes lie: webqa's `train.json` is JSON lines, some `.jsonl` dumps are one array. So: one JSON document
    # for the whole file first, JSON lines otherwise.
    try:
        document = _parse(path, text)
    except json.JSONDecodeError as error:
        if stripped.startswith("["):  # meant as one array: report where it breaks (truncated, stray comma...)
            raise DataError(f"{path}:{error.lineno}:{error.colno}: JSON does not parse: {error.msg}") from None
        return _read_json_lines(path, text)
    if isinstance(document, list):
        return document
    if isinstance(document, dict) and readable_suffix(path) == ".jsonl":
        return [document]  # JSON lines holding a single row
    kind = "an object" if isinstance(document, dict) else f"a JSON {type(document).__name__}"
    raise DataError(f"{path}:1: the top level is {kind}, not a list of row objects; wrap the rows in [...] or "
                    "write one object per line (.jsonl)")


def _parse(path: Path, text: str, line: int | None = None) -> Any:
    """`json.loads(text)`; the two limits of Python's parser that valid JSON can pass (nesting deeper than the
    recursion limit, an integer longer than `sys.get_int_max_str_digits()`) become `DataError`."""
    where = f"{path}:{line}" if line else str(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply to read (past Python's recursion limit); LLaVA rows are "
                        "objects holding a list of turns") from None
    except ValueError as error:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise DataError(f"{where}: JSON value cannot be read: {error}") from None


def _read_json_lines(path: Path, text: str) -> list[Any]:
    records = []
    # Lines end at "\n" only: `str.splitlines` also breaks at U+2028, U+2029, U+0085 and other characters that JSON
    # strings may hold raw (and `write_jsonl` writes raw), which would cut valid rows in two.
    for line_no, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            records.append(_parse(path, line, line_no))
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{line_no}:{error.colno}: neither a JSON array nor valid JSON lines "
                            f"({error.msg})") from None
    return records


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{path}: not a readable parquet file ({error})") from None


def read_records(path: str | Path) -> list[Any]:
    """Read every record of a `.json`/`.jsonl`/`.parquet` file, or of all such files under a folder (suffixes in
    any case; hidden files and those under hidden folders are skipped; the folder's other files are named in a
    warning, `files_not_read`).

    Folder contents are read in sorted path order so that row indices (and therefore seeded samples)
    do not depend on the file system's listing order. Raises `DataError` (file, line, column) for a file that does
    not parse, is not UTF-8, or whose top level is not a list of rows.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in _visible_files(path) if readable_suffix(p) in _SUFFIXES)
        unread = files_not_read(path)
        if not files:
            found = f" ({describe_files_not_read(path, unread)})" if unread else ""
            raise FileNotFoundError(f"{path}: folder holds no {'/'.join(_SUFFIXES)} files{found}")
        if unread:  # said, not skipped silently: a `part3.json.gz` left packed is rows the user meant to train on
            logger.warning("%s", describe_files_not_read(path, unread))
        records: list[Any] = []
        for file in files:
            records.extend(read_records(file))
        return records
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: neither a file nor a folder (a device, pipe or socket); name a .json, .jsonl or "
                        ".parquet file or a folder of them")
    if readable_suffix(path) == ".parquet":
        return _read_parquet(path)
    return _read_json_or_jsonl(path)
