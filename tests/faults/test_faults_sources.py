"""Issue 20: what a user points a run or a build at, broken in every way the hostile review found, ends in one line
that names it, before the model loads; rows that are merely bad are counted rejects. Sources: Parquet folders of the
wrong shape, JSON past the parser's limits, devices and pipes, NUL bytes in image paths, one 50 MB turn. Options:
YAML that repeats or numbers its keys, empty folders from unset shell variables, `~` in a publish folder, a folder
that cannot be created, a repository id the Hub refuses."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import huggingface_hub
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from fault_cases import image_row, jpeg_bytes, text_row, write_good_image
from run_cases import cli_error, run_argv

from croc_testing.tiny import tiny_croc_processor
from data_recipes import DataError, validate_dataset
from data_recipes.cli import main as recipes_main
from trainer import hub as trainer_hub
from trainer import train as train_module
from trainer.cli import ConfigError, build_arguments, load_raw_config
from trainer.data import CrocSupervisedDataset
from trainer.data_loading import load_training_rows
from trainer.script_args import DataArguments

QUESTION = "What is shown?\n<image>"
TURN = pa.struct([("from", pa.string()), ("value", pa.string())])


def _turns(answer: str, image: bool = True) -> list[dict[str, str]]:
    return [{"from": "human", "value": QUESTION if image else "What is two plus two?"},
            {"from": "gpt", "value": answer}]


def _text_table(name: str) -> pa.Table:
    """Two text rows, ids `NAME-0` and `NAME-1`."""
    return pa.table({"id": [f"{name}-{i}" for i in range(2)],
                     "conversations": pa.array([_turns(f"{name} {i}.", False) for i in range(2)], pa.list_(TURN))})


def _parquet(folder: Path, table: pa.Table, name: str = "train-00000-of-00001.parquet") -> Path:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "data" / name)
    return folder


def _read(path: Path) -> tuple[str, object]:
    """("ok", the rows) or ("error", the one-line DataError) of reading `path` as a run does."""
    try:
        return "ok", load_training_rows(DataArguments(path=str(path), image_check="decode",
                                                      max_reject_fraction=1.0))
    except DataError as error:
        assert "\n" not in str(error), error
        return "error", str(error)


# --- Parquet sources of the wrong shape -------------------------------------------------------------------------

SCHEMA_FAULTS = {
    # case: (the table, the message's words)
    "conversations as a string": (
        pa.table({"id": ["a"], "conversations": [json.dumps(_turns("A."))]}),
        "the `conversations` column is Value('string'), not a list of {from, value} turns"),
    "role/content turns": (
        pa.table({"conversations": [[{"role": "user", "content": "hi"}]]}),
        "not a list of {from, value} turns"),
    "turns as lists": (pa.table({"conversations": [[["human", "hi"], ["gpt", "A."]]]}),
                       "the `conversations` column is List(List(Value('string')))"),
    "no conversations": (pa.table({"id": ["a"], "text": ["hi"]}), "no `conversations` column (found ['id', 'text'])"),
    "image as numbers": (pa.table({"image": [7], "conversations": pa.array([_turns("A.")], pa.list_(TURN))}),
                         "the `image` column is Value('int64'), not image paths or images"),
}


@pytest.mark.parametrize("case", SCHEMA_FAULTS)
def test_a_parquet_source_of_another_schema_is_one_line_naming_the_column(case, tmp_path):
    table, words = SCHEMA_FAULTS[case]
    folder = _parquet(tmp_path / "pushed", table)
    verdict, message = _read(folder)
    assert verdict == "error" and message.startswith(f"{folder}: ") and words in message, message


def test_zero_rows_and_conflicting_files_are_one_line(tmp_path, capfd, caplog):
    empty = _parquet(tmp_path / "empty", pa.table({"conversations": pa.array([], pa.list_(TURN))}))
    verdict, message = _read(empty)
    assert verdict == "error" and message.startswith(f"{empty} cannot be read as training rows: "), message

    mixed = _parquet(tmp_path / "mixed", pa.table({"conversations": pa.array([_turns("A.", False)] * 2,
                                                                              pa.list_(TURN))}), "train-0.parquet")
    _parquet(mixed, pa.table({"conversations": ["a string"] * 2}), "train-1.parquet")
    capfd.readouterr()
    verdict, message = _read(mixed)
    assert verdict == "error" and message.startswith(f"{mixed} cannot be read as training rows: "), message

    other_columns = _parquet(tmp_path / "other_columns", _text_table("a"), "train-0.parquet")
    _parquet(other_columns, _text_table("b").append_column("extra", pa.array([1] * 2)), "train-1.parquet")
    verdict, message = _read(other_columns)
    # The line names the file datasets could not read and keeps Arrow's reason, which ends its long message.
    assert verdict == "error" and "because column names don't match" in message, message
    assert "datasets said: Failed to read file" in message and "train-1.parquet" in message, message
    # Only the one line: `datasets` logged the failed file as a multi-line ERROR (its schema in full), twice.
    assert "Failed to read file" not in capfd.readouterr().err
    assert not [record for record in caplog.records if record.name.startswith("datasets")], caplog.records


def test_a_parquet_folder_holding_its_images_is_not_read_as_an_image_folder(tmp_path):
    """Path rows' images lie, by default, in the folder their Parquet files are in; `datasets` reads a folder as its
    most common file type, so two images beside one shard made it an image folder, refused for "no `conversations`
    column (found ['image'])" with the Parquet file never read (found by a tester of every source kind)."""
    folder = tmp_path / "rows"
    for i in range(2):
        write_good_image(folder / "images" / f"{i}.png", (90 * i, 60, 200))
    table = pa.table({"image": [f"images/{i}.png" for i in range(2)],
                      "conversations": pa.array([_turns(f"Shape {i}.") for i in range(2)], pa.list_(TURN))})
    pq.write_table(table, folder / "part-0.parquet")
    verdict, message = _read(folder)
    assert verdict == "error" and message.startswith(f"data.path {folder}: datasets reads a folder as its most "
                                                     "common file type and reads this one as imagefolder"), message
    assert "not its 1 Parquet file(s); put the Parquet files in a folder of their own" in message, message


