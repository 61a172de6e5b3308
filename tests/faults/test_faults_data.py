"""Issue 13, data faults: every broken image, malformed row and broken file, on both paths (the recipe builder and
the trainer reading a LLaVA file), ends in a counted reject with its reason, a replaced-and-counted row in training,
or a one-line error before the model loads. Kept-but-changed images (RGBA, LA, 16-bit grey) are checked pixel by
pixel against values computed by hand."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fault_cases import GREY16_AS_8BIT, image_row, verdicts, write_good_image
from run_cases import cli_error as _cli_error
from run_cases import write_small_folder

from croc_testing.tiny import tiny_croc_processor
from data_recipes import REJECT_REASONS, build_recipe, load_llava_json, validate_dataset
from data_recipes.cli import main as recipes_main
from modeling_croc import with_image_aspect_ratio
from modeling_croc.images import load_image
from modeling_croc.processing_croc import pad_colour
from trainer import train as train_module
from trainer.collator import DATA_REPORT_KEY, build_collator
from trainer.data import CrocSupervisedDataset
from trainer.data_loading import load_training_rows
from trainer.data_report import RUN_REJECT_REASONS, DataReport
from trainer.resolve import resolve_config

REPO = Path(__file__).resolve().parents[2]
STAGE2 = REPO / "trainer" / "configs" / "cpu_tiny" / "stage2.yaml"
BACKGROUND = (122, 116, 104)  # int(255 * CLIP's mean), what LlavaImageProcessor's pad_to_square fills with


def _argv(out: Path, model: Path, data: Path, *extra: str) -> list[str]:
    return [str(STAGE2), f"--output_dir={out}", f"--model.name_or_path={model}", f"--data.path={data}",
            "--disable_tqdm=true", "--group_by_modality_length=false", *extra]




def _rejects(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- the builder ----------------------------------------------------------------------------------------------


def test_builder_rejects_every_fault_with_its_reason(faults, tmp_path):
    result = build_recipe("llava_json", faults["root"], tmp_path / "build", params={"annotation": "rows.json"})
    dataset = load_llava_json(faults["root"] / "rows.json")
    report = validate_dataset(dataset, faults["root"])
    assert verdicts(dataset, report.reasons) == faults["expected"]
    rejected = {r: n for r, n in result.summary["dropped_by_reason"].items() if n}
    expected = {}
    for verdict in faults["expected"].values():
        if verdict:
            expected[verdict] = expected.get(verdict, 0) + 1
    assert rejected == expected
    assert set(rejected) == set(REJECT_REASONS)  # the fault folder exercises every reject reason
    assert result.summary["notices"]["counts"] == {"duplicate_id": 1}
    assert result.summary["notices"]["examples"] == {"duplicate_id": ["text-0"]}
    lines = _rejects(tmp_path / "build" / "rejects.jsonl")
    assert sorted((r["id"], r["reason"]) for r in lines) == sorted(
        (key.split("#")[0], v) for key, v in faults["expected"].items() if v)
    not_an_object = next(r for r in lines if r["id"] == faults["not_an_object_id"])
    assert "this row is a string" in not_an_object["detail"]
    truncated = next(r for r in lines if r["id"] == "truncated-jpeg")
    assert "truncated" in truncated["detail"]  # PIL's own words, from a full decode (verify() passes this file)
    # Kept: the good rows, the images that are converted (RGBA, LA, 16-bit grey) and the differing repeated id.
    assert sorted(result.dataset["id"]) == sorted(
        [f"good-{i}" for i in range(6)] + [f"text-{i}" for i in range(4)] + ["text-0", "rgba", "la", "grey16"])


def test_builder_refuses_a_build_that_keeps_nothing(tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    (root / "rows.json").write_text(json.dumps([image_row("a", "nope.png")]))
    code = recipes_main(["build", "llava_json", "--data-root", str(root), "--out", str(tmp_path / "out"),
                         "--set", "annotation=rows.json"])
    err = capsys.readouterr().err
    assert code == 2 and "every one of the 1 rows read was rejected (missing_image=1)" in err
    assert err.count("\n") == 1 and not (tmp_path / "out" / "state.json").exists()


# --- file-level faults, both paths --------------------------------------------------------------------------------

FILE_FAULTS = {
    # name: (bytes, what the one-line message says after "<file>:")
    "truncated.json": (json.dumps([image_row("a", "images/good-0.png")] * 3, indent=1).encode()[:-40],
                       r"\d+:\d+: JSON does not parse"),
    "latin1.json": (json.dumps([{"id": "a", "conversations": [{"from": "human", "value": "caf\u00e9"}]}],
                               indent=1, ensure_ascii=False).encode("latin-1"),
                    r"7:18: not UTF-8 text \(byte 0xe9\)"),
    "object.json": (json.dumps({"data": [image_row("a", "images/good-0.png")]}).encode(),
                    r"1: the top level is an object, not a list of row objects"),
    "broken_line.jsonl": (b'{"id": "a", "conversations": []}\n{"id": "b", \n',
                          r"2:\d+: neither a JSON array nor valid JSON lines"),
}


@pytest.mark.parametrize("name", FILE_FAULTS)
def test_file_faults_name_the_file_and_line(name, faults, tiny_model, tmp_path, capsys, monkeypatch, no_model_load):
    data, where = FILE_FAULTS[name]
    path = tmp_path / name
    path.write_bytes(data)
    pattern = re.escape(str(path)) + ":" + where
    code = recipes_main(["build", "llava_json", "--data-root", str(tmp_path), "--out", str(tmp_path / "b"),
                         "--set", f"annotation={name}"])
    err = capsys.readouterr().err
    assert code == 1 and re.search(pattern, err) and err.count("\n") == 1, err
    message = _cli_error(_argv(tmp_path / "run", tiny_model, path), monkeypatch)
    assert message.startswith("data error: ") and re.search(pattern, message), message


# --- the trainer's raw-JSON path ----------------------------------------------------------------------------------


def _rows(tmp_path, tiny_model, data: Path, *extra: str):
    model_args, data_args, args, _ = resolve_config(_argv(tmp_path / "run", tiny_model, data, *extra))
    return load_training_rows(data_args, args), args


def test_trainer_decoding_at_the_start_gives_the_builders_verdicts(faults, tiny_model, tmp_path):
    rows, args = _rows(tmp_path, tiny_model, faults["root"] / "rows.json", "--data.image_check=decode",
                       "--data.max_reject_fraction=1")
    builder = validate_dataset(load_llava_json(faults["root"] / "rows.json"), faults["root"])
    assert rows.report.rejected == {**dict.fromkeys(RUN_REJECT_REASONS, 0), **builder.counts}
    assert rows.report.notices == {"duplicate_id": 1}
    assert rows.report.rows_read == len(faults["rows"]) and len(rows.rows) == len(builder.kept_indices)
    rows.report.write_start()  # what the run does once it may write into output_dir
    lines = _rejects(Path(args.output_dir) / "rejects.jsonl")
    assert sorted((r["id"], r["reason"]) for r in lines) == sorted(
        (key.split("#")[0], v) for key, v in faults["expected"].items() if v)
    assert rows.image_root == faults["root"]


def test_the_start_line_says_what_the_build_dropped_before_it(faults, tiny_model, tmp_path):
    """A build's rejected rows never reach the trainer, whose own counts start after them: its start line said
    "0 rejected" of a mixture the build had cut by a quarter. It now says what the build dropped, and where."""
    build = tmp_path / "build"
    result = build_recipe("llava_json", faults["root"], build, params={"annotation": "rows.json"})
    dropped = result.summary["rows"]["dropped"]
    for data in (build, build / "data.jsonl"):
        rows, _ = _rows(tmp_path, tiny_model, data, "--data.max_reject_fraction=1")
        assert sum(rows.report.rejected.values()) < dropped  # the trainer's own count sees only what is left
        line = rows.report.start_message()
        assert (f"; the build dropped {dropped:,} of the {result.summary['rows']['read']:,} rows it read before this ("
                in line and line.endswith(f"with their reasons in {build / 'rejects.jsonl'})")), line
    rows, _ = _rows(tmp_path, tiny_model, faults["root"] / "rows.json", "--data.max_reject_fraction=1")
    assert "the build dropped" not in rows.report.start_message()  # a JSON file: no build


def test_trainer_checks_paths_at_the_start_and_leaves_decoding_to_training(faults, tiny_model, tmp_path):
    rows, _ = _rows(tmp_path, tiny_model, faults["root"] / "rows.json", "--data.max_reject_fraction=1")
    found_in_training = {"truncated-jpeg", "corrupt-jpeg", "bomb", "oversize", "banner", "float-image"}
    at_start = {key: v for key, v in faults["expected"].items() if key not in found_in_training}
    counts = {reason: 0 for reason in RUN_REJECT_REASONS}
    for verdict in at_start.values():
        if verdict:
            counts[verdict] += 1
    assert rows.report.rejected == counts
    assert found_in_training <= set(rows.rows["id"])


def test_trainer_stops_before_the_model_when_too_many_rows_are_rejected(faults, tiny_model, tmp_path, monkeypatch,
                                                                        no_model_load):
    message = _cli_error(_argv(tmp_path / "run", tiny_model, faults["root"] / "rows.json"), monkeypatch)
    total = len(faults["rows"])
    assert message.startswith(f"data error: 16 of {total} rows of {faults['root'] / 'rows.json'} rejected (")
    assert "more than data.max_reject_fraction=0.01" in message and str(tmp_path / "run" / "rejects.jsonl") in message
    # `--strict`, as the builder spells it (a data key may drop its `data.` prefix).
    strict = _cli_error(_argv(tmp_path / "strict", tiny_model, faults["root"] / "rows.json", "--strict",
                              "--data.max_reject_fraction=1"), monkeypatch)
    assert "rejected" in strict and "none (data.strict=true)" in strict


def test_trainer_counts_a_duplicate_id_and_keeps_the_row(faults, tiny_model, tmp_path):
    rows, _ = _rows(tmp_path, tiny_model, faults["root"] / "rows.json", "--data.max_reject_fraction=1")
    assert rows.report.notices == {"duplicate_id": 1}
    assert list(rows.rows["id"]).count("text-0") == 2 and list(rows.rows["id"]).count("good-1") == 1


def test_unreadable_image_is_replaced_by_the_next_readable_image_row(faults, tmp_path):
    processor = with_image_aspect_ratio(tiny_croc_processor(), "pad")
    rows = [image_row("good-0", "images/good-0.png"), image_row("bad", "images/corrupt.jpg"),
            {"id": "text", "conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}]},
            image_row("also-bad", "images/truncated.jpg"), image_row("good-3", "images/good-3.png")]
    dataset = CrocSupervisedDataset(rows, processor, "vicuna_v1", image_root=faults["root"])
    replaced = dataset[1]
    # The next image row that loads (3 fails too, text rows are skipped): row 4's sample, exactly.
    expected = dataset[4]
    assert torch.equal(replaced["input_ids"], expected["input_ids"])
    assert torch.equal(replaced["pixel_values"], expected["pixel_values"])
    assert replaced["replaced_row"]["id"] == "bad" and replaced["replaced_row"]["reason"] == "unreadable_image"
    batch = build_collator(processor)([dataset[i] for i in range(5)])
    assert batch["input_ids"].shape[0] == 5 and batch["pixel_values"].shape[0] == 4  # the batch keeps its size
    assert batch[DATA_REPORT_KEY]["rows"] == 5
    assert [r["id"] for r in batch[DATA_REPORT_KEY]["replaced_rows"]] == ["bad", "also-bad"]
    # Wrapping around: the last image row failing takes the first one.
    assert torch.equal(CrocSupervisedDataset(rows[:2], processor, "vicuna_v1", faults["root"])[1]["pixel_values"],
                       dataset[0]["pixel_values"])


def test_training_replaces_unreadable_images_counts_them_and_finishes(faults, tiny_model, tmp_path):
    out = tmp_path / "run"
    # 20 rows kept at the start, 6 of whose images cannot be read; one step of 20 rows is one epoch, and the second
    # step asks for every row again.
    train_module.main(_argv(out, tiny_model, faults["root"] / "rows.json", "--data.max_reject_fraction=0.5",
                            "--per_device_train_batch_size=20", "--global_batch_size=20", "--max_steps=2"))
    report = json.loads((out / "data_report.json").read_text())
    assert report["rows_seen"] == 40  # counted per row asked for, like every row: twice each
    assert {r: n for r, n in report["replaced"].items() if n} == {
        "unreadable_image": 4, "image_too_large": 4, "extreme_aspect_ratio": 2, "unsupported_image_mode": 2}
    lines = _rejects(out / "rejects.jsonl")
    training = {r["id"]: r["reason"] for r in lines if r.get("during") == "training"}
    assert training == {"truncated-jpeg": "unreadable_image", "corrupt-jpeg": "unreadable_image",
                        "bomb": "image_too_large", "oversize": "image_too_large", "banner": "extreme_aspect_ratio",
                        "float-image": "unsupported_image_mode"}
    assert len(lines) == 16 + 6  # the start's rejects (path and text faults), and each replaced row once
    losses = [entry["loss"] for entry in json.loads((out / "trainer_state.json").read_text())["log_history"]
              if "loss" in entry]
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_training_stops_with_one_line_when_too_many_images_fail(faults, tiny_model, tmp_path, monkeypatch):
    # Nothing to reject at the start (paths are fine); 4 of 14 images fail to decode in the first step, and the
    # default budget (a rate over 1% with 99.9% confidence, more than one row) stops the run after that step.
    rows = [row for row in faults["rows"] if isinstance(row, dict) and row["id"] in
            {*(f"good-{i}" for i in range(6)), *(f"text-{i}" for i in range(4)), "truncated-jpeg", "corrupt-jpeg",
             "bomb", "oversize"}][:14]
    data = faults["root"] / "decode_faults.json"
    data.write_text(json.dumps(rows))
    message = _cli_error(_argv(tmp_path / "run", tiny_model, data, "--per_device_train_batch_size=7",
                               "--global_batch_size=14", "--max_steps=2"), monkeypatch)
    assert re.fullmatch(r"data error: 4 of the 14 training rows seen so far could not be used "
                        r"\(unreadable_image=2, image_too_large=2\), more than data.max_reject_fraction=0.01 of them allows \(over "
                        r"it with 99.9% confidence, and more than one\); raise it to go on regardless; the rows: "
                        r".+rejects.jsonl", message), message


def test_only_the_process_that_logs_says_the_data_reports_lines(caplog):
    # Every process holds the same counts (the replaced rows are gathered from all of them), so the lines are said
    # once: a replica's warnings would repeat each one per GPU.
    replaced = [{"id": "r", "index": 3, "image": "r.png", "reason": "unreadable_image", "detail": "truncated"}]
    said = {}
    for logs in (True, False):
        report = DataReport(source="rows.json", rows_read=8, logs=logs, writes=False)
        report.add_rejected("missing_image")
        with caplog.at_level(logging.INFO, logger="trainer"):
            caplog.clear()
            report.log_start()
            report.record(4, replaced, step=1)
            report.log_final()
        said[logs] = [record.getMessage() for record in caplog.records]
        assert report.replaced["unreadable_image"] == 1 and report.rows_seen == 4  # counted either way
    assert said[False] == [] and len(said[True]) == 3, said



@pytest.mark.parametrize("workers", [0, 2])
def test_an_image_root_gone_mid_run_stops_with_the_datasets_one_line_under_workers(tiny_model, tmp_path, monkeypatch,
                                                                                    workers):
    """Before: with DataLoader workers, the dataset's DataError (no row of its kind left to replace it) reached the
    CLI as torch re-raises it, the worker's whole traceback in its message: `data error: Caught DataError in
    DataLoader worker process 0. Original Traceback (most recent call last): File ...`."""
    data = write_small_folder(tmp_path / "data")
    build = train_module.build_train_dataset

    def build_then_lose_the_images(*args, **kwargs):  # after the start's checks, before training reads an image
        dataset = build(*args, **kwargs)
        shutil.rmtree(tmp_path / "data" / "images")
        return dataset

    monkeypatch.setattr(train_module, "build_train_dataset", build_then_lose_the_images)
    message = _cli_error(_argv(tmp_path / "run", tiny_model, data, f"--dataloader_num_workers={workers}",
                               "--per_device_train_batch_size=4", "--global_batch_size=4", "--max_steps=1"),
                         monkeypatch)
    assert re.fullmatch(r"data error: row 'img-\d' and the 5 row\(s\) of its kind tried after it cannot be used "
                        r"\(last: missing_image: .+\); is the image root .+ right, and model_max_length=\d+ large "
                        r"enough\?", message), message


# --- images kept, converted: pixels against hand-computed values ---------------------------------------------------


def test_rgba_and_la_are_composited_onto_the_pad_colour(faults):
    processor = with_image_aspect_ratio(tiny_croc_processor(), "pad")
    assert pad_colour(processor.image_processor) == BACKGROUND
    rgba = np.asarray(load_image(faults["root"] / "images" / "rgba.png", BACKGROUND))
    # Alpha 51 of 255 over the background, rounded: (200 * 51 + (122, 116, 104) * 204 + 127) // 255 = (138, 133, 123)
    assert rgba.tolist() == [[list(BACKGROUND), [200, 10, 250], [138, 133, 123]]]
    la = np.asarray(load_image(faults["root"] / "images" / "la.png", BACKGROUND))
    assert la.tolist() == [[list(BACKGROUND), [90, 90, 90]]]


def test_a_transparent_image_pads_to_one_uniform_colour(tmp_path):
    """A fully transparent 56x28 RGBA image, padded to a square: its own pixels and the padding are one colour, so
    pixel_values are constant per channel and equal to the normalised pad colour."""
    from PIL import Image

    Image.new("RGBA", (56, 28), (0, 255, 0, 0)).save(tmp_path / "clear.png")
    processor = with_image_aspect_ratio(tiny_croc_processor(), "pad")
    dataset = CrocSupervisedDataset([image_row("clear", "clear.png")], processor, "vicuna_v1", tmp_path)
    pixels = dataset[0]["pixel_values"]
    mean = torch.tensor(processor.image_processor.image_mean)
    std = torch.tensor(processor.image_processor.image_std)
    expected = (torch.tensor(BACKGROUND) / 255 - mean) / std
    torch.testing.assert_close(pixels, expected[:, None, None].expand_as(pixels), rtol=0, atol=1e-6)


def test_sixteen_bit_grey_is_rescaled_not_clipped(faults):
    grey = np.asarray(load_image(faults["root"] / "images" / "grey16.png"))
    assert grey[..., 0].tolist() == [GREY16_AS_8BIT] and (grey[..., 0] == grey[..., 2]).all()


def test_exif_orientation_is_not_applied_as_in_llavas_loader(tmp_path):
    """A phone photo stored 40x20 with EXIF orientation 6 ("rotate 90 degrees to view") is trained as stored: the
    pixels of LLaVA's `Image.open(path).convert("RGB")`, which the `official` preset reproduces."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    Image.new("RGB", (40, 20), (200, 30, 60)).save(tmp_path / "phone.jpg", exif=exif)
    image = load_image(tmp_path / "phone.jpg")
    with Image.open(tmp_path / "phone.jpg") as stored:
        assert stored.getexif()[0x0112] == 6
        assert image.size == (40, 20) and image.tobytes() == stored.convert("RGB").tobytes()


# --- a relative --data-root -------------------------------------------------------------------------------------


def test_a_build_from_a_relative_data_root_trains_from_another_folder(tmp_path, tiny_model, monkeypatch):
    work = tmp_path / "work"
    for i in range(4):
        write_good_image(work / "data" / "images" / f"{i}.png", (40 * i, 100, 200))
    (work / "data" / "rows.json").write_text(json.dumps([image_row(str(i), f"images/{i}.png") for i in range(4)]))
    monkeypatch.chdir(work)
    assert recipes_main(["build", "llava_json", "--data-root", "data", "--out", "build",
                         "--set", "annotation=rows.json"]) == 0
    summary = json.loads((work / "build" / "summary.json").read_text())
    assert summary["image_root"] == str(work / "data") and summary["data_root"] == str(work / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    trainer = train_module.main(_argv(tmp_path / "run", tiny_model, work / "build", "--max_steps=1",
                                      "--per_device_train_batch_size=2", "--global_batch_size=2"))
    assert trainer.state.global_step == 1
    assert json.loads((tmp_path / "run" / "data_report.json").read_text())["replaced"]["missing_image"] == 0


# --- the training-time budget: a rate, not an early ratio -------------------------------------------------------


def _stopped_runs(rule, rate: float, runs: int = 200, rows: int = 2000, batch: int = 8) -> int:
    """How many of `runs` seeded runs over a source whose images fail at `rate` the rule stops, checked after each
    step of `batch` rows as the trainer does, at the default budget (1%)."""
    generator = np.random.default_rng(0)
    stopped = 0
    for _ in range(runs):
        bad = np.cumsum(generator.random(rows) < rate)
        stopped += any(rule(int(bad[seen - 1]), seen, 0.01) for seen in range(batch, rows + 1, batch))
    return stopped


def test_training_stops_on_a_bad_rate_not_on_an_unlucky_start():
    """In training the rows seen are a sample: a source at half the budget's rate is not stopped by two bad images
    early on (the plain ratio stopped a third of such runs, at the same step on every rerun), and one at three times
    the budget is stopped within 2,000 rows. The bound is the Wilson score interval's, at 99.9% one-sided."""
    from scipy.stats import binomtest

    from data_recipes import exceeds_reject_budget, rate_exceeds_reject_budget

    assert _stopped_runs(exceeds_reject_budget, 0.005) > 40
    assert _stopped_runs(rate_exceeds_reject_budget, 0.005) <= 4
    assert _stopped_runs(rate_exceeds_reject_budget, 0.03) == 200
    for bad, seen in [(2, 8), (3, 64), (5, 100), (30, 2000), (1000, 50_000)]:
        lower = binomtest(bad, seen).proportion_ci(confidence_level=0.998, method="wilson").low
        for budget in (lower * 0.99, lower * 1.01):
            assert rate_exceeds_reject_budget(bad, seen, budget) == (lower > budget), (bad, seen, budget)
    assert not rate_exceeds_reject_budget(1, 1, 0.0)  # never for one row
    assert rate_exceeds_reject_budget(10, 2, 0.01) and rate_exceeds_reject_budget(2, 0, 0.01)  # edited counts
