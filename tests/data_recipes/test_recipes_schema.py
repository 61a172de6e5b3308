"""The row schema and the LLaVA-format reader."""

from __future__ import annotations

import pytest
from recipe_fakes import caption_row, text_row, write_json, write_jsonl, write_parquet

from data_recipes import PROBLEM_COLUMN, READ_FEATURES, ROW_FEATURES, load_llava_json, normalise_row
from data_recipes.io import read_records

MIXED = [
    caption_row(7, "a/1.jpg", "first"),
    caption_row("000000033471", "a/2.jpg", "second"),
    text_row(12, "Hi?", "Hello."),                       # no image key at all
    {**text_row("x", "Q?", "A."), "image": None},      # explicit null
    {**text_row(None, "Q2?", "A2."), "image": ""},     # empty path, no id
    {"id": 3.5, "image": ["b/3.jpg"], "conversations": [{"from": "human", "value": "<image>\nQ"},
                                                        {"from": "gpt", "value": 5}]},
]


@pytest.mark.parametrize("writer,suffix", [(write_json, ".json"), (write_jsonl, ".jsonl")])
def test_mixed_ids_and_missing_images(tmp_path, writer, suffix):
    path = tmp_path / f"mixed{suffix}"
    writer(path, MIXED)
    ds = load_llava_json(path, source="mine")
    assert ds.features == READ_FEATURES and set(READ_FEATURES) - set(ROW_FEATURES) == {PROBLEM_COLUMN}
    assert ds[PROBLEM_COLUMN] == [None] * 6  # every record could be represented
    assert ds["id"] == ["7", "000000033471", "12", "x", "mine-4", "3.5"]
    assert ds["image"] == ["a/1.jpg", "a/2.jpg", None, None, None, "b/3.jpg"]
    assert set(ds["source"]) == {"mine"}
    # Non-string turn values are cast, never dropped.
    assert ds[5]["conversations"] == [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "5"}]
    assert ds[2]["conversations"] == [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]


def test_limit_keeps_first_rows(tmp_path):
    write_json(tmp_path / "a.json", MIXED)
    assert load_llava_json(tmp_path / "a.json", limit=2)["id"] == ["7", "000000033471"]


def test_unrepresentable_records_get_a_problem_instead_of_an_exception():
    row = normalise_row({"id": 1, "image": ["a.jpg", "b.jpg"], "conversations": []}, source="s", index=0)
    assert row[PROBLEM_COLUMN].startswith("multiple_images: 2 images")
    assert normalise_row("hello", source="s", index=4) == {
        "id": "s-4", "image": None, "conversations": None, "source": "s",
        PROBLEM_COLUMN: "malformed_row: row 4 is 'hello', not an object"}
    assert normalise_row({"conversations": ["hi"]}, source="s", index=0)[PROBLEM_COLUMN].startswith(
        "malformed_row: turn 0 is 'hi'")
    assert normalise_row({"conversations": {"from": "human"}}, source="s", index=0)[PROBLEM_COLUMN].startswith(
        "malformed_row: `conversations` is")


def test_missing_conversations_become_empty_list_and_null_values_empty_strings():
    row = normalise_row({"id": 1, "conversations": [{"from": "human", "value": None}]}, source="s", index=0)
    assert row == {"id": "1", "image": None, "conversations": [{"from": "human", "value": ""}], "source": "s"}
    assert normalise_row({"id": 2}, source="s", index=0)["conversations"] == []


def test_nan_id_and_image_are_missing():
    # What pandas writes for a missing cell: NaN (or Infinity), which Python's JSON reader accepts.
    row = normalise_row({"id": float("nan"), "image": float("nan"), "conversations": []}, source="s", index=7)
    assert (row["id"], row["image"]) == ("s-7", None)
    # A NaN `conversations` cell is no turns, as a null one is, not a malformed row.
    empty = normalise_row({"id": 1, "conversations": float("nan")}, source="s", index=0)
    assert empty["conversations"] == [] and "problem" not in empty, empty


def test_read_records_detects_json_lines_behind_a_json_suffix(tmp_path):
    write_jsonl(tmp_path / "train.json", [{"input": "a"}, {"input": "b"}])
    assert read_records(tmp_path / "train.json") == [{"input": "a"}, {"input": "b"}]


def test_json_lines_keep_the_line_separators_a_json_string_may_hold(tmp_path):
    """U+2028, U+2029, U+0085, form feed and the like are valid raw inside a JSON string (and the project's own
    `write_jsonl` writes them raw); only "\\n" ends a JSON line."""
    from data_recipes.validation import write_jsonl

    texts = ["a\u2028b", "c\u2029d", "e\x85f", "g\x0ch\x1ci", "j\r"]
    write_jsonl(tmp_path / "rows.jsonl", [{"caption": text} for text in texts])
    assert read_records(tmp_path / "rows.jsonl") == [{"caption": text} for text in texts]


def test_read_records_folder_is_read_in_sorted_order(tmp_path):
    write_parquet(tmp_path / "data" / "train-00001-of-00002.parquet", [{"x": 3}])
    write_parquet(tmp_path / "data" / "train-00000-of-00002.parquet", [{"x": 1}, {"x": 2}])
    (tmp_path / "README.md").write_text("not data")
    assert [r["x"] for r in read_records(tmp_path)] == [1, 2, 3]


def test_read_records_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_records(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"a": 1}\n{broken\n')
    with pytest.raises(ValueError, match="bad.json:2"):
        read_records(tmp_path / "bad.json")