def test_a_parquet_file_in_no_split_is_one_line_and_other_splits_are_said(tmp_path, caplog):
    """`load_dataset(folder, split="train")` reads the files named for the train split: `more.parquet` beside
    `train.parquet` was dropped without a word, its rows neither trained nor counted (found by a hostile tester of
    evaluation). A validation split is not trained (there is no evaluation here), and the run says so."""
    folder = tmp_path / "rows"
    for name in ("train", "more"):
        _parquet(folder, _text_table(name), f"{name}.parquet")
    verdict, message = _read(folder)
    assert verdict == "error" and "1 file(s) are in no split" in message and "(data/more.parquet)" in message, message

    (folder / "data" / "more.parquet").rename(folder / "data" / "validation.parquet")
    with caplog.at_level(logging.WARNING, logger="trainer.data_loading"):
        verdict, rows = _read(folder)
    assert verdict == "ok" and sorted(rows.rows["id"]) == ["train-0", "train-1"], rows
    assert "only its train split is trained" in caplog.text and "its validation split (1 file(s))" in caplog.text



def test_a_hub_dataset_of_several_configs_trains_its_default_one(tmp_path, caplog):
    """A Hub dataset snapshot whose card declares several configs (subsets, one `default: true`): `load_dataset`
    reads the default one, and the other configs' files are theirs, not "in no split"; the check of files read by
    nothing refused such a folder, telling the user to rename the files (found by a hostile reviewer). A file the
    card names for no config is still refused, pointing at the card."""
    folder = tmp_path / "subsets"
    for name in ("main", "extra"):
        _parquet(folder, _text_table(name), f"{name}-train.parquet")
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: main\n  default: true\n  data_files:\n  - split: train\n"
        "    path: data/main-*\n- config_name: extra\n  data_files:\n  - split: train\n    path: data/extra-*\n"
        "---\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="trainer.data_loading"):
        verdict, rows = _read(folder)
    assert verdict == "ok" and sorted(rows.rows["id"]) == ["main-0", "main-1"], rows
    assert "of its main config is trained" in caplog.text and "its extra config" in caplog.text, caplog.text

    _parquet(folder, _text_table("stray"), "stray.parquet")
    verdict, message = _read(folder)
    assert verdict == "error" and "(data/stray.parquet)" in message and "card's configs" in message, message

