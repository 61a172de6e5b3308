"""Rows of a shape the stage cannot train as written: a text row or several exchanges under stage 1's `plain` format,
an `<image>` marker in an answer or in a later question, a row of another schema, annotation files a folder holds
but the reader skipped, and a source whose images are under a folder the run was not told. Each is rejected before
compute with a reason counted in the data report and a detail saying what was found, or trained as LLaVA trains it,
or said in one line; never trained altered, never skipped without a word."""

from __future__ import annotations

import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fault_cases import image_row, text_row, write_good_image
from run_cases import cli_exit, run_argv, write_small_folder

from croc_testing.tiny import tiny_croc_processor
from data_recipes import (
    DataError,
    load_llava_json,
    normalise_row,
    rejected_rows,
    rows_to_dataset,
    validate_dataset,
)
from data_recipes.io import read_records
from modeling_croc.conversation import TEMPLATES, llava_row_to_messages
from trainer.data_loading import build_train_dataset, load_training_rows
from trainer.resolve import resolve_config

PLAIN_TEXT_ROW = ("the plain format needs an image in every row (it trains an image's caption: a text row would be a "
                  "bare answer, its question dropped)")
PLAIN_MULTI_TURN = ("the plain format holds one question and one answer; this row has 4 turns (user, assistant, user, "
                    "assistant)")


def _multi_turn(row_id: str, image: str) -> dict:
    return {"id": row_id, "image": image, "conversations": [
        {"from": "human", "value": "<image>\nWhat color is the car?"}, {"from": "gpt", "value": "Red."},
        {"from": "human", "value": "How many wheels?"}, {"from": "gpt", "value": "Four."}]}


def _stage1_dataset(tmp_path, tiny_model, data, *extra):
    _, data_args, args, _ = resolve_config(run_argv("stage1.yaml", tmp_path / "run", tiny_model, data, *extra))
    rows = load_training_rows(data_args, args)
    return build_train_dataset(rows, tiny_croc_processor(), args), rows.report


# --- F1, F4: stage 1 (`plain`) trains one image and its caption a row ------------------------------------------------


def test_plain_rejects_text_rows_and_several_exchanges_before_training(tiny_model, tmp_path):
    """Before: stage 1 read 6 + 2 + 1 rows and rejected none; a micro-batch of text rows failed in backward ("element
    0 of tensors does not require grad"), the text rows that trained were bare answers, and the multi-turn row one
    caption made of both answers."""
    path = write_small_folder(tmp_path / "data")
    rows = json.loads(path.read_text())
    rows.append(_multi_turn("multi", "images/0.png"))
    path.write_text(json.dumps(rows))
    dataset, report = _stage1_dataset(tmp_path, tiny_model, path, "--data.max_reject_fraction=0.5")
    assert report.rows_read == 9
    assert {reason: n for reason, n in report.rejected.items() if n} == {"template_cannot_render": 3}
    assert [(row["id"], row["reason"], row["detail"]) for row in report.start_rejects] == [
        ("text-0", "template_cannot_render", PLAIN_TEXT_ROW),
        ("text-1", "template_cannot_render", PLAIN_TEXT_ROW),
        ("multi", "template_cannot_render", PLAIN_MULTI_TURN),
    ]
    # What trains: the six image rows, each one image and one caption; no micro-batch can be all text.
    assert len(dataset) == 6
    assert dataset.rows["id"] == [f"img-{i}" for i in range(6)]
    assert [int(length > 0) for length in dataset.modality_lengths] == [1] * 6


