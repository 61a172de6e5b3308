"""Reading upstream annotation files (JSON array, JSON lines, parquet, or a folder of them).

Everything is read into a list of plain dicts: the largest upstream file (ShareGPT4V, ~1.25M rows)
fits comfortably in memory, and sampling needs random access anyway.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_SUFFIXES = (".json", ".jsonl", ".parquet")


def _read_json_or_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open("r", encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    # Suffixes lie: webqa's `train.json` is JSON lines, some `.jsonl` dumps are one array.
    if head.startswith("["):
        with path.open("r", encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, list):  # pragma: no cover - defensive, '[' always parses to a list
            raise ValueError(f"{path}: expected a JSON array of rows")
        return data
    records = []
    with path.open("r", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not a JSON array nor valid JSON lines ({err})") from err
    return records


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Read every record of a `.json`/`.jsonl`/`.parquet` file, or of all such files under a folder.

    Folder contents are read in sorted path order so that row indices (and therefore seeded samples)
    do not depend on the file system's listing order.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{path}: folder holds no {'/'.join(_SUFFIXES)} files")
        records: list[dict[str, Any]] = []
        for file in files:
            records.extend(read_records(file))
        return records
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".parquet":
        return _read_parquet(path)
    return _read_json_or_jsonl(path)