def test_a_build_folder_of_zero_rows_says_it_holds_no_row(tmp_path):
    """A `save_to_disk` build of zero rows (what the builder wrote, status "ok", for an empty annotation file before
    it refused one): "no training rows", not `load_from_disk`'s "IndexError: list index out of range"."""
    from data_recipes.schema import empty_dataset

    build = tmp_path / "build"
    empty_dataset().save_to_disk(str(build))
    verdict, message = _read(build)
    assert verdict == "error" and message.startswith(f"no training rows in {build}"), message
    assert "IndexError" not in message


def test_null_turns_are_rejected_rows_not_errors(tmp_path):
    rows = [_turns("Fine.", False),
            [{"from": "human", "value": None}, {"from": "gpt", "value": "A."}],
            [{"from": None, "value": "hi"}, {"from": "gpt", "value": "A."}],
            None]
    folder = _parquet(tmp_path / "nulls", pa.table({"id": ["ok", "null-value", "null-role", "null-turns"],
                                                    "conversations": pa.array(rows, pa.list_(TURN))}))
    verdict, training = _read(folder)
    assert verdict == "ok", training
    assert training.rows["id"] == ["ok"]
    rejected = {reason: n for reason, n in training.report.rejected.items() if n}
    assert rejected == {"empty_turn": 1, "unknown_role": 1, "malformed_row": 1}


def test_raw_image_bytes_and_untyped_image_structs_are_read_as_images(tmp_path):
    good, bad = jpeg_bytes(seed=1), b"not an image"
    turns = pa.array([_turns("A."), _turns("B.")], pa.list_(TURN))
    binary = _parquet(tmp_path / "binary", pa.table({"id": ["good", "bad"], "image": pa.array([good, bad]),
                                                     "conversations": turns}))
    struct = _parquet(tmp_path / "struct", pa.table({
        "id": ["good", "bad"], "conversations": turns,
        "image": pa.array([{"bytes": good, "path": None}, {"bytes": bad, "path": None}],
                          pa.struct([("bytes", pa.binary()), ("path", pa.string())]))}))
    for folder in (binary, struct):
        verdict, training = _read(folder)
        assert verdict == "ok", training
        assert training.rows["id"] == ["good"]
        assert training.report.rejected["unreadable_image"] == 1


# --- files past the parser's limits, and things that are not files ----------------------------------------------