def test_stage1_on_mixed_rows_stops_in_one_line_before_training(tiny_model, tmp_path, monkeypatch, capsys):
    """The hostile tester's run: 12 image rows and 4 text rows under stage 1 crashed mid-training with a traceback;
    now the start counts the text rows and the reject budget stops the run in one line, naming the reason."""
    root = tmp_path / "data"
    write_good_image(root / "images" / "ok.png", (200, 30, 30))
    rows = [image_row(f"i{i}", "images/ok.png", f"caption {i}") for i in range(12)]
    rows += [text_row(f"t{i}") for i in range(4)]
    (root / "mixed.json").write_text(json.dumps(rows))
    out = tmp_path / "run"
    status, message = cli_exit(run_argv("stage1.yaml", out, tiny_model, root / "mixed.json", "--max_steps=4"),
                               monkeypatch, capsys)
    assert status == 1
    assert message == (f"data error: 4 of 16 rows of {root / 'mixed.json'} rejected (template_cannot_render=4), more "
                       "than data.max_reject_fraction=0.01 of them (and more than one) allows; raise it to go on "
                       f"regardless; rejected rows with their reasons: {out / 'rejects.jsonl'}")
    lines = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(line["id"], line["reason"], line["detail"]) for line in lines] == [
        (f"t{i}", "template_cannot_render", PLAIN_TEXT_ROW) for i in range(4)]


def test_plain_cannot_render_says_why_and_other_llava_templates_take_both_shapes():
    plain, vicuna = TEMPLATES["plain"], TEMPLATES["vicuna_v1"]
    turns = _multi_turn("m", "a.png")["conversations"]
    assert plain.cannot_render(turns[:2], has_image=True) is None
    assert plain.cannot_render(turns[:2], has_image=False) == PLAIN_TEXT_ROW
    assert plain.cannot_render(turns, has_image=True) == PLAIN_MULTI_TURN
    assert vicuna.cannot_render(turns, has_image=True) is None and vicuna.cannot_render(turns[:2], False) is None


# --- F2: a marker in an answer -----------------------------------------------------------------------------------


def _markers_rows() -> list[dict]:
    def row(row_id, *turns):
        return {"id": row_id, "image": "a.png",
                "conversations": [{"from": role, "value": value} for role, value in turns]}

    return [
        row("gpt-only-marker", ("human", "Describe the picture."), ("gpt", "<image>")),
        row("gpt-marker", ("human", "Describe the picture."), ("gpt", "It shows <image> a cat")),
        row("both", ("human", "<image>\nDescribe."), ("gpt", "It shows <image> a cat")),
        row("text-gpt-marker", ("human", "Hi"), ("gpt", "<image> hello")) | {"image": None},
        row("good", ("human", "<image>\nDescribe."), ("gpt", "A cat.")),
        row("later", ("human", "Hi"), ("gpt", "Hello"), ("human", "<image>\nWhat is this?"), ("gpt", "A cat.")),
    ]


def test_a_marker_in_an_answer_is_a_counted_reject_with_the_turn_named(tmp_path):
    """Before: "<image>" as the answer trained an empty answer, and "It shows <image> a cat" trained "It shows  a cat"
    with the image moved into the question; both rows were kept."""
    path = tmp_path / "markers.json"
    path.write_text(json.dumps(_markers_rows()))
    rows = load_llava_json(path)
    report = validate_dataset(rows, tmp_path, image_check="none")
    assert list(zip(rows["id"], report.reasons, report.details)) == [
        ("gpt-only-marker", "too_many_image_markers",
         "turn 1 (gpt) holds only <image>: an answer cannot hold the image; the marker belongs in a human turn"),
        ("gpt-marker", "too_many_image_markers",
         "turn 1 (gpt) holds <image>: an answer cannot hold the image; the marker belongs in a human turn"),
        ("both", "too_many_image_markers",
         "turn 1 (gpt) holds <image>: an answer cannot hold the image; the marker belongs in a human turn"),
        ("text-gpt-marker", "too_many_image_markers",
         "turn 1 (gpt) holds <image>: an answer cannot hold the image; the marker belongs in a human turn"),
        ("good", None, ""),
        ("later", None, ""),
    ]
    assert report.counts["too_many_image_markers"] == 4


