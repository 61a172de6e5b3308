"""Validation: every reject reason counted, written with its reason, reported; strict mode; image checks."""

from __future__ import annotations

import json

import datasets
import pytest
from recipe_fakes import caption_row, text_row, write_image, write_json

from data_recipes import (
    REJECT_REASONS,
    StrictValidationError,
    build_recipe,
    load_llava_json,
    validate_dataset,
)
from data_recipes.validation import check_conversation, check_image_file


def _t(*pairs):
    return [{"from": role, "value": value} for role, value in pairs]


# id -> expected reason (None: kept)
EXPECTED = {
    "ok-image": None,
    "ok-text": None,
    "ok-multiturn": None,
    "missing": "missing_image",
    "broken": "unreadable_image",
    "no-marker": "no_image_marker",
    "two-markers": "too_many_image_markers",
    "marker-on-text": "too_many_image_markers",
    "empty": "empty_turn",
    "starts-gpt": "bad_turn_order",
    "human-human": "bad_turn_order",
    "unanswered": "bad_turn_order",
    "no-turns": "bad_turn_order",
    "bad-role": "unknown_role",
}


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    write_image(root / "img" / "ok.jpg")
    write_image(root / "img" / "ok2.png")
    (root / "img" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    rows = [
        caption_row("ok-image", "img/ok.jpg", "fine"),
        text_row("ok-text", "Hi?", "Hello."),
        {"id": "ok-multiturn", "image": "img/ok2.png", "conversations": _t(
            ("human", "<image>\nQ1"), ("gpt", "A1"), ("human", "Q2"), ("gpt", "A2"))},
        caption_row("missing", "img/missing.jpg", "gone"),
        caption_row("broken", "img/broken.jpg", "bad bytes"),
        {"id": "no-marker", "image": "img/ok.jpg", "conversations": _t(("human", "Describe."), ("gpt", "x"))},
        {"id": "two-markers", "image": "img/ok.jpg", "conversations": _t(("human", "<image>\n<image>\nQ"), ("gpt", "x"))},
        {"id": "marker-on-text", "conversations": _t(("human", "<image>\nQ"), ("gpt", "x"))},
        {"id": "empty", "image": "img/ok.jpg", "conversations": _t(("human", "<image>\nQ"), ("gpt", "  \n"))},
        {"id": "starts-gpt", "conversations": _t(("gpt", "x"), ("human", "Q"))},
        {"id": "human-human", "conversations": _t(("human", "Q"), ("human", "Q again"))},
        {"id": "unanswered", "conversations": _t(("human", "Q"), ("gpt", "A"), ("human", "Q2"))},
        {"id": "no-turns", "conversations": []},
        {"id": "bad-role", "conversations": _t(("user", "Q"), ("assistant", "A"))},
    ]
    write_json(root / "data.json", rows)
    return root


def test_check_conversation_each_reason():
    assert check_conversation(_t(("human", "<image>\nQ"), ("gpt", "A")), has_image=True) is None
    assert check_conversation(_t(("human", "Q"), ("gpt", "A")), has_image=False) is None
    assert check_conversation(_t(("human", "<image>"), ("gpt", "A")), has_image=True) is None  # stage-1 'plain' rows
    assert check_conversation(_t(("human", "Q"), ("gpt", "")), has_image=False) == "empty_turn"
    # Invisible format characters, which str.strip keeps, show nothing either: they trained 2-4 tokens of nothing.
    for invisible in ("\u200b", "\u00ad", "\ufeff", " \u200b ", "\u200d\n", "\ufe0f", "\u3164", "\u2800 "):
        assert check_conversation(_t(("human", "Q"), ("gpt", invisible)), has_image=False) == "empty_turn", invisible
    assert check_conversation(_t(("human", "Q"), ("gpt", "A\u200b")), has_image=False) is None
    for shown in ("\u2764\ufe0f", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0645", "\U0001f468\u200d\U0001f469"):  # emoji, ZWNJ
        assert check_conversation(_t(("human", "Q"), ("gpt", shown)), has_image=False) is None, shown
    assert check_conversation(_t(("gpt", "A"), ("human", "Q")), has_image=False) == "bad_turn_order"
    assert check_conversation(_t(("human", "Q"), ("gpt", "A")), has_image=True) == "no_image_marker"
    assert check_conversation(_t(("human", "<image>Q"), ("gpt", "<image>")), has_image=True) == "too_many_image_markers"
    assert check_conversation(_t(("human", "<image>Q"), ("gpt", "A")), has_image=False) == "too_many_image_markers"


def test_check_image_file(tmp_path, bad_root):
    assert check_image_file(str(bad_root / "img" / "ok.jpg")) == (None, "")
    assert check_image_file(str(tmp_path / "nope.jpg"))[0] == "missing_image"
    reason, detail = check_image_file(str(bad_root / "img" / "broken.jpg"))
    assert reason == "unreadable_image" and detail  # the PIL error text is kept for the rejects file


def test_every_reason_counted_and_written(bad_root, tmp_path):
    result = build_recipe("llava_json", bad_root, tmp_path / "out", params={"annotation": "data.json"})
    expected_counts = {r: sum(v == r for v in EXPECTED.values()) for r in REJECT_REASONS}
    assert result.summary["dropped_by_reason"] == expected_counts
    # The fixture exercises the reasons of the original validator; tests/faults covers every reason on both paths.
    assert {reason for reason, count in result.summary["dropped_by_reason"].items() if count} == {
        "bad_turn_order", "empty_turn", "missing_image", "no_image_marker", "too_many_image_markers", "unknown_role",
        "unreadable_image"}
    assert result.summary["rows"] == {"read": 14, "kept": 3, "dropped": 11}
    assert result.summary["sources"]["llava_json"]["dropped_by_reason"] == expected_counts
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert {r["id"]: r["reason"] for r in rejects} == {k: v for k, v in EXPECTED.items() if v}
    missing = next(r for r in rejects if r["id"] == "missing")
    assert missing["image"] == "img/missing.jpg" and missing["detail"].endswith("img/missing.jpg")
    assert missing["conversations"][1]["value"] == "gone"  # the whole row is kept in the rejects file
    assert sorted(result.dataset["id"]) == ["ok-image", "ok-multiturn", "ok-text"]
    assert sorted(datasets.load_from_disk(str(tmp_path / "out"))["id"]) == ["ok-image", "ok-multiturn", "ok-text"]


def test_strict_raises_with_counts_and_saves_no_dataset(bad_root, tmp_path):
    out = tmp_path / "strict"
    with pytest.raises(StrictValidationError) as info:
        build_recipe("llava_json", bad_root, out, params={"annotation": "data.json"}, strict=True)
    message = str(info.value)
    assert "11 row(s) rejected" in message
    assert "missing_image=1" in message and "bad_turn_order=4" in message and "too_many_image_markers=2" in message
    assert "\n" not in message
    assert str(out / "rejects.jsonl") in message
    assert info.value.counts["unreadable_image"] == 1
    assert not (out / "state.json").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert len((out / "rejects.jsonl").read_text().splitlines()) == 11


def test_strict_passes_on_clean_data(lcs_root, tmp_path):
    result = build_recipe("lcs558k", lcs_root, tmp_path / "out", strict=True)
    assert result.summary["rows"]["dropped"] == 0


def test_skip_image_check_keeps_file_problems_but_not_text_problems(bad_root, tmp_path):
    result = build_recipe("llava_json", bad_root, tmp_path / "out", params={"annotation": "data.json"},
                          check_images=False)
    counts = result.summary["dropped_by_reason"]
    assert counts["missing_image"] == 0 and counts["unreadable_image"] == 0
    assert counts["bad_turn_order"] == 4 and counts["unknown_role"] == 1 and counts["empty_turn"] == 1
    assert {"missing", "broken"} <= set(result.dataset["id"])
    assert result.summary["image_check"] is False
    assert "were **not** checked" in (tmp_path / "out" / "README.md").read_text()


def test_parallel_image_checks_agree_with_serial(bad_root):
    ds = load_llava_json(bad_root / "data.json")
    serial = validate_dataset(ds, bad_root, num_proc=1)
    parallel = validate_dataset(ds, bad_root, num_proc=2)
    assert serial.reasons == parallel.reasons
    assert [ds[i]["id"] for i in serial.kept_indices] == ["ok-image", "ok-text", "ok-multiturn"]


def test_image_rows_need_an_image_root(bad_root):
    ds = load_llava_json(bad_root / "data.json")
    with pytest.raises(ValueError, match="no image root"):
        validate_dataset(ds, None)
    assert validate_dataset(ds, None, check_images=False).num_rejected == 9