def test_json_past_the_parsers_limits_is_one_line(tmp_path, monkeypatch, tiny_model):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    big = tmp_path / "big.jsonl"
    big.write_text(json.dumps(text_row("a")) + "\n" + '{"id": ' + "9" * 5000 + "}\n")
    expected = {deep: f"{deep}: JSON nested too deeply to read", big: f"{big}:2: JSON value cannot be read"}
    for path, words in expected.items():
        verdict, message = _read(path)
        assert verdict == "error" and message.startswith(words), message
        line = cli_error(run_argv("stage2.yaml", tmp_path / "run", tiny_model, path), monkeypatch)
        assert line.startswith(f"data error: {words}"), line


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_pipe_or_device_as_data_is_one_line(kind, tmp_path, monkeypatch, capsys):
    if kind == "fifo":
        path = tmp_path / "rows.json"
        os.mkfifo(path)  # reading it would block forever
    else:
        path = Path(os.devnull)
    verdict, message = _read(path)
    assert verdict == "error" and message.startswith(f"data.path {path} is neither a file nor a folder"), message
    code = recipes_main(["build", "llava_json", "--data-root", str(path.parent), "--out", str(tmp_path / "b"),
                         "--set", f"annotation={path}"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "neither a file nor a folder" in err, err


def test_a_nul_in_an_image_path_is_a_rejected_row(tmp_path):
    write_good_image(tmp_path / "images" / "0.png", (200, 40, 40))
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([image_row("good", "images/0.png"), image_row("nul", "images/0.png\x00.jpg")]))
    verdict, training = _read(path)
    assert verdict == "ok" and training.rows["id"] == ["good"], training
    assert training.report.rejected["missing_image"] == 1
    # Without the image check at the start, training replaces the row instead of failing on it.
    rows = load_training_rows(DataArguments(path=str(path), image_check="none")).rows
    dataset = CrocSupervisedDataset(rows, tiny_croc_processor(), image_root=tmp_path, model_max_length=256)
    sample = dataset[1]
    assert sample["replaced_row"]["id"] == "nul" and sample["replaced_row"]["reason"] == "missing_image"
    report = validate_dataset(rows, tmp_path, image_check="exists")
    assert report.reasons == [None, "missing_image"]


# --- a 50 MB turn -------------------------------------------------------------------------------------------------


def test_a_huge_turn_is_cut_before_tokenising_with_the_same_sample(monkeypatch):
    processor = tiny_croc_processor()
    answer = "the red square sits left of the blue circle. " * 20_000  # 900 KB
    row = {"id": "huge", "image": None, "conversations": _turns(answer, image=False)}
    dataset = CrocSupervisedDataset([row], processor, model_max_length=64)
    uncut = CrocSupervisedDataset([row], processor, model_max_length=64)
    uncut.__dict__["_piece_chars"] = 10**9  # the cached property, replaced: every character tokenised

    seen = []
    assert dataset._piece_chars < len(answer) // 10  # computed before the tokenizer is replaced by the spy
    encode = dataset._tokenizer.__call__

    def spy(texts, **kwargs):
        seen.extend(len(text) for text in texts)
        return encode(texts, **kwargs)

    monkeypatch.setattr(dataset, "_tokenizer", type("Spy", (), {"__call__": staticmethod(spy)})())
    cut_sample, whole_sample = dataset[0], uncut[0]
    assert max(seen) <= dataset._piece_chars + len(dataset._anchor) < len(answer) // 10
    for key in ("input_ids", "labels"):
        assert cut_sample[key].tolist() == whole_sample[key].tolist()
    assert dataset.fit_row(row).verdict == uncut.fit_row(row).verdict == "truncated"


# --- options that name nothing, or a folder that cannot be ---------------------------------------------------------


def test_yaml_with_a_repeated_or_numbered_key_is_one_line(tmp_path, monkeypatch, tiny_model, small_data,
                                                          nothing_loaded):
    config = (Path(run_argv("stage2.yaml", tmp_path, tiny_model, small_data)[0])).read_text()
    repeated = tmp_path / "repeated.yaml"
    repeated.write_text(config + "\nlearning_rate: 1.0e-3\nlearning_rate: 2.0e-3\n")
    numbered = tmp_path / "numbered.yaml"
    numbered.write_text(config + "\n1: x\n")
    for path, words in ((repeated, "key 'learning_rate' is given twice (lines"), (numbered, "key 1 is not a name")):
        argv = [str(path), *run_argv("stage2.yaml", tmp_path / "out", tiny_model, small_data)[1:]]
        message = cli_error(argv, monkeypatch)
        assert message.startswith(f"configuration error: {path}:") and words in message, message


@pytest.mark.parametrize("option", ["output_dir", "hub_dry_run", "resume_from_checkpoint", "data.path"])
def test_an_empty_option_is_refused(option, tmp_path, monkeypatch, tiny_model, small_data, nothing_loaded):
    """`--output_dir=$OUT` with OUT unset: YAML reads the empty value as null, and transformers would write into
    ./trainer_output."""
    message = cli_error([*run_argv("stage2.yaml", tmp_path / "out", tiny_model, small_data), f"--{option}="],
                        monkeypatch)
    assert message == (f"configuration error: --{option} is empty (an unset variable in the command?); give a value, "
                       f"or --{option}=null for the default")


@pytest.mark.parametrize("option", ["output_dir", "hub_dry_run", "resume_from_checkpoint"])
def test_an_empty_folder_in_the_yaml_is_refused(option, tmp_path, monkeypatch, tiny_model, small_data,
                                                nothing_loaded):
    argv = run_argv("stage2.yaml", tmp_path / "out", tiny_model, small_data)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**yaml.safe_load(Path(argv[0]).read_text()), option: ""}))
    argv = [str(config), *(arg for arg in argv[1:] if not arg.startswith(f"--{option}="))]
    message = cli_error(argv, monkeypatch)
    assert message == f"configuration error: {option} is empty (an unset variable in the command?); name a folder"