def test_turn_rejects_say_which_turn():
    """The turn checks' rejects had an empty detail; each now names the turn."""
    def detail(*turns, has_image=False):
        record = {"id": "r", "conversations": [{"from": role, "value": value} for role, value in turns]}
        rows = rows_to_dataset([normalise_row(record | ({"image": "a.png"} if has_image else {}), source="s",
                                              index=0)])
        report = validate_dataset(rows, None, image_check="none")
        return report.reasons[0], report.details[0]

    assert detail(("human", "Q"), ("bot", "A")) == ("unknown_role", "turn 1 is from 'bot', not human or gpt")
    assert detail(("human", "Q"), ("gpt", "  ")) == ("empty_turn", "turn 1 (gpt) is empty")
    assert detail(("human", "Q"), ("gpt", "A"), ("human", "Q2")) == ("bad_turn_order", "turns are human, gpt, human")
    assert detail(("human", "Q"), ("gpt", "A"), has_image=True) == (
        "no_image_marker", "the row has an image but no <image> in its turns")
    assert detail(("human", "<image> <image> Q"), ("gpt", "A"), has_image=True) == (
        "too_many_image_markers", "2 <image> markers on a row with one image")


# --- F3: a marker in a later question ------------------------------------------------------------------------------


def test_a_marker_in_a_later_question_keeps_the_image_there_as_llava_does():
    """LLaVA's `preprocess_multimodal` moves the marker to the front of the turn that holds it; this project moved the
    image to the first question, before "Hi", which the row never asked about an image."""
    turns = _markers_rows()[-1]["conversations"]
    system = TEMPLATES["vicuna_v1"].system
    assert "".join(segment.text for segment in TEMPLATES["vicuna_v1"].segments(turns, has_image=True)) == (
        f"{system}USER: Hi ASSISTANT: Hello</s>USER: <image>\nWhat is this? ASSISTANT: A cat.</s>")
    assert "".join(segment.text for segment in TEMPLATES["qwen_1_5"].segments(turns, has_image=True)) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\n<image>\nWhat is this?<|im_end|>\n"
        "<|im_start|>assistant\nA cat.<|im_end|>\n")
    # The chat messages (what inference renders) put the image in the same turn.
    assert llava_row_to_messages(turns, has_image=True) == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
    ]


# --- F6: rows of another schema --------------------------------------------------------------------------------


def test_rows_of_another_schema_say_what_was_found(tmp_path):
    """Before: OpenAI `messages` rows and `{role, content}` turns were rejected with an empty detail, the rejects file
    showing `conversations: []` or `from: ""`; an `images` list instead of `image` trained the row as text."""
    records = [
        {"id": 1, "image": "a.png", "messages": [{"role": "user", "content": "<image>\nDescribe."}]},
        {"id": 2, "image": "a.png", "conversations": [{"role": "user", "content": "<image>\nDescribe."},
                                                      {"role": "assistant", "content": "x"}]},
        {"id": 3, "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nDescribe."},
                                                      {"from": "gpt", "text": "x"}]},
        {"id": 4, "images": ["a.png"], "conversations": [{"from": "human", "value": "<image>\nDescribe."},
                                                         {"from": "gpt", "value": "x"}]},
        {"id": 5, "conversations": None},
    ]
    path = tmp_path / "other.json"
    path.write_text(json.dumps(records))
    rows = load_llava_json(path)
    report = validate_dataset(rows, tmp_path, image_check="none")
    found = [(line["id"], line["reason"], line["detail"]) for line in rejected_rows(rows, report)]
    assert found == [
        ("1", "malformed_row", "no 'conversations' (keys: id, image, messages)"),
        ("2", "malformed_row", "turn 0 has no 'from' (keys: role, content)"),
        ("3", "malformed_row", "turn 1 has no 'value' (keys: from, text)"),
        ("4", "malformed_row", "'images' where the LLaVA row has 'image' (keys: id, images, conversations); one image "
                               "per row, named `image`"),
        ("5", "bad_turn_order", "no turns"),  # an explicit null: a row without turns, as before
    ]


# --- F5: annotation files a folder holds --------------------------------------------------------------------------


