"""The CPU demo end to end at `--quick` size: every report file, determinism, the chat CLI on the saved model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("matplotlib", reason="the demo's figures need the `demo` extra")

from demo.__main__ import main as demo_main  # noqa: E402
from demo.evaluate import OVERALL, generate_answers, load_model, load_questions
from demo.plots import FIGURE_FILES
from demo.report import METRICS_FILE, REPORT_FILE, TIMINGS_FILE
from demo.runs import ARMS, check_equal_budgets, stage_arguments
from demo.settings import QUICK

pytestmark = pytest.mark.slow  # minutes of a worker: run first (tests/conftest.py)

SEED = 3


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory) -> Path:
    """One `python -m demo --quick` run, shared by the tests of this file."""
    out = tmp_path_factory.mktemp("demo") / "out"
    assert demo_main(["--quick", "--out", str(out), "--seed", str(SEED)]) == 0
    return out


def test_quick_demo_writes_every_report_file(quick_out: Path, capsys) -> None:
    report_dir = quick_out / "report"
    for name in FIGURE_FILES.values():
        path = report_dir / name
        assert path.is_file(), name
        assert path.stat().st_size > 10_000, f"{name} is suspiciously small"
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) >= 300, (name, image.size)

    report = (report_dir / REPORT_FILE).read_text(encoding="utf-8")
    for name in FIGURE_FILES.values():
        assert f"]({name})" in report
    overall = next(line for line in report.splitlines() if line.startswith("| **overall**"))
    numbers = re.findall(r"\d+\.\d", overall)
    assert len(numbers) >= 4, overall  # chance (two), Croc, baseline
    assert "Croc" in report and "baseline" in report

    metrics = json.loads((report_dir / METRICS_FILE).read_text(encoding="utf-8"))
    assert metrics["seeds"] == [SEED]
    assert set(metrics["accuracy"]) == {"croc", "baseline"}
    assert metrics["steps"]["croc"] == metrics["steps"]["baseline"] > 0
    questions = metrics["num_test_questions"]
    assert questions > 0
    for arm, per_type in metrics["accuracy"].items():
        assert per_type[OVERALL]["n"] == questions
        for qtype, entry in per_type.items():
            assert 0.0 <= entry["mean"] <= 1.0, (arm, qtype)
            assert entry["per_seed"] == [entry["mean"]]
    for qtype, chance in metrics["chance"].items():
        assert 0.0 < chance["uniform"] <= 1.0 and 0.0 <= chance["majority"] <= 1.0, qtype
    difference = metrics["croc_minus_baseline"]
    assert -1.0 <= difference["low"] <= difference["difference"] <= difference["high"] <= 1.0
    assert {"croc/stage1", "croc/stage1_5", "croc/stage2", "baseline/stage1", "baseline/stage2"} <= set(
        metrics["final_losses"])
    assert "vtr_loss" in metrics["final_losses"]["croc/stage1_5"]
    # The pool figure's nearest-neighbour run is trained without --ablations too (its stage 2 is not).
    assert "pool_utilisation" in metrics["final_losses"]["ablation_nearest/stage1_5"]
    assert "ablation_nearest/stage2" not in metrics["final_losses"]
    assert "ablation_nearest/stage1_5 (pool figure only)" in report
    # The runs table states what the trainer ran: the quick step override and the batch, the YAML's rates.
    row = next(line for line in report.splitlines() if line.startswith("| croc/stage1_5 |")).split(" | ")
    stage1_5 = stage_arguments("stage1_5")
    rates = " / ".join(f"{getattr(stage1_5, f'{group}_lr'):g}" for group in ("projector", "prompt_pool", "language_model"))
    assert row[4:7] == [str(QUICK.max_steps["stage1_5"]), "4", rates], row
    stage1 = next(line for line in report.splitlines() if line.startswith("| croc/stage1 |"))
    assert f"| {stage_arguments('stage1').projector_lr:g} / frozen / frozen |" in stage1

    timings = json.loads((report_dir / TIMINGS_FILE).read_text(encoding="utf-8"))
    assert timings["steps"]["total"] > 0

    # Both held-out splits are evaluated (settings are chosen on val; test is reported), on disjoint images.
    assert metrics["report_split"] == "test" and set(metrics["splits"]) == {"val", "test"}
    val = json.loads((quick_out / "scenes" / "qa_val.json").read_text(encoding="utf-8"))
    test = json.loads((quick_out / "scenes" / "qa_test.json").read_text(encoding="utf-8"))
    assert val and not {row["image"] for row in val} & {row["image"] for row in test}
    assert metrics["splits"]["test"]["accuracy"] == metrics["accuracy"]
    assert metrics["splits"]["test"]["minus_baseline"]["croc"] == metrics["croc_minus_baseline"]
    # The reconstruction probe of every stage-1.5 run, against the trivial mean predictor.
    probe = metrics["vtr_probe"]["croc/stage1_5"]
    assert probe["ratio_to_trivial"] == pytest.approx(probe["vtr_loss"] / probe["trivial_loss"])
    assert probe["tokens"] > 0 and probe["prediction_norm"] > 0 and probe["target_norm"] > 0
    # Stage 0 pretrained the tower contrastively.
    assert metrics["tower"][str(SEED)]["steps"] == QUICK.model.tower.steps


def test_quick_demo_is_deterministic(quick_out: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert demo_main(["--quick", "--out", str(again), "--seed", str(SEED)]) == 0
    first = (quick_out / "report" / METRICS_FILE).read_text(encoding="utf-8")
    assert (again / "report" / METRICS_FILE).read_text(encoding="utf-8") == first
    for arm in ("croc", "baseline"):
        for split in ("val", "test"):
            name = f"predictions_{split}.json"
            assert (again / f"seed{SEED}" / arm / name).read_text(encoding="utf-8") == (
                quick_out / f"seed{SEED}" / arm / name).read_text(encoding="utf-8")


def test_chat_cli_answers_from_the_demo_model(quick_out: Path, capsys) -> None:
    from modeling_croc.chat import answer
    from modeling_croc.chat import main as chat_main

    model_dir = quick_out / f"seed{SEED}" / "croc" / "stage2"
    scenes = quick_out / "scenes"
    questions = load_questions(scenes / "qa_test.json", limit=3)
    model, processor = load_model(model_dir)
    batched = generate_answers(model, processor, questions, scenes, batch_size=3, max_new_tokens=6)
    for question, from_batch in zip(questions, batched):
        image = Image.open(scenes / question.image).convert("RGB")
        # Left-padded batched generation gives what the chat path gives one question at a time.
        assert answer(model, processor, image, question.text, max_new_tokens=6) == from_batch

    question = questions[0]
    capsys.readouterr()
    chat_main([str(model_dir), "--image", str(scenes / question.image), "--question", question.text,
               "--max-new-tokens", "6", "--device", "cpu"])
    assert capsys.readouterr().out.strip() == batched[0]


def test_unequal_step_budgets_are_refused() -> None:
    arms = [ARMS["croc"], ARMS["baseline"]]
    steps = check_equal_budgets(arms)
    assert steps["croc"] == steps["baseline"]
    with pytest.raises(ValueError, match="same number of optimiser steps"):
        check_equal_budgets(arms, {"stage1": 1, "stage1_5": 1, "stage2": 1, "baseline_stage1": 5,
                                   "baseline_stage2": 1})


def test_report_assembled_from_another_process_equals_the_direct_one(quick_out: Path, tmp_path: Path) -> None:
    """`--run-seeds ... --no-report` leaves everything the report needs on disk; `--report-only` (as after several
    processes trained their seeds in parallel) gives the metrics the direct run gave."""
    apart = tmp_path / "apart"
    common = ["--quick", "--out", str(apart), "--seed", str(SEED)]
    assert demo_main([*common, "--run-seeds", str(SEED), "--no-report"]) == 0
    assert not (apart / "report").exists()
    assert demo_main([*common, "--report-only"]) == 0
    direct = json.loads((quick_out / "report" / METRICS_FILE).read_text(encoding="utf-8"))
    assert json.loads((apart / "report" / METRICS_FILE).read_text(encoding="utf-8")) == direct


def test_resume_after_a_kill_trains_only_what_did_not_finish(quick_out: Path, tmp_path: Path, monkeypatch) -> None:
    """`--resume` on the folder of a run killed during the baseline's stage 2 (its summary never written, nothing
    evaluated): only that run is trained again, and the report equals the uninterrupted run's."""
    import shutil

    from demo import pipeline

    killed = tmp_path / "killed"
    shutil.copytree(quick_out, killed)
    shutil.rmtree(killed / "report")
    (killed / f"seed{SEED}" / "baseline" / "stage2" / pipeline.RUN_SUMMARY).unlink()
    for predictions in (killed / f"seed{SEED}").glob("*/predictions_*.json"):
        predictions.unlink()
    trained = []
    train = pipeline.train_module.main
    monkeypatch.setattr(pipeline.train_module, "main", lambda argv: trained.append(argv[1]) or train(argv))

    assert demo_main(["--quick", "--out", str(killed), "--seed", str(SEED), "--resume"]) == 0
    assert trained == [f"--output_dir={killed / f'seed{SEED}' / 'baseline' / 'stage2'}"]
    direct = json.loads((quick_out / "report" / METRICS_FILE).read_text(encoding="utf-8"))
    assert json.loads((killed / "report" / METRICS_FILE).read_text(encoding="utf-8")) == direct


