"""The one normalised row schema shared by every recipe, and the LLaVA-format reader.

Every recipe produces rows of exactly this shape::

    {"id": str, "image": str | None, "conversations": [{"from": str, "value": str}, ...], "source": str}

The upstream LLaVA files mix integer and string ids and leave `image` out of text-only rows, so a
plain `datasets.load_dataset("json", ...)` fails with an Arrow type error (or silently infers a
schema from the first rows). Here every row is normalised in Python first, then the Arrow table is
built once with the explicit :data:`ROW_FEATURES`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
from datasets import Dataset, DatasetInfo, Features, List, Value

from .io import read_records

ROW_FEATURES = Features(
    {
        "id": Value("string"),
        # Relative to the build's image root; None for text-only rows.
        "image": Value("string"),
        "conversations": List({"from": Value("string"), "value": Value("string")}),
        # Which upstream set the row came from (e.g. "sharegpt4v", "alpaca").
        "source": Value("string"),
    }
)


def _as_text(value: Any) -> str:
    """Turn a turn value into a string; None becomes "" so validation can flag it as empty."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _normalise_image(value: Any, row_id: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return _normalise_image(value[0], row_id)
        if not value:
            return None
        # The schema holds one image per row (LLaVA-1.5 / Croc); dropping all but one would lose data silently.
        raise ValueError(f"row {row_id!r} has {len(value)} images; the Croc row schema holds one image per row")
    return str(value)


def normalise_row(record: Mapping[str, Any], *, source: str, index: int) -> dict[str, Any]:
    """Normalise one LLaVA-format record to :data:`ROW_FEATURES`.

    Ids are cast to str (a missing id becomes ``f"{source}-{index}"``), a missing or empty `image`
    becomes None, turn values are cast to str. Unknown keys (e.g. `question_type`, `width`) are dropped.
    Structural problems (empty turns, wrong roles) are kept as they are: validation reports them.
    """
    raw_id = record.get("id")
    row_id = f"{source}-{index}" if raw_id is None or raw_id == "" else str(raw_id)
    conversations = record.get("conversations") or []
    return {
        "id": row_id,
        "image": _normalise_image(record.get("image"), row_id),
        "conversations": [
            {"from": _as_text(turn.get("from")), "value": _as_text(turn.get("value"))}
            if isinstance(turn, Mapping)
            else {"from": "", "value": _as_text(turn)}
            for turn in conversations
        ],
        "source": source,
    }


def rows_to_dataset(rows: Iterable[Mapping[str, Any]]) -> Dataset:
    """Build an in-memory Arrow dataset with :data:`ROW_FEATURES` from already normalised rows.

    `pa.Table.from_pylist` with the explicit schema is ~6x faster than `Dataset.from_list`, which
    re-encodes every example; the rows are already in their final form so encoding is a no-op.
    """
    rows = rows if isinstance(rows, list) else list(rows)
    table = pa.Table.from_pylist(rows, schema=ROW_FEATURES.arrow_schema)
    return Dataset(table, info=DatasetInfo(features=ROW_FEATURES.copy()))


def empty_dataset() -> Dataset:
    """A zero-row dataset with the row schema (used when a source contributes nothing)."""
    return rows_to_dataset([])


def load_llava_json(path: str | Path, *, source: str = "llava_json", limit: int | None = None) -> Dataset:
    """Read a LLaVA-format JSON (array) or JSON-lines file into a dataset with :data:`ROW_FEATURES`.

    Never fails on mixed int/str ids or absent `image` keys. `limit` keeps only the first rows
    (handy for quick looks at a 1.2M-row file).
    """
    records = read_records(path)
    if limit is not None:
        records = records[:limit]
    return rows_to_dataset(normalise_row(r, source=source, index=i) for i, r in enumerate(records))
