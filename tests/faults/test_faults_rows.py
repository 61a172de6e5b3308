"""Issue 20, every row accounted for: rows longer than `model_max_length` are decided from their tokens before training
(trained whole, trained cut, or rejected with a reason inside the reject budget), a micro-batch never fails because
of its rows, and every source (LLaVA file, build folder, pushed dataset, folder of Parquet files) goes through the
same validator with the same options."""

from __future__ import annotations

import io
import json
import logging
import shutil
from types import SimpleNamespace

import datasets
import pytest
import transformers
from fault_cases import image_row, text_row, write_good_image
from PIL import Image
from run_cases import cli_exit, run_argv, write_small_folder

from croc_testing.tiny import tiny_croc_processor
from data_recipes import build_recipe
from trainer import train as train_module
from trainer.checkpoint_io import write_manifest
from trainer.data import CrocSupervisedDataset
from trainer.data_loading import fit_rows, load_training_rows
from trainer.data_report import DataReport
from trainer.resolve import resolve_config


def _long_text_rows() -> list[dict]:
    """Text rows as LLaVA-665K's ShareGPT conversations are: 4 whose first question alone is longer than 256 tokens
    (nothing can be learnt from them at that length), 3 whose answer is (cut, and trained), 3 short."""
    essay = " ".join(f"word{i}" for i in range(400))
    rows = [text_row(f"long-question-{i}", "Yes.") for i in range(4)]
    for row in rows:
        row["conversations"][0]["value"] = f"Read this: {essay} Is it long?"
    rows += [text_row(f"long-answer-{i}", f"Here it is: {essay}") for i in range(3)]
    rows += [text_row(f"short-{i}", f"{i}.") for i in range(3)]
    return rows


@pytest.fixture(scope="module")
def long_rows(tmp_path_factory):
    root = tmp_path_factory.mktemp("long_rows")
    small = json.loads(write_small_folder(root).read_text())
    rows = [row for row in small if row["id"].startswith("img")] + _long_text_rows()
    path = root / "with_long_rows.json"
    path.write_text(json.dumps(rows))
    return path


@pytest.mark.parametrize("config", ["stage2.yaml", "stage1_5.yaml"])
def test_long_rows_grouped_together_do_not_end_the_run_and_are_all_counted(tiny_model, long_rows, tmp_path, config):
    """Before: the length-grouped sampler put the too-long text rows in one micro-batch and stage 2 ended with
    `every row of this batch was dropped`; stage 1.5 dropped them silently, counted nowhere."""
    out = tmp_path / "run"
    train_module.main(run_argv(config, out, tiny_model, long_rows, "--group_by_modality_length=true",
                               "--max_steps=3", "--data.max_reject_fraction=0.5"))
    report = json.loads((out / "data_report.json").read_text())
    assert report["rows_read"] == 16
    assert {reason: n for reason, n in report["rejected"].items() if n} == {"too_long": 4}
    assert report["truncated"] == 3 and report["truncated_examples"] == [f"long-answer-{i}" for i in range(3)]
    lines = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == [f"long-question-{i}" for i in range(4)]
    assert all(line["reason"] == "too_long" and "its first answer token would be cut" in line["detail"]
               for line in lines)
    # 16 read = 4 rejected + 12 trained (3 of them cut); 3 steps of 4 rows asked for, none replaced.
    assert report["rows_seen"] == 12 and not any(report["replaced"].values())


def test_rows_the_start_counted_cut_are_not_counted_again_in_training(tiny_model, long_rows, tmp_path, capsys):
    """Before: every fixed-image-token row the start had counted cut was counted again each time training asked for
    it (`truncated_in_training`), and the final line said "3 trained cut ...; in training ..., 3 cut to fit" for 3
    cut rows."""
    out = tmp_path / "run"
    train_module.main(run_argv("stage2.yaml", out, tiny_model, long_rows, "--group_by_modality_length=false",
                               "--max_steps=-1", "--num_train_epochs=1", "--data.max_reject_fraction=0.5"))
    report = json.loads((out / "data_report.json").read_text())
    # One epoch asks for each of the 12 kept rows once, the 3 cut ones among them.
    assert report["rows_seen"] == 12 and report["truncated"] == 3
    assert report["truncated_in_training"] == 0
    log = capsys.readouterr().err  # the run's logging replaces caplog's handler
    assert "in training 0 of 12 rows seen could not be used" in log  # the final line, which said it again
    assert "cut to fit" not in log


def test_too_many_rows_that_cannot_fit_stop_the_run_before_the_model_loads(tiny_model, long_rows, tmp_path,
                                                                           monkeypatch, capsys, no_model_load):
    status, message = cli_exit(run_argv("stage2.yaml", tmp_path / "run", tiny_model, long_rows), monkeypatch,
                               capsys)
    assert status == 1 and message.startswith(f"data error: 4 of 16 rows of {long_rows} rejected (too_long=4), more "
                                              "than data.max_reject_fraction=0.01"), message
    assert len((tmp_path / "run" / "rejects.jsonl").read_text().splitlines()) == 4  # the file the message names