def test_resuming_from_a_file_says_it_is_a_file(tmp_path, monkeypatch, tiny_model, small_data, no_model_load):
    (tmp_path / "checkpoint-4").write_text("not a folder")
    message = cli_error(run_argv("stage2.yaml", tmp_path / "out", tiny_model, small_data,
                                 f"--resume_from_checkpoint={tmp_path / 'checkpoint-4'}"), monkeypatch)
    assert message == (f"configuration error: resume_from_checkpoint {tmp_path / 'checkpoint-4'} is a file, not a "
                       "checkpoint folder; name the checkpoint-N folder")


def test_a_dry_run_folder_that_cannot_be_created_is_refused_at_the_start(tmp_path, monkeypatch, tiny_model,
                                                                         small_data, nothing_loaded):
    (tmp_path / "a_file").write_text("x")
    dry = tmp_path / "a_file" / "dry"
    message = cli_error(run_argv("stage2.yaml", tmp_path / "out", tiny_model, small_data, f"--hub_dry_run={dry}"),
                        monkeypatch)
    assert message == (f"configuration error: --hub_dry_run {dry} cannot be created: {tmp_path / 'a_file'} is a "
                       "file; choose a folder you can write (nothing was written or deleted)")


def test_an_invalid_hub_repository_id_is_refused_at_the_start(tmp_path, monkeypatch, tiny_model, small_data,
                                                              nothing_loaded, capsys):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # nothing is sent: refused before
    message = cli_error(run_argv("stage2.yaml", tmp_path / "out", tiny_model, small_data, "--push_to_hub",
                                 "--hub_model_id=bad id!!/x/y", "--hub_token=hf_x"), monkeypatch)
    assert message.startswith("configuration error: --hub_model_id 'bad id!!/x/y' is not a valid Hub repository id"), \
        message
    code = recipes_main(["build", "llava_json", "--data-root", str(small_data.parent), "--out", str(tmp_path / "b"),
                         "--push-to-hub", "bad id!!"])
    err = capsys.readouterr().err
    assert code == 1 and "is not a valid Hub dataset repo id" in err and not (tmp_path / "b").exists(), err


def test_a_build_into_a_file_or_under_one_is_one_line_before_reading(tmp_path, capsys, small_data):
    (tmp_path / "a_file").write_text("x")
    for extra in (["--out", str(tmp_path / "a_file")],
                  ["--out", str(tmp_path / "b"), "--hub-folder", str(tmp_path / "a_file" / "hub")]):
        code = recipes_main(["build", "llava_json", "--data-root", str(small_data.parent), *extra])
        err = capsys.readouterr().err
        assert code == 1 and err.count("\n") == 1 and str(tmp_path / "a_file") in err, err
        assert (tmp_path / "a_file").read_text() == "x"


