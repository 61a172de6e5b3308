"""The one normalised row schema shared by every recipe, and the LLaVA-format reader.

Every recipe produces rows of exactly this shape::

    {"id": str, "image": str | None, "conversations": [{"from": str, "value": str}, ...], "source": str}

The upstream LLaVA files mix integer and string ids and leave `image` out of text-only rows, so a
plain `datasets.load_dataset("json", ...)` fails with an Arrow type error (or silently infers a
schema from the first rows). Here every row is normalised in Python first, then the Arrow table is
built once with the explicit :data:`READ_FEATURES` (the row schema plus the `problem` a record may have).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
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

# Rows as read, before validation: the row schema plus `problem`, set by `normalise_row` on a record it could not
# turn into a row ("reason: detail", e.g. a record that is not an object). Validation rejects such rows with that
# reason, and the column is dropped from what is kept, so a build holds exactly ROW_FEATURES.
PROBLEM_COLUMN = "problem"
READ_FEATURES = Features({**ROW_FEATURES, PROBLEM_COLUMN: Value("string")})


def is_missing(value: Any) -> bool:
    """Whether a field holds no value: null, or NaN / Infinity, which is how pandas writes a missing cell
    (`json.dump(df.to_dict("records"))` writes `NaN`, which Python's reader accepts)."""
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _as_text(value: Any) -> str:
    """Turn a turn value into a string; a missing one (`is_missing`) becomes "" so validation can flag it as empty."""
    if is_missing(value):
        return ""
    return value if isinstance(value, str) else str(value)


def _unencodable(text: str) -> bool:
    """Whether `text` holds a lone surrogate (a JSON `\\ud800` escape with no pair): Python reads it, but it is not
    Unicode text; Arrow cannot store it and a tokenizer cannot encode it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _storable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def preview(value: Any, limit: int = 120) -> str:
    """`repr(value)`, cut to `limit` characters: a bad value as a message or the rejects file quotes it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _normalise_image(value: Any) -> tuple[str | None, str | None]:
    """(image path or None, problem or None)."""
    if is_missing(value) or value == "":  # a NaN image is a text row of a pandas dump, not a file named "nan"
        return None, None
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return _normalise_image(value[0])
        if not value:
            return None, None
        # The schema holds one image per row (LLaVA-1.5 / Croc); keeping one of them would lose data silently.
        return None, f"multiple_images: {len(value)} images {preview(list(value))}"
    if isinstance(value, (dict, bool)):
        return None, f"malformed_row: `image` is {preview(value)}, not a path"
    return str(value), None


def _keys(record: Mapping[str, Any]) -> str:
    """The keys a record holds, for a reject's detail: a row of another schema (OpenAI's `messages` of
    `{role, content}`) is rejected with what it holds, so the rejects file says what was found, not `from: ""`."""
    keys = [str(key) for key in record]
    shown = ", ".join(keys[:12]) + (f", ... ({len(keys)} keys)" if len(keys) > 12 else "")
    return f"keys: {shown or 'none'}"


def _normalise_turns(conversations: Any) -> tuple[list[dict[str, str]] | None, str | None]:
    """(turns or None, problem or None): a list of {from, value} objects with text (or number) values."""
    if is_missing(conversations):  # NaN too: a pandas dump's empty cell is no turns, not a malformed row
        return [], None  # no turns: validation rejects the row as `bad_turn_order`
    if not isinstance(conversations, list):
        return None, f"malformed_row: `conversations` is {preview(conversations)}, not a list of turns"
    turns = []
    for position, turn in enumerate(conversations):
        if not isinstance(turn, Mapping):
            return None, f"malformed_row: turn {position} is {preview(turn)}, not an object with from/value"
        # A turn without the key (a `{role, content}` turn) is another schema, not an empty turn or an unknown role,
        # which an empty `from` / `value` would be reported as.
        missing = next((key for key in ("from", "value") if key not in turn), None)
        if missing is not None:
            return None, f"malformed_row: turn {position} has no {missing!r} ({_keys(turn)})"
        value = turn.get("value")
        if isinstance(value, (list, dict)):
            return None, f"malformed_row: turn {position}'s value is {preview(value)}, not text"
        turns.append({"from": _as_text(turn.get("from")), "value": _as_text(value)})
    return turns, None


def normalise_row(record: Any, *, source: str, index: int) -> dict[str, Any]:
    """Normalise one LLaVA-format record to :data:`ROW_FEATURES`, never raising.

    Ids are cast to str (a missing id becomes ``f"{source}-{index}"``), a missing or empty `image`
    becomes None, turn values are cast to str. Unknown keys (e.g. `question_type`, `width`) are dropped.
    Structural problems (empty turns, wrong roles) are kept as they are: validation reports them. A record that
    cannot be represented at all (not an object, turns that are not objects, several images) gets a `problem`
    key (``"reason: detail"``, see :data:`PROBLEM_COLUMN`), which validation turns into a counted reject.
    """
    if not isinstance(record, Mapping):
        return {"id": f"{source}-{index}", "image": None, "conversations": None, "source": source,
                PROBLEM_COLUMN: f"malformed_row: row {index} is {preview(record)}, not an object"}
    raw_id = record.get("id")
    # A NaN id (a pandas dump) is missing too: as "nan" every such row would share one id.
    row_id = f"{source}-{index}" if is_missing(raw_id) or raw_id == "" else str(raw_id)
    image, image_problem = _normalise_image(record.get("image"))
    conversations, turn_problem = _normalise_turns(record.get("conversations"))
    row = {"id": row_id, "image": image, "conversations": conversations, "source": source}
    problem = image_problem or turn_problem or _schema_problem(record) or text_problem(row)
    if problem:
        row[PROBLEM_COLUMN] = problem
    return row


def _schema_problem(record: Mapping[str, Any]) -> str | None:
    """A `malformed_row` problem for a record of another schema, which would otherwise be rejected with nothing said
    (no `conversations`: `bad_turn_order` with no turns) or, worse, kept with its image lost: an `images` list
    instead of `image` read as a text row. An explicit null `conversations` stays a row without turns."""
    if "conversations" not in record:
        return f"malformed_row: no 'conversations' ({_keys(record)})"
    if "image" not in record and not is_missing(record.get("images")) and record.get("images") != []:
        return (f"malformed_row: 'images' where the LLaVA row has 'image' ({_keys(record)}); one image per row, "
                "named `image`")
    return None


def text_problem(row: dict[str, Any]) -> str | None:
    """Make every text of `row` storable, returning an `invalid_text` problem when one was not valid Unicode (the
    stored row keeps the bad character as a visible `\\ud800` escape, for the rejects file)."""
    found = []
    for key in ("id", "image"):
        if isinstance(row[key], str) and _unencodable(row[key]):
            found.append(key)
            row[key] = _storable(row[key])
    for position, turn in enumerate(row["conversations"] or []):
        for key in ("from", "value"):
            if _unencodable(turn[key]):
                found.append(f"turn {position}'s {key}")
                turn[key] = _storable(turn[key])
    return f"invalid_text: {', '.join(found)} holds a lone surrogate escape, not Unicode text" if found else None


def rows_to_dataset(rows: Iterable[Mapping[str, Any]]) -> Dataset:
    """Build an in-memory Arrow dataset with :data:`READ_FEATURES` from already normalised rows (`problem` is None
    where a row has none).

    `pa.Table.from_pylist` with the explicit schema is ~6x faster than `Dataset.from_list`, which
    re-encodes every example; the rows are already in their final form so encoding is a no-op.
    """
    rows = rows if isinstance(rows, list) else list(rows)
    table = pa.Table.from_pylist(rows, schema=READ_FEATURES.arrow_schema)
    return Dataset(table, info=DatasetInfo(features=READ_FEATURES.copy()))


def empty_dataset() -> Dataset:
    """A zero-row dataset with the row schema (used when a source contributes nothing)."""
    return rows_to_dataset([])


def load_llava_json(path: str | Path, *, source: str = "llava_json", limit: int | None = None) -> Dataset:
    """Read a LLaVA-format JSON (array) or JSON-lines file into an in-memory dataset with :data:`READ_FEATURES`.

    Never fails on mixed int/str ids, absent `image` keys or a malformed record (it gets a `problem`); a file that
    does not read as rows raises `DataError` with its name and line. `limit` keeps only the first rows (handy for
    quick looks at a 1.2M-row file). `data_recipes.row_cache.cached_llava_json` reads the same rows once into an
    Arrow file and memory-maps it.
    """
    table = pa.Table.from_batches(list(llava_json_batches(path, source=source, limit=limit)),
                                  schema=READ_FEATURES.arrow_schema)
    return Dataset(table, info=DatasetInfo(features=READ_FEATURES.copy()))


def llava_json_batches(path: str | Path, *, source: str = "llava_json", limit: int | None = None,
                       batch_rows: int = 10_000) -> Iterator[pa.RecordBatch]:
    """The rows of a LLaVA-format file, normalised, as Arrow record batches of :data:`READ_FEATURES`.

    Each record is let go once its batch is built: the parsed file and a normalised copy of all of it are never held
    at once (at mix665K that is 3.7 GB of Python objects, not 7.5 GB).
    """
    records = read_records(path)
    if limit is not None:
        records = records[:limit]
    schema = READ_FEATURES.arrow_schema
    for start in range(0, len(records), batch_rows):
        stop = min(start + batch_rows, len(records))
        rows = [normalise_row(records[index], source=source, index=index) for index in range(start, stop)]
        records[start:stop] = [None] * (stop - start)
        yield pa.RecordBatch.from_pylist(rows, schema=schema)