@pytest.mark.parametrize("cause", ["missing_image", "too_long"])
def test_a_source_whose_every_row_is_rejected_writes_the_rejects_file_it_names(tiny_model, long_rows, tmp_path,
                                                                              monkeypatch, capsys, no_model_load,
                                                                              cause):
    """Before: a budget that lets every row go (or a one-row source) ended in "no training rows ... see
    <output_dir>/rejects.jsonl", a file never written (by the validator's rejects, and by the length check's)."""
    if cause == "missing_image":
        rows = [image_row(f"gone-{i}", f"images/gone-{i}.png") for i in range(2)]
    else:
        rows = [row for row in json.loads(long_rows.read_text()) if row["id"].startswith("long-question")]
    data = tmp_path / "rows.json"
    data.write_text(json.dumps(rows))
    status, message = cli_exit(run_argv("stage2.yaml", tmp_path / "run", tiny_model, data,
                                        "--data.max_reject_fraction=1"), monkeypatch, capsys)
    rejects = tmp_path / "run" / "rejects.jsonl"
    assert status == 1 and message.startswith("data error: no training rows") and str(rejects) in message, message
    lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == sorted(row["id"] for row in rows)
    assert {line["reason"] for line in lines} == {cause}


def test_the_length_pass_in_several_processes_equals_one(long_rows):
    processor = tiny_croc_processor()
    rows = datasets.Dataset.from_list(json.loads(long_rows.read_text()) * 700)  # above the per-process threshold
    verdicts = []
    for num_proc in (1, 2):
        report = DataReport()
        dataset = fit_rows(CrocSupervisedDataset(rows, processor, "vicuna_v1", long_rows.parent, 256), report,
                           num_proc=num_proc)
        verdicts.append((len(dataset), report.truncated, dict(report.rejected)))
    assert verdicts[0] == verdicts[1] and verdicts[0][0] == 12 * 700


# --- every source, one validator ------------------------------------------------------------------------------