def test_a_tilde_publish_folder_is_the_home_folder(tmp_path, monkeypatch, tiny_model, small_data):
    """`--hub_dry_run=~/dry` (no shell expands a `~` after `=`): written under $HOME, never into a `./~` folder."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    train_module.main(run_argv("stage2.yaml", tmp_path / "out", tiny_model, small_data, "--max_steps=1",
                               "--hub_dry_run=~/dry"))
    assert (home / "dry" / "model.safetensors").is_file()
    assert not (tmp_path / "~").exists()


def test_a_leaking_dry_run_leaves_nothing_to_upload_by_hand(tmp_path, tiny_model, small_data):
    out, dry = tmp_path / "out", tmp_path / "dry"
    trainer = train_module.main(run_argv("stage2.yaml", out, tiny_model, small_data, "--max_steps=1"))
    (out / "notes.md").write_text(f"trained from {small_data}\n")
    with pytest.raises(ConfigError, match="an absolute local path in notes.md"):
        trainer_hub.hub_dry_run(trainer, dry, {"output_dir": str(out)})
    assert not dry.exists()  # scanned before anything is written there: no folder, no file to upload by hand


def test_a_data_path_that_is_no_local_path_says_so_before_the_hub_error(tmp_path, monkeypatch):
    """`builds/lcs558k` before the build ran (or from another folder) reads as a Hub dataset id; offline, the one line
    says first that nothing is at that local path, not only that the Hub could not be reached."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    verdict, message = _read(Path("builds/lcs558k"))
    assert verdict == "error", message
    assert message.startswith(f"builds/lcs558k is no local folder or file (nothing at {tmp_path / 'builds/lcs558k'})")
    # and how such a folder is made (a newcomer met it running the quick start before building the data)
    assert message.endswith("a recipe build is made with `python -m data_recipes build RECIPE --data-root DIR --out "
                            "builds/lcs558k` (docs/DATA.md)"), message


@pytest.mark.parametrize(("value", "read_as"), [("runs/try #2", "'runs/try'"), ("~", "null"), ("#2", "null")])
def test_an_option_yaml_reads_as_less_than_its_text_is_refused(value, read_as, tmp_path, monkeypatch, tiny_model,
                                                               small_data, nothing_loaded):
    """`--output_dir='runs/try #2'` trained into runs/try (` #` starts a YAML comment), `--output_dir=~` into
    ./trainer_output (YAML's null), without a word; a quoted value is the text as given."""
    argv = run_argv("stage2.yaml", tmp_path / "out", tiny_model, small_data)
    message = cli_error([*argv, f"--output_dir={value}"], monkeypatch)
    assert message.startswith(f"configuration error: --output_dir={value} reads as {read_as} in YAML"), message
    assert f"--output_dir=\"'{value}'\"" in message
    raw = load_raw_config([*argv, f"--output_dir='{tmp_path / 'runs' / 'try #2'}'"])
    assert raw["training"]["output_dir"] == str(tmp_path / "runs" / "try #2")



@pytest.mark.parametrize(("override", "read_as"), [
    ('--model.lora_target_modules=[".*layers.0.* #first", q_proj]', [".*layers.0.* #first", "q_proj"]),
    ('--accelerator_config={"note": "try #2"}', {"note": "try #2"}),
    ("--run_name='exp #3'", "exp #3"),
])
def test_a_hash_inside_a_quoted_item_is_text_not_a_comment(override, read_as, tmp_path):
    """` #` inside a quoted list item or mapping value is text, which YAML keeps: the check for a value read as less
    than its text refused such a list or mapping (a search of the text for ` #`), and its hint, quoting the whole
    value, would have made it a string (found by a hostile reviewer). A comment after the value is still refused."""
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  name_or_path: m\ndata:\n  path: d\n", encoding="utf-8")
    raw = load_raw_config([str(config), override])
    key = override[2:].split("=", 1)[0]
    section, name = key.split(".", 1) if "." in key else ("training", key)
    assert raw[section][name] == read_as
    with pytest.raises(ConfigError, match="reads as"):
        load_raw_config([str(config), "--model.lora_target_modules=[q_proj, v_proj] #k_proj"])