def test_resume_refuses_a_run_finished_with_other_arguments(quick_out: Path, tmp_path: Path) -> None:
    import shutil

    from demo import pipeline

    changed = tmp_path / "changed"
    shutil.copytree(quick_out, changed)
    summary_file = changed / f"seed{SEED}" / "croc" / "stage1" / pipeline.RUN_SUMMARY
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    summary["argv"] = [*summary["argv"], "--learning_rate=1"]
    summary_file.write_text(json.dumps(summary), encoding="utf-8")
    with pytest.raises(ValueError, match="--resume: .* was trained with"):
        demo_main(["--quick", "--out", str(changed), "--seed", str(SEED), "--resume"])


def test_ablation_reading_follows_the_intervals() -> None:
    """The report's reading of the ablation table: separable variants named, the caption-only arm's verdict taken
    from its interval, for each of the three cases."""
    from demo.report import CAPTION_ONLY_ARM, ablation_reading

    arms = [ARMS[name] for name in ("croc", "baseline", CAPTION_ONLY_ARM, "ablation_causal")]
    labels = {arm.name: arm.label for arm in arms}

    def split(caption_only: tuple[float, float, float], causal: tuple[float, float, float]) -> dict:
        def entry(values):
            return dict(zip(("difference", "low", "high"), values, strict=True))
        return {"minus_croc": {CAPTION_ONLY_ARM: entry(caption_only), "ablation_causal": entry(causal)},
                "minus_baseline": {CAPTION_ONLY_ARM: entry((0.002, -0.011, 0.016))}}

    tie = ablation_reading(arms, split((0.0, -0.012, 0.013), (0.007, -0.004, 0.019)))
    assert tie.startswith("No variant separates from full Croc")
    assert "scores what full Croc scores (+0.0 (-1.2 to +1.3))" in tie and "+0.2 (-1.1 to +1.6) over the baseline" in tie
    helps = ablation_reading(arms, split((-0.03, -0.05, -0.01), (0.007, -0.004, 0.019)))
    assert f"{labels[CAPTION_ONLY_ARM]} -3.0 (-5.0 to -1.0)" in helps and "the pool / VTR part helps" in helps
    assert labels["ablation_causal"] not in helps
    hurts = ablation_reading(arms, split((0.03, 0.01, 0.05), (-0.02, -0.03, -0.01)))
    assert "the pool / VTR part hurts here" in hurts and f"{labels['ablation_causal']} -2.0 (-3.0 to -1.0)" in hurts
    assert ablation_reading([arm for arm in arms if not arm.ablation], split((0, 0, 0), (0, 0, 0))) == ""