def _png_bytes(size=(56, 56), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def parquet_folder(tmp_path_factory):
    """A folder of Parquet files as someone else's pushed dataset is: images embedded (`datasets.Image`), with a
    role the templates do not know, a 1 x 40000 banner and an empty image among good rows."""
    folder = tmp_path_factory.mktemp("parquet") / "pushed"
    good = [image_row(f"img-{i}", f"{i}.png", f"Colour {i}.") for i in range(5)]
    rows = [{**row, "image": {"bytes": _png_bytes(colour=(40 * i, 90, 90)), "path": row["image"]}}
            for i, row in enumerate(good)]
    rows.append({**image_row("banner", "banner.png"), "image": {"bytes": _png_bytes((1, 40_000)), "path": "b.png"}})
    rows.append({**image_row("empty-image", "e.png"), "image": {"bytes": b"", "path": "e.png"}})
    role = text_row("user-role")
    role["conversations"][0]["from"] = "user"
    rows += [role, text_row("text-0"), text_row("text-1")]
    features = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image(),
                                  "conversations": datasets.List({"from": datasets.Value("string"),
                                                                  "value": datasets.Value("string")})})
    (folder / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder


def _rows(tmp_path, tiny_model, data, *extra):
    model_args, data_args, args, _ = resolve_config(run_argv("stage2.yaml", tmp_path / "run", tiny_model, data,
                                                             *extra))
    return load_training_rows(data_args, args)


def test_a_pushed_dataset_is_validated_like_a_llava_file(parquet_folder, tiny_model, tmp_path):
    """Before: the log said pushed rows were validated when built; the unknown role crashed the run mid-training."""
    rows = _rows(tmp_path, tiny_model, parquet_folder, "--data.image_check=header", "--data.max_reject_fraction=0.5")
    assert {reason: n for reason, n in rows.report.rejected.items() if n} == {
        "unknown_role": 1, "extreme_aspect_ratio": 1, "unreadable_image": 1}
    assert rows.report.rows_read == 10 and sorted(rows.rows["id"]) == sorted(
        [f"img-{i}" for i in range(5)] + ["text-0", "text-1"])
    lines = {line["id"]: line for line in map(json.loads, rows.report.start_rejects and [
        json.dumps(row, default=str) for row in rows.report.start_rejects])}
    assert lines["banner"]["image"] == "b.png"  # the file name, never the bytes


def test_strict_is_honoured_for_a_pushed_dataset(parquet_folder, tiny_model, tmp_path, monkeypatch, capsys,
                                                 no_model_load):
    status, message = cli_exit(run_argv("stage2.yaml", tmp_path / "run", tiny_model, parquet_folder,
                                        "--data.strict=true"), monkeypatch, capsys)
    assert status == 1 and message.startswith(f"data error: 2 of 10 rows of {parquet_folder} rejected "
                                              "(unknown_role=1, unreadable_image=1), more than none (data.strict="
                                              "true)"), message


def test_a_pushed_dataset_trains_on_its_valid_rows(parquet_folder, tiny_model, tmp_path):
    out = tmp_path / "run"
    train_module.main(run_argv("stage2.yaml", out, tiny_model, parquet_folder, "--max_steps=2",
                               "--data.max_reject_fraction=0.5"))
    report = json.loads((out / "data_report.json").read_text())
    # The banner passes the start's `exists` check and is refused from its header when training reads it.
    assert report["rejected"]["unknown_role"] == 1 and report["rejected"]["unreadable_image"] == 1
    assert report["rows_seen"] == 8


def test_a_build_whose_images_moved_is_checked_at_the_start(tiny_model, tmp_path):
    source = tmp_path / "source"
    write_small_folder(source)
    build_recipe("llava_json", source, tmp_path / "build", params={"annotation": "rows.json"})
    (source / "images" / "2.png").unlink()  # after the build
    shutil.rmtree(source / "images" / "extra", ignore_errors=True)
    rows = _rows(tmp_path, tiny_model, tmp_path / "build", "--data.max_reject_fraction=0.5")
    assert {reason: n for reason, n in rows.report.rejected.items() if n} == {"missing_image": 1}
    assert rows.report.rows_read == 8 and "img-2" not in rows.rows["id"]


def test_a_parquet_folder_without_conversations_is_one_line(tiny_model, tmp_path, monkeypatch, capsys, no_model_load):
    folder = tmp_path / "other"
    folder.mkdir()
    datasets.Dataset.from_list([{"text": "hello"}]).to_parquet(str(folder / "part-0.parquet"))
    status, message = cli_exit(run_argv("stage2.yaml", tmp_path / "run", tiny_model, folder), monkeypatch, capsys)
    assert (status, message) == (1, f"data error: {folder}: no `conversations` column (found ['text']); each row "
                                    "needs `conversations`: a list of {from, value} turns (from = human/gpt), and "
                                    "optionally `id` and `image` (a path string or a datasets.Image)")


def test_every_image_row_replacement_keeps_its_modality(tmp_path):
    """A text row that cannot be used is replaced by a text row, an image row by an image row (a batch keeps its
    modality, which the grouped sampler chose)."""
    write_good_image(tmp_path / "a.png", (10, 200, 10))
    rows = [text_row("bad-text"), image_row("img", "a.png"), text_row("good-text", "Fine.")]
    rows[0]["conversations"][0]["value"] = " ".join(["long"] * 400)
    dataset = CrocSupervisedDataset(rows, tiny_croc_processor(), "vicuna_v1", tmp_path, 256)
    sample = dataset[0]
    assert sample["replaced_row"]["id"] == "bad-text" and sample["pixel_values"] is None


def test_a_replacement_reads_only_the_candidates_it_tries(tmp_path, monkeypatch):
    """A row that cannot be used is replaced by one of the next `MAX_REPLACEMENT_TRIES` rows of its kind, wrapping
    round to the first ones; finding them read that many indices, not the whole index: it joined every row of the
    kind (1.5M indices, about 0.6 ms) for each replaced row of a long run, O(rows) per replacement."""
    import numpy as np

    from trainer.data import MAX_REPLACEMENT_TRIES

    dataset = CrocSupervisedDataset([text_row(f"t-{i}") for i in range(3)], tiny_croc_processor(), "vicuna_v1",
                                    tmp_path, 256)
    dataset.__dict__["_text_rows"] = np.arange(0, 2_000, 2)  # 1,000 text rows: the even indices
    built = []
    concatenate = np.concatenate
    monkeypatch.setattr(np, "concatenate", lambda arrays, *a, **k: built.append(concatenate(arrays, *a, **k)) or
                        built[-1])
    assert dataset._following_rows(10, image=False) == list(range(12, 12 + 2 * MAX_REPLACEMENT_TRIES, 2))
    wrapped = dataset._following_rows(1_990, image=False)  # 4 rows after it, then the first ones of its kind
    assert wrapped == [1_992, 1_994, 1_996, 1_998, *range(0, 2 * (MAX_REPLACEMENT_TRIES - 4), 2)]
    assert all(array.size <= MAX_REPLACEMENT_TRIES for array in built), [array.size for array in built]
    # A kind with fewer rows than the tries: each other row of it once, the row itself never.
    dataset.__dict__["_text_rows"] = np.array([1, 4, 9])
    assert dataset._following_rows(4, image=False) == [9, 1]


def test_recording_a_replaced_row_does_not_go_over_every_earlier_one(monkeypatch):
    """Each step that replaced a row checked it against the rows replaced before (a row replaced again in a later
    epoch is written once) by building a set of all of them: O(bad rows) per step, about 0.5 ms a step at the 15,000
    a 1.5M-row run may replace within its budget. The set is kept; a restored report builds it again once."""
    class Counted(list):
        passes = 0

        def __iter__(self):
            Counted.passes += 1
            return super().__iter__()

    report = DataReport(source="rows.json", rows_read=10_000, logs=False, writes=False, max_reject_fraction=0.5)
    report.replaced_rows = Counted()
    for step in range(1, 201):
        report.record(4, [{"id": f"r{step % 150}", "index": step % 150, "image": "r.png",
                           "reason": "unreadable_image", "detail": "truncated"}], step=step)
    assert Counted.passes <= 1
    assert len(report.replaced_rows) == 150 and report.replaced["unreadable_image"] == 200
    assert [row["step"] for row in report.replaced_rows[:2]] == [1, 2]  # a row replaced again is written once


def test_a_resume_does_not_open_every_image_again(tiny_model, tmp_path, monkeypatch, caplog):
    """A resume trains on the rows the interrupted run kept (its record of the start check): checking every image
    again only warns of files gone since. With data.image_check=decode it decoded every image on every resume (hours
    for a 1.2M-image mixture, each time a multi-day run is preempted); a stat of each file says what the warning
    needs. A fresh start still decodes each image once."""
    from data_recipes import validation

    data = write_small_folder(tmp_path / "data")
    opened = []
    decode = validation.load_image
    monkeypatch.setattr(validation, "load_image", lambda path, *a, **k: (opened.append(path), decode(path, *a, **k)))
    fresh = _rows(tmp_path, tiny_model, data, "--data.image_check=decode")
    assert len(opened) == 6 and fresh.report.rows_read == 8
    checkpoint = tmp_path / "run" / "checkpoint-3"  # what the interrupted run left: its record of the start check
    checkpoint.mkdir(parents=True)
    (checkpoint / "croc_run.json").write_text(json.dumps({"start_rejections": {}}))
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    (data.parent / "images" / "2.png").unlink()  # gone since: still noticed
    opened.clear()
    resumed = _rows(tmp_path, tiny_model, data, "--data.image_check=decode", f"--resume_from_checkpoint={checkpoint}")
    assert opened == [] and resumed.report.rows_read == 8 and len(resumed.rows) == 8
    assert "1 row(s) the interrupted run trained with now fail the start check (first: row 2, missing_image" \
        in caplog.text


def test_a_resume_says_which_rows_failing_now_are_replaced_and_which_train_as_before(caplog):
    """Rows the interrupted run kept that fail the start check now: an image gone since fails again when training
    loads it and is replaced; a row failing a text rule this version added (an answer of invisible characters only)
    still reads and trains as before, which the warning said would be replaced too while the report counted none."""
    from data_recipes.validation import ValidationReport
    from trainer.data_loading import _as_the_run_started

    fresh = ValidationReport(["empty_turn", None, "missing_image", "empty_turn"],
                             ["turn 2 is empty", "", "images/2.png", "turn 2 is empty"])
    with caplog.at_level(logging.WARNING, logger="trainer.data_loading"):
        kept = _as_the_run_started(fresh, {})
    assert kept.reasons == [None] * 4
    assert [record.getMessage() for record in caplog.records] == [
        "1 row(s) the interrupted run trained with now fail the start check (first: row 2, missing_image: "
        "images/2.png): they keep their place and are replaced when training meets them, counted in the data report",
        "2 row(s) the interrupted run trained with now fail the start check (first: row 0, empty_turn: turn 2 is "
        "empty): a check this version added or tightened; they keep their place and train as the interrupted run "
        "trained them, so that it stays on its loss curve (a new run rejects them)"]


def test_the_passes_over_every_row_before_training_say_how_far_they_are(long_rows, monkeypatch, caplog):
    """The start check, its image check and the length check each take minutes on a 1.5M-row mixture (about 17
    minutes in all for mix665K on one process): they said nothing until the end, which looks like a hang. Each logs
    its progress (every `PROGRESS_SECONDS`; every batch here)."""
    import logging

    from data_recipes import validation

    monkeypatch.setattr(validation, "PROGRESS_SECONDS", 0.0)
    rows = datasets.Dataset.from_list(json.loads(long_rows.read_text()) * 700)  # two length batches and more
    with caplog.at_level(logging.INFO):
        report = validation.validate_dataset(rows.select(range(16)), long_rows.parent, image_check="exists",
                                             batch_size=8)
        fit_rows(CrocSupervisedDataset(rows, tiny_croc_processor(), "vicuna_v1", long_rows.parent, 256), DataReport())
    assert report.num_rejected == 0
    lines = [record.getMessage() for record in caplog.records]
    assert "rows checked: 8 of 16" in lines and "image files checked: 6 of 6" in lines, lines
    assert f"rows fitted to model_max_length: 8,192 of {len(rows):,}" in lines, lines


# --- the length check on a resume: the recorded verdicts, never stale ones ---------------------------------------


def _tokenising_calls(monkeypatch) -> list[int]:
    """The sizes of the batches the tokenising fit (`CrocSupervisedDataset.fit_rows`) is asked for, from now on."""
    calls: list[int] = []
    original = CrocSupervisedDataset.fit_rows

    def counted(self, rows):
        calls.append(len(rows))
        return original(self, rows)

    monkeypatch.setattr(CrocSupervisedDataset, "fit_rows", counted)
    return calls


_RESUMED = ("--save_strategy=steps", "--save_steps=1", "--data.max_reject_fraction=0.5", "--max_steps=2")


@pytest.fixture(scope="module")
def long_rows_run(tiny_model, long_rows, tmp_path_factory):
    """A finished 2-step run on rows some of which are cut and some rejected, with a checkpoint at each step."""
    out = tmp_path_factory.mktemp("long_rows_run") / "run"
    train_module.main(run_argv("stage2.yaml", out, tiny_model, long_rows, *_RESUMED))
    return out


def _resume_from_step_1(first, out, damage=None):
    """`first`'s checkpoint-1 alone in `out`, as a run killed after step 1 leaves it; `damage` edits its record (the
    manifest written again, as if the record had been written so)."""
    shutil.copytree(first / "checkpoint-1", out / "checkpoint-1")
    if damage is not None:
        record = json.loads((out / "checkpoint-1" / "croc_run.json").read_text())
        damage(record)
        (out / "checkpoint-1" / "croc_run.json").write_text(json.dumps(record))
        write_manifest(out / "checkpoint-1")
    return out


def _reports_equal(out, first) -> None:
    report, expected = (json.loads((folder / "data_report.json").read_text()) for folder in (out, first))
    assert report.pop("rejects_file") == str(out / "rejects.jsonl")
    expected.pop("rejects_file")
    assert report == expected
    assert (out / "rejects.jsonl").read_text() == (first / "rejects.jsonl").read_text()
    assert json.loads((out / "croc_run.json").read_text())["fit_verdicts"] == \
        json.loads((first / "croc_run.json").read_text())["fit_verdicts"]


def test_a_resume_on_unchanged_inputs_takes_the_recorded_length_check(long_rows_run, tiny_model, long_rows, tmp_path,
                                                                      monkeypatch, capsys):
    """Before: every resume tokenised every row again (749 s of a 944 s start on mix665K, on every preemption). The
    record holds the verdicts and what they were decided from; a resume on the same inputs tokenises nothing and
    reports, rejects and trains exactly as the first run did."""
    recorded = json.loads((long_rows_run / "checkpoint-1" / "croc_run.json").read_text())["fit_verdicts"]
    assert len(recorded["truncated"]) == 3 and [entry[1] for entry in recorded["rejected"]] == ["too_long"] * 4
    out = _resume_from_step_1(long_rows_run, tmp_path / "run")
    calls = _tokenising_calls(monkeypatch)
    capsys.readouterr()
    train_module.main(run_argv("stage2.yaml", out, tiny_model, long_rows, *_RESUMED))
    err = capsys.readouterr().err
    assert calls == [] and "3 truncated, 4 rejected" in err and "nothing tokenised" in err, err
    assert f"resuming from {out / 'checkpoint-1'}" in err
    _reports_equal(out, long_rows_run)


def _missing(record):
    del record["fit_verdicts"]


def _corrupt(record):
    record["fit_verdicts"]["truncated"] = [99, 1]


@pytest.mark.parametrize("damage, said", [(_missing, "holds no length-check verdicts (written before they were recorded)"),
                                          (_corrupt, "the recorded length-check verdicts cannot be read")])
def test_a_record_without_readable_verdicts_fits_every_row_again(long_rows_run, tiny_model, long_rows, tmp_path,
                                                                 monkeypatch, capsys, damage, said):
    """A checkpoint written before the verdicts were recorded, or whose verdicts do not read: one line, the full
    length check, and the same report as the first run (never a traceback, never a verdict guessed)."""
    out = _resume_from_step_1(long_rows_run, tmp_path / "run", damage)
    calls = _tokenising_calls(monkeypatch)
    capsys.readouterr()
    train_module.main(run_argv("stage2.yaml", out, tiny_model, long_rows, *_RESUMED))
    err = capsys.readouterr().err
    assert calls and f"{said}: every row is fitted to model_max_length again" in err, err
    assert f"resuming from {out / 'checkpoint-1'}" in err
    _reports_equal(out, long_rows_run)


def _fit_in_a_run(rows, folder, processor=None, template="vicuna_v1", max_length=256, aspect="pad", rank=None):
    """`_fitted` as a run on one process (or rank `rank` of two) resuming from `folder`'s checkpoints does it: (rows
    kept, the report's counts, the verdicts)."""
    from trainer.data_loading import _fitted

    args = SimpleNamespace(output_dir=str(folder), resume_from_checkpoint=None, auto_resume=True,
                           world_size=1 if rank is None else 2, process_index=rank or 0, image_aspect_ratio=aspect)
    dataset = CrocSupervisedDataset(rows, processor or tiny_croc_processor(), template, folder, max_length)
    report = DataReport()
    kept, verdicts = _fitted(dataset, report, args)
    return len(kept), report.truncated, report.truncated_examples, dict(report.rejected), verdicts


def _with_an_added_token():
    processor = tiny_croc_processor()
    processor.tokenizer.add_tokens(["<extra_token>"])
    return processor


def _edited_row(rows):
    rows = json.loads(json.dumps(rows))
    rows[-1]["conversations"][1]["value"] += " Or so."
    return rows


@pytest.mark.parametrize("part, change", [
    ("tokenizer", lambda rows, monkeypatch: {"processor": _with_an_added_token()}),
    ("model_max_length", lambda rows, monkeypatch: {"max_length": 300}),
    ("template", lambda rows, monkeypatch: {"template": "plain"}),
    ("rows", lambda rows, monkeypatch: {"rows": _edited_row(rows)}),
    ("image_aspect_ratio", lambda rows, monkeypatch: {"aspect": "anyres"}),
    # an upgrade of the library that tokenises changes the rule (as an edit of the code that fits would)
    ("rule", lambda rows, monkeypatch: monkeypatch.setattr(transformers, "__version__", "99.0.0") or {}),
])
def test_any_changed_input_of_the_length_check_fits_every_row_again(long_rows, tmp_path, monkeypatch, caplog, part,
                                                                    change):
    """The verdicts are reused only when every input they were decided from is the same (the rows, the tokenizer, the
    template, model_max_length, the image tokens, the fit rule's version); any one changed: the full check, and the
    log names what changed."""
    from trainer.run_record import FIT_VERDICTS, write_run_record

    rows = json.loads(long_rows.read_text())
    first = _fit_in_a_run(rows, tmp_path)
    (tmp_path / "checkpoint-1").mkdir()
    write_run_record(tmp_path / "checkpoint-1", {FIT_VERDICTS: first[-1]})
    calls = _tokenising_calls(monkeypatch)
    assert _fit_in_a_run(rows, tmp_path) == first and calls == []
    kwargs = change(rows, monkeypatch)
    with caplog.at_level(logging.INFO, logger="trainer.data_loading"):
        _fit_in_a_run(kwargs.pop("rows", rows), tmp_path, **kwargs)
    assert calls, part
    assert f"inputs changed since they were recorded ({part})" in caplog.text, caplog.text


def test_the_other_processes_take_the_verdicts_the_main_process_reused(long_rows, tmp_path, monkeypatch):
    """With several processes the main one decides (here: takes the recorded verdicts) and sends them; the others
    tokenise nothing either and count the same report."""
    import accelerate.utils

    from trainer.run_record import FIT_VERDICTS, write_run_record

    rows = json.loads(long_rows.read_text())
    first = _fit_in_a_run(rows, tmp_path)
    (tmp_path / "checkpoint-1").mkdir()
    write_run_record(tmp_path / "checkpoint-1", {FIT_VERDICTS: first[-1]})
    sent: list = []

    def broadcast(payload, from_process=0):  # rank 0 sends first, rank 1 receives what it sent
        if payload[0] is None:
            payload[0] = sent[0]
        else:
            sent.append(payload[0])

    monkeypatch.setattr(accelerate.utils, "broadcast_object_list", broadcast)
    calls = _tokenising_calls(monkeypatch)
    assert _fit_in_a_run(rows, tmp_path, rank=0) == first
    assert _fit_in_a_run(rows, tmp_path, rank=1) == first and calls == []


def test_the_ids_of_the_cut_rows_are_read_as_one_column(monkeypatch):
    """Naming the cut and rejected rows read the `id` column as `datasets` 5 hands it, a lazy column formatted row
    by row: about 10 s of a 2-minute resume's start at mix665K (after the length check took its recorded verdicts,
    in 0.1 s), and as long again on a first start. The column is read at once, in the rows' order after a select."""
    from trainer.data_loading import _ids

    rows = datasets.Dataset.from_dict({"id": [f"row-{i}" for i in range(6)], "n": list(range(6))}).select([5, 0, 3])

    def row_by_row(self):
        raise AssertionError("the ids were read row by row")

    monkeypatch.setattr(datasets.Dataset, "__iter__", row_by_row)
    assert _ids(rows) == ["row-5", "row-0", "row-3"]
    assert _ids(datasets.Dataset.from_dict({"id": [7, 8]})) == ["7", "8"]
    assert _ids(datasets.Dataset.from_dict({"n": [7, 8]})) == ["0", "1"]
    assert _ids([{"id": "a"}, {}]) == ["a", "1"]


@pytest.mark.parametrize("recorded", [None, [], {"key": {}}, {"key": {}, "rows": 16, "truncated": [3, 2], "rejected": [],
                                                             "unknown": 0}])
def test_verdicts_that_are_not_ones_are_not_used(recorded):
    from trainer.data_loading import _well_formed

    assert not _well_formed(recorded, 16)
    good = {"key": {"rows": "x"}, "rows": 16, "truncated": [2, 3], "rejected": [[4, "too_long", "d"]], "unknown": 0}
    assert _well_formed(good, 16)
    for bad in ({**good, "rows": 15}, {**good, "truncated": [2, 4]}, {**good, "rejected": [[4, "bogus", "d"]]},
                {**good, "truncated": [True]}, {**good, "unknown": 14}, {**good, "rejected": [[16, "too_long", "d"]]}):
        assert not _well_formed(bad, 16), bad


def test_a_row_holding_the_models_own_image_token_keeps_the_recorded_verdicts(tmp_path, monkeypatch, caplog):
    """Before: the length check rejects a row whose text holds the family's image token (Qwen's `<|image_pad|>`,
    Pixtral's `[IMG]`, which forum text writes) as `too_many_image_markers`, and the record's verdicts holding that
    reason did not read back: every resume fitted every row again, saying the verdicts "cannot be read"."""
    from croc_testing.families import tiny_qwen2_5_vl_processor
    from trainer.run_record import FIT_VERDICTS, write_run_record

    rows = [text_row(f"short-{i}", f"{i}.") for i in range(3)] + [text_row("pad-in-text", "It is <|image_pad|>.")]
    processor = tiny_qwen2_5_vl_processor()
    first = _fit_in_a_run(rows, tmp_path, processor=processor, template="qwen2_vl")
    assert first[0] == 3 and first[3]["too_many_image_markers"] == 1
    (tmp_path / "checkpoint-1").mkdir()
    write_run_record(tmp_path / "checkpoint-1", {FIT_VERDICTS: first[-1]})
    calls = _tokenising_calls(monkeypatch)
    with caplog.at_level(logging.INFO, logger="trainer.data_loading"):
        assert _fit_in_a_run(rows, tmp_path, processor=processor, template="qwen2_vl") == first
    assert calls == [] and "nothing tokenised" in caplog.text, caplog.text


@pytest.mark.parametrize("module", ["trainer.data_loading", "modeling_croc.constants"])
def test_an_edit_of_any_code_the_length_check_runs_changes_its_rule(module, tmp_path, monkeypatch):
    """Before: the rule hashed `trainer.data`, the templates and `processing_croc` only, while the rows reach
    `fit_rows` through `trainer.data_loading` (`_fit_range` decides each row's image presence) and the image marker
    is `modeling_croc.constants`'s: an edit there changed the verdicts of a fresh start, and a resume took the old
    ones."""
    import importlib
    from pathlib import Path

    from trainer.data import fit_rule

    before = fit_rule()
    loaded = importlib.import_module(module)
    edited = tmp_path / "edited.py"
    edited.write_bytes(Path(loaded.__file__).read_bytes() + b"\n# edited\n")
    monkeypatch.setattr(loaded, "__file__", str(edited))
    assert fit_rule() != before


def test_a_start_reads_the_rows_for_their_fingerprint_once(tiny_model, tmp_path, monkeypatch):
    """The length check's key and the run record both hold the rows' fingerprint: one pass over every row (an
    embedded image's bytes included) serves both, where the record used to read them all again."""
    import trainer.fingerprints as fingerprints_module
    import trainer.run_record as run_record_module

    passes: list[int] = []
    original = fingerprints_module.rows_fingerprint

    def counted(rows):
        passes.append(len(rows))
        return original(rows)

    monkeypatch.setattr(fingerprints_module, "rows_fingerprint", counted)
    monkeypatch.setattr(run_record_module, "rows_fingerprint", counted)
    import trainer.data_loading as data_loading_module  # holds its own reference where it imports the name

    monkeypatch.setattr(data_loading_module, "rows_fingerprint", counted, raising=False)
    data = write_small_folder(tmp_path / "data")
    train_module.main(run_argv("stage2.yaml", tmp_path / "run", tiny_model, data, "--max_steps=1"))
    assert len(passes) == 1, passes


@pytest.mark.parametrize("budget", ["1", "0.5"])
def test_a_rerun_refused_for_its_rows_leaves_the_folders_rejects_file_as_it_was(long_rows_run, tiny_model, tmp_path,
                                                                               monkeypatch, capsys, no_model_load,
                                                                               budget):
    """Before: the rerun of a finished run's command where its images are gone (a node without the data mount) was
    refused before the record was read, and wrote its own rejected rows over the finished run's rejects.jsonl (every
    row missing_image), which its data report still names; a refused run leaves the folder's files as they were."""
    out = tmp_path / "run"
    shutil.copytree(long_rows_run, out, ignore=shutil.ignore_patterns("checkpoint-*"))  # as save_strategy "no" ends
    before = (out / "rejects.jsonl").read_text()
    data = tmp_path / "rows.json"
    data.write_text(json.dumps([image_row(f"gone-{i}", f"images/gone-{i}.png") for i in range(2)]))
    status, message = cli_exit(run_argv("stage2.yaml", out, tiny_model, data,
                                        f"--data.max_reject_fraction={budget}"), monkeypatch, capsys)
    assert status == 1 and message.startswith("data error: ") and "missing_image" not in before, message
    assert "left as it was" in message and "another output_dir" in message, message
    assert (out / "rejects.jsonl").read_text() == before


def test_a_whole_float_id_is_reported_as_the_integer_it_stands_for(tiny_model, tmp_path):
    """pandas writes an integer id column holding a missing cell as floats (2.0): the rejects file and the data report
    said "2.0", an id found nowhere in the user's own table. A whole float is shown as the integer; a fraction and a
    text id as written. The rows keep their ids as read: duplicate detection and the run record's `data_rows` (the
    rows by content, which a resume compares) are what they were, so a run started before resumes."""
    import pandas as pd

    from trainer.data_loading import _ids

    rows = json.loads(write_small_folder(tmp_path).read_text())
    for number, row in enumerate(rows, start=1):
        row["id"] = number
    rows += [{**image_row("", "images/gone.png"), "id": 100}, {**image_row("", "images/gone.png"), "id": 2.5}]
    frame = pd.DataFrame(rows)
    frame.loc[len(frame)] = [None, None, text_row("")["conversations"]]  # the missing cell: the column is float
    (tmp_path / "pushed").mkdir()
    frame.to_parquet(tmp_path / "pushed" / "train.parquet")
    loaded = _rows(tmp_path, tiny_model, tmp_path / "pushed", f"--data.image_root={tmp_path}",
                   "--data.max_reject_fraction=0.5")
    assert [(row["id"], row["reason"]) for row in loaded.report.start_rejects] == [
        (100, "missing_image"), (2.5, "missing_image")]
    assert type(loaded.report.start_rejects[0]["id"]) is int  # 100, as the user's table holds it (not "100", 100.0)
    # Stored as read, so hashed into `data_rows` as a run started before this display hashed them.
    assert loaded.rows["id"][:2] == [1.0, 2.0]

    # A row replaced in training is written the same way (`trainer.data` records it with the id as read).
    report = DataReport(source="pushed", rows_read=11, logs=False, writes=False, max_reject_fraction=0.5)
    report.record(4, [{"id": 3.0, "index": 2, "image": "images/2.png", "reason": "unreadable_image",
                       "detail": "truncated"}], step=1)
    # The integer itself: the user's integer id column holds 3, which the text "3" matched no row of.
    assert report.replaced_rows[0]["id"] == 3 and type(report.replaced_rows[0]["id"]) is int
    # So are the cut rows the report names (`truncated_examples`).
    assert _ids(datasets.Dataset.from_dict({"id": [3.0, 2.5, -0.0]})) == ["3", "2.5", "0"]
    assert _ids(datasets.Dataset.from_dict({"id": ["3.0", "7"]})) == ["3.0", "7"]


@pytest.mark.parametrize(("overrides", "said"), [
    # 6 image and 2 text rows, filled to whole device batches of 2: 8 rows an epoch, against a step of 16.
    (["--global_batch_size=16"], "an epoch holds 8 training rows, fewer than the global batch of 16: each step trains "
                                 "one epoch's 8 rows, not 16"),
    (["--global_batch_size=16", "--group_by_modality_length=false"], "an epoch holds 8 training rows"),
    (["--global_batch_size=8"], None),
])
def test_a_step_larger_than_an_epoch_is_said_with_the_layout(overrides, said, tiny_model, tmp_path, capsys):
    """`--data.max_samples=100` under a 7B YAML's global batch of 128: the layout line promised 128 samples a step
    while each step trained one epoch's rows, and nothing said so (a newcomer's walkthrough)."""
    data = write_small_folder(tmp_path / "data")
    capsys.readouterr()
    train_module.main(run_argv("stage2.yaml", tmp_path / "out", tiny_model, data, "--max_steps=1", *overrides))
    log = capsys.readouterr().err  # the run's logging replaces caplog's handler
    assert "samples per step" in log
    warned = [line.partition("WARNING trainer.train: ")[2] for line in log.splitlines()
              if "fewer than the global batch" in line]
    assert (warned[0].startswith(said) if said else not warned), log[-3000:]