def test_a_tilde_hub_layout_folder_is_read_as_the_folder(tmp_path, monkeypatch):
    """`data.path=~/pushed` (no shell expands a `~` after `=`): the folder was found, then handed to `load_dataset`
    as written, which read it as a Hub id (offline: refused; online: another dataset). `~/rows.json` was read."""
    home = tmp_path / "home"
    _parquet(home / "pushed", pa.table({"id": ["a"], "conversations": pa.array([_turns("A.", image=False)],
                                                                              pa.list_(TURN))}))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    verdict, rows = _read(Path("~/pushed"))
    assert verdict == "ok", rows
    assert rows.report.source == str(home / "pushed") and len(rows.rows) == 1


def test_a_tilde_checkpoint_is_the_home_folders(tmp_path, monkeypatch):
    """`--resume_from_checkpoint=~/out/checkpoint-4` was refused as not existing (the other paths take a `~`)."""
    from trainer.validation import check_resume

    checkpoint = tmp_path / "home" / "out" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    training = {"resume_from_checkpoint": "~/out/checkpoint-4"}
    check_resume(training)
    assert training["resume_from_checkpoint"] == str(checkpoint)



@pytest.mark.parametrize("option", ["resume_from_checkpoint", "data.path", "model.name_or_path", "output_dir"])
def test_a_home_folder_of_no_user_is_one_line(option, tmp_path, monkeypatch, tiny_model, small_data, nothing_loaded):
    """`~user/...` for a user this machine lacks (a typo, a path copied from another cluster): the checks that expand
    it ended in `Path.expanduser`'s "RuntimeError: Could not determine home directory." traceback (the resume's since
    it took a `~`, found by a hostile reviewer), and transformers kept such an output_dir as a `./~user` folder."""
    monkeypatch.chdir(tmp_path)
    argv = run_argv("stage2.yaml", tmp_path / "out", tiny_model, small_data)
    message = cli_error([*argv, f"--{option}=~no-such-user-here/run"], monkeypatch)
    assert message == (f"configuration error: {option} ~no-such-user-here/run: ~no-such-user-here is the home folder "
                       "of no user on this machine; give the folder's path"), message
    assert not (tmp_path / "~no-such-user-here").exists()

@pytest.mark.parametrize("option", ["output_dir", "hub_dry_run"])
def test_an_unexpanded_variable_in_an_output_folder_is_refused(option, tmp_path, monkeypatch, tiny_model, small_data,
                                                               nothing_loaded):
    """`output_dir: $SCRATCH/run` (a YAML file expands nothing) trained into a new `./$SCRATCH/run` folder without a
    word; a folder that really has such a name is taken."""
    monkeypatch.chdir(tmp_path)
    argv = run_argv("stage2.yaml", tmp_path / "out", tiny_model, small_data)
    message = cli_error([*argv, f"--{option}=$SCRATCH/run"], monkeypatch)
    assert message == (f"configuration error: {option} $SCRATCH/run holds $SCRATCH, which nothing expands here (the "
                       "shell does outside quotes, a YAML file never); give the folder's path itself")
    assert not (tmp_path / "$SCRATCH").exists()
    (tmp_path / "${SCRATCH}").mkdir()
    _, _, args = build_arguments(load_raw_config([*argv, f"--{option}=${{SCRATCH}}"]))
    assert getattr(args, option) == "${SCRATCH}"


@pytest.mark.parametrize("option", ["data.path", "model.name_or_path", "resume_from_checkpoint", "data.image_root"])
def test_a_name_longer_than_a_file_system_takes_is_one_line(option, tmp_path, monkeypatch, tiny_model, small_data,
                                                            nothing_loaded):
    """A path option with a 300-byte folder name: `Path.exists()` raised "File name too long" (an OSError
    traceback) from the first check that looked at it."""
    long = tmp_path / ("é" * 150) / "rows.json"
    message = cli_error([*run_argv("stage2.yaml", tmp_path / "out", tiny_model, small_data), f"--{option}={long}"],
                        monkeypatch)
    assert message == (f"configuration error: {option}: the name {'é' * 40}... is 300 bytes long, over the 255 a file "
                       "or folder name may have")