def test_a_folder_reads_upper_case_suffixes_and_names_the_files_it_does_not_read(tmp_path, caplog):
    """Before: `part2.JSON` was skipped and `read 10 rows` said nothing of it, nor of a `.json.gz` left packed."""
    folder = tmp_path / "ann"
    folder.mkdir()
    (folder / "part1.json").write_text(json.dumps([text_row("a")]))
    (folder / "part2.JSON").write_text(json.dumps([text_row("b")]))
    (folder / "part3.JSONL").write_text(json.dumps(text_row("c")) + "\n")
    pq.write_table(pa.Table.from_pylist([text_row("d")]), folder / "part4.Parquet")
    (folder / "part5.json.gz").write_bytes(b"\x1f\x8b")
    (folder / "notes.txt").write_text("n")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "part1.json.metadata").write_text("x")  # `hf download --local-dir` metadata: not data
    with caplog.at_level(logging.WARNING, logger="data_recipes.io"):
        records = read_records(folder)
    assert [record["id"] for record in records] == ["a", "b", "c", "d"]
    assert [record.getMessage() for record in caplog.records] == [
        f"{folder}: 2 file(s) not read (not .json/.jsonl/.parquet): notes.txt, part5.json.gz (compressed: unpack it to "
        "read it)"]


def test_a_folder_of_no_readable_file_names_what_it_holds(tmp_path):
    folder = tmp_path / "ann"
    folder.mkdir()
    (folder / "rows.json.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(FileNotFoundError) as error:
        read_records(folder)
    assert str(error.value) == (f"{folder}: folder holds no .json/.jsonl/.parquet files ({folder}: 1 file(s) not read "
                                "(not .json/.jsonl/.parquet): rows.json.gz (compressed: unpack it to read it))")


# --- N6: the images under a folder the run was not told ---------------------------------------------------------


def test_a_wrong_image_root_is_named_with_the_folder_that_holds_the_images(tiny_model, tmp_path):
    """Before: `24 of 25 rows ... rejected (missing_image=24) ... raise it to go on regardless`: the one advice given
    would have trained on the one text row."""
    root = tmp_path / "data"
    write_good_image(root / "images" / "sub" / "a.png", (10, 200, 10))
    rows = [image_row(f"i{i}", "sub/a.png") for i in range(24)] + [text_row("t")]
    (root / "d.json").write_text(json.dumps(rows))
    _, data_args, args, _ = resolve_config(run_argv("stage2.yaml", tmp_path / "run", tiny_model, root / "d.json"))
    with pytest.raises(DataError) as error:
        load_training_rows(data_args, args)
    assert str(error.value).endswith(
        f"; most rejects are missing_image: the first, 'sub/a.png', was looked for at {root / 'sub' / 'a.png'} (images "
        f"are read relative to data.image_root, here {root}); {root / 'images' / 'sub' / 'a.png'} exists: set "
        f"data.image_root={root / 'images'} (--data.image_root={root / 'images'})")
    # Set as it says, the same rows start.
    _, data_args, args, _ = resolve_config(run_argv("stage2.yaml", tmp_path / "run", tiny_model, root / "d.json",
                                                    f"--data.image_root={root / 'images'}"))
    assert load_training_rows(data_args, args).report.rows_read == 25


def test_missing_images_without_an_obvious_folder_say_where_they_were_looked_for(tiny_model, tmp_path):
    root = tmp_path / "data"
    for folder in ("a", "b"):  # two folders hold the file: no guess
        write_good_image(root / folder / "x.png", (10, 10, 200))
    (root / "d.json").write_text(json.dumps([image_row(f"i{i}", "x.png") for i in range(3)]))
    _, data_args, args, _ = resolve_config(run_argv("stage2.yaml", tmp_path / "run", tiny_model, root / "d.json"))
    with pytest.raises(DataError) as error:
        load_training_rows(data_args, args)
    assert str(error.value).endswith(
        f"; most rejects are missing_image: the first, 'x.png', was looked for at {root / 'x.png'} (images are read "
        f"relative to data.image_root, here {root})")


def test_the_trainer_takes_an_upper_case_suffix_as_the_recipes_do(tiny_model, tmp_path):
    """`--data.path=train.JSON` was refused ('expected a .json or .jsonl') while the recipes read the same file."""
    data = write_small_folder(tmp_path / "data")
    upper = data.with_name("rows.JSON")
    data.rename(upper)
    _, data_args, args, _ = resolve_config(run_argv("stage2.yaml", tmp_path / "run", tiny_model, upper))
    assert load_training_rows(data_args, args).report.rows_read == 8
