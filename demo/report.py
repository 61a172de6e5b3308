"""`report.md`, `metrics.json` and `timings.json` in the report folder, and the one-line summary.

`metrics.json` holds only what the seed determines (accuracies, chance levels, final losses, step budgets), so two
runs with the same seed produce the same file; wall times, which the machine decides, live in `timings.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .evaluate import OVERALL, normalize_answer
from .metrics import (
    aggregate_accuracy,
    curve,
    final_value,
    mean_over_seeds,
    paired_difference,
    paired_table,
    question_types,
    verdict,
)
from .plots import FIGURE_FILES
from .runs import POOL_FIGURE_RUNS, arm_steps

METRICS_FILE = "metrics.json"
TIMINGS_FILE = "timings.json"
REPORT_FILE = "report.md"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def build_metrics(state) -> dict[str, Any]:
    """Everything the report states as a number, except wall times."""
    accuracy = aggregate_accuracy(state)
    settings = state.options.settings
    metrics: dict[str, Any] = {
        "settings": settings.name,
        "seeds": state.options.seed_list,
        "num_test_questions": len(state.questions),
        "data": state.data_counts,
        "model": {"parameters": state.model_parameters, **_asdict(settings.model)},
        "steps": {arm.name: arm_steps(arm, settings.max_steps) for arm in state.arms},
        "accuracy": accuracy,
        "chance": state.chance,
        "first_losses": {
            run: {key: values[0] for key in ("lm_loss", "vtr_loss") if (values := curve(history, key)[1])}
            for run, history in state.histories[min(state.histories)].items()
        },
        "final_losses": {
            run: {key: value for key in ("lm_loss", "vtr_loss", "pool_utilisation")
                  if (value := final_value(history, key)) is not None}
            for run, history in state.histories[min(state.histories)].items()
        },
    }
    if {"croc", "baseline"} <= set(accuracy):
        metrics["croc_minus_baseline"] = paired_difference(state)
    metrics["report_split"] = state.report_split
    metrics["splits"] = {
        split: {
            "num_questions": len(questions),
            "accuracy": aggregate_accuracy(state.view(split)),
            "minus_baseline": paired_table(state.view(split), "baseline"),
            "minus_croc": paired_table(state.view(split), "croc"),
        }
        for split, questions in state.split_questions.items()
    }
    metrics["vtr_probe"] = mean_over_seeds(state.vtr_fits)
    metrics["tower"] = state.tower
    return metrics


def _stage1_5_change(metrics: dict[str, Any]) -> str:
    """How far each stage-1.5 loss of the Croc arm moved, first logged step -> last (first seed)."""
    losses = metrics["final_losses"].get("croc/stage1_5", {})
    first = metrics["first_losses"].get("croc/stage1_5", {})
    parts = [f"{name} {first[key]:.2f} → {losses[key]:.2f}" for key, name in (("vtr_loss", "`L_VTR`"),
                                                                              ("lm_loss", "`L_DCG`"))
             if key in first and key in losses]
    return ("Croc's stage 1.5, first step → end (mean of the last three logs): " + ", ".join(parts) + "."
            if parts else "")


def _asdict(spec) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(spec)


def write_timings(state) -> None:
    folder: Path = state.report_dir
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"threads": state.options.threads, "steps": state.timings,
               "runs": {name: seconds for name, seconds in state.run_seconds.items()}}
    (folder / TIMINGS_FILE).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def accuracy_table(state, metrics: dict[str, Any]) -> str:
    """Markdown table: question type, n, chance (uniform / majority), one column per arm, Croc - baseline."""
    accuracy = metrics["accuracy"]
    arms = [arm for arm in state.arms if arm.name in accuracy]
    seeds = len(metrics["seeds"])
    header = ["question type", "n", "chance: uniform / majority"] + [arm.label for arm in arms]
    if {"croc", "baseline"} <= set(accuracy):
        header.append("Croc − baseline")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for qtype in question_types(state):
        chance = metrics["chance"].get(qtype, {})
        cells = [f"**{qtype}**" if qtype == OVERALL else qtype, str(accuracy[arms[0].name][qtype]["n"]),
                 f"{_pct(chance.get('uniform'))} / {_pct(chance.get('majority'))}"]
        for arm in arms:
            entry = accuracy[arm.name][qtype]
            text = _pct(entry["mean"]) + (f" ± {_pct(entry['std'])}" if seeds > 1 else "")
            cells.append(f"**{text}**" if qtype == OVERALL else text)
        if "Croc − baseline" in header:
            delta = accuracy["croc"][qtype]["mean"] - accuracy["baseline"][qtype]["mean"]
            cells.append(f"{100 * delta:+.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _setup_table(state, metrics: dict[str, Any]) -> str:
    settings = state.options.settings
    model = settings.model
    rows = [
        ("data", f"{metrics['data'].get('images', 0)} synthetic scenes ({settings.image_size}×{settings.image_size} "
                 f"px); {metrics['num_test_questions']} held-out questions on "
                 f"{len({q.image for q in state.questions})} held-out images that no training file contains"),
        ("model", f"{metrics['model']['parameters']:,} parameters: CLIP-style tower pretrained in stage 0, frozen "
                  f"({model.vision_layers} layers × {model.vision_hidden_size}, patch {model.patch_size}: "
                  f"{model.num_image_tokens} visual tokens), Llama-style LM ({model.num_layers} layers × "
                  f"{model.hidden_size}, {model.num_heads} heads, random init), vocabulary {model.vocab_size} + 2, "
                  f"prompt pool {model.prompt_pool_size}"),
        ("seeds", ", ".join(str(s) for s in metrics["seeds"]) + " (same data; model init, data order and "
                                                                 "masks follow the seed)"),
    ]
    lines = ["| | |", "|---|---|"] + [f"| {key} | {value} |" for key, value in rows]
    return "\n".join(lines)


def _runs_table(state) -> str:
    """One row per training run: YAML, stage, data, steps, batch, learning rates (as the trainer resolved them),
    wall time."""
    lines = ["| run | config (`trainer/configs/demo/`) | stage | data | steps | batch | lr projector / pool / LM "
             "| wall time (s) |", "|---|---|---|---|---:|---:|---|---:|"]
    in_arms = {run.name: run for arm in state.arms for run in arm.runs}
    extra = {run.name: run for run in POOL_FIGURE_RUNS if run.name not in in_arms}
    for name, run in (in_arms | extra).items():
        settings, seconds = state.run_settings.get(name), state.run_seconds.get(name)
        if settings is None:
            continue
        rates = " / ".join(_rate(settings["learning_rates"].get(group))
                           for group in ("projector", "prompt_pool", "language_model"))
        label = f"{name} (pool figure only)" if name in extra else name
        lines.append(f"| {label} | {run.config}.yaml | {run.stage} | {run.data} | {settings['max_steps']} | "
                     f"{settings['global_batch_size']} | {rates} | {sum(seconds) / len(seconds):.0f} |")
    return "\n".join(lines)


def _rate(value: float | None) -> str:
    return "frozen" if value is None else f"{value:g}"


def _timing_table(state) -> str:
    lines = ["| step | wall time (s) |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in state.timings.items()]
    return "\n".join(lines)


def _interval(entry: dict[str, float] | None) -> str:
    if not entry:
        return "–"
    return (f"{100 * entry['difference']:+.1f} ({100 * entry['low']:+.1f} to {100 * entry['high']:+.1f})")


def _ablation_paragraph(state, metrics: dict[str, Any]) -> str:
    names = [arm.name for arm in state.arms if arm.ablation]
    if not names:
        return ("Not run (they take a stage 1.5 and a stage 2 each): `python -m demo --ablations` adds nearest-"
                "neighbour matching, causal attention, brief captions, the caption loss alone and the VTR variants "
                "in stage 1.5, each trained from the Croc stage-1 model, then stage 2 and the evaluation.")
    splits = metrics["splits"]
    report, other = metrics["report_split"], "val" if metrics["report_split"] == "test" else None
    header = ["variant"] + ([f"{other} overall"] if other in splits else []) + [
        f"{report} overall", f"{report}: − Croc (95% interval)", f"{report}: − baseline (95% interval)"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for arm in [a for a in state.arms if not a.ablation] + [a for a in state.arms if a.ablation]:
        cells = [arm.label]
        if other in splits:
            cells.append(_pct(splits[other]["accuracy"].get(arm.name, {}).get(OVERALL, {}).get("mean")))
        cells.append(_pct(splits[report]["accuracy"].get(arm.name, {}).get(OVERALL, {}).get("mean")))
        cells.append(_interval(splits[report]["minus_croc"].get(arm.name)))
        cells.append(_interval(splits[report]["minus_baseline"].get(arm.name)))
        lines.append("| " + " | ".join(cells) + " |")
    reading = ablation_reading(state.arms, splits[report])
    return "\n".join(lines) + (f"\n\n{reading}" if reading else "")


CAPTION_ONLY_ARM = "ablation_dcg"  # stage 1.5 without pool and VTR: what the pool / VTR part adds is Croc minus it


def ablation_reading(arms, split: dict[str, Any]) -> str:
    """What the ablation table shows, read off its intervals: which variants separate from full Croc (95% interval
    excluding zero), and what the pool / VTR part adds over stage 1.5 with the caption loss alone."""
    minus_croc, minus_baseline = split["minus_croc"], split["minus_baseline"]
    ablations = [arm for arm in arms if arm.ablation and arm.name in minus_croc]
    if not ablations:
        return ""

    def separates(entry: dict[str, float]) -> bool:
        return entry["low"] > 0 or entry["high"] < 0

    apart = [f"{arm.label} {_interval(minus_croc[arm.name])}" for arm in ablations if separates(minus_croc[arm.name])]
    sentences = [("Separable from full Croc (interval excluding zero): " + "; ".join(apart) + ".") if apart else
                 "No variant separates from full Croc: every interval of the '− Croc' column includes zero."]
    caption_only = minus_croc.get(CAPTION_ONLY_ARM)
    if caption_only is not None:
        if not separates(caption_only):
            sentences.append(f"Stage 1.5 with the caption loss alone (no pool, no VTR) scores what full Croc scores "
                             f"({_interval(caption_only)}): at this scale the pool, the matching and the "
                             "reconstruction add nothing measurable")
        elif caption_only["high"] < 0:
            sentences.append(f"Dropping the pool and VTR (caption loss alone) costs {_interval(caption_only)}: the "
                             "pool / VTR part helps")
        else:
            sentences.append(f"Stage 1.5 with the caption loss alone beats full Croc by {_interval(caption_only)}: "
                             "the pool / VTR part hurts here")
        over_baseline = minus_baseline.get(CAPTION_ONLY_ARM)
        if over_baseline is not None:
            sentences[-1] += (f"; the caption training itself gives {_interval(over_baseline)} over the baseline, "
                              "which sees the same detailed captions in stage 1.")
        else:
            sentences[-1] += "."
    return " ".join(sentences)


def _vtr_table(state, metrics: dict[str, Any]) -> str:
    """Per stage-1.5 run: its VTR form, the probe on unseen images against the trivial predictor, the norms."""
    probe = metrics.get("vtr_probe") or {}
    if not probe:
        return ""
    lines = ["| stage-1.5 run | VTR form | VTR loss (unseen images) | trivial predictor | ratio | prediction norm | "
             "target norm | final `L_DCG` |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    labels = {arm.name: arm.label for arm in state.arms}
    for run, fit in probe.items():
        dcg = metrics["final_losses"].get(run, {}).get("lm_loss")
        arm = run.split("/")[0]
        label = labels.get(arm, f"{arm} (pool figure only)" if arm == "ablation_nearest" else arm)
        lines.append(f"| {label} | {fit.get('form', '–')} | {fit['vtr_loss']:.4g} | {fit['trivial_loss']:.4g} | {fit['ratio_to_trivial']:.3f} | "
                     f"{fit['prediction_norm']:.3g} | {fit['target_norm']:.3g} | "
                     f"{'–' if dcg is None else f'{dcg:.3f}'} |")
    return "\n".join(lines)


def _split_note(metrics: dict[str, Any]) -> str:
    splits = metrics["splits"]
    if "val" in splits and "test" in splits:
        return (f"Settings (sizes, rates, steps, the VTR form) were chosen on the validation split "
                f"({splits['val']['num_questions']} questions on their own images); the test split "
                f"({splits['test']['num_questions']} questions) is reported here.")
    if "test" not in splits:
        return "This run evaluated the validation split only (`--eval-splits val`), as done while choosing settings."
    return ""


def _tower_text(metrics: dict[str, Any]) -> str:
    tower = metrics.get("tower") or {}
    summary = tower.get(min(tower)) if tower else None
    if not summary or not summary.get("steps"):
        return "not pretrained in this run"
    return (f"{summary['steps']} steps, contrastive loss {summary['first_loss']:.2f} → {summary['final_loss']:.2f}, "
            f"image-to-caption retrieval {100 * summary['train_batch_retrieval_accuracy']:.0f}% in a batch of training "
            f"pairs against {100 * summary['chance_retrieval_accuracy']:.1f}% chance")


def _vtr_section(state, metrics: dict[str, Any]) -> str:
    table = _vtr_table(state, metrics)
    if not table:
        return "No stage-1.5 run in this demo."
    return f"""Each stage-1.5 model, after training, on the detailed captions of images no training file contains: its VTR
distance at the reconstructed positions, the same distance for the trivial predictor that always outputs the mean
target, and their ratio (well below 1: the model reconstructs the individual tokens; about 1: it only learned where
the targets sit on average, e.g. their scale). Norms are mean L2 norms of the predictions and the (normalised)
targets at those positions (first seed's masks; means over seeds).

{table}

![VTR norms]({FIGURE_FILES['vtr_norms']})"""


def write_report(state) -> Path:
    """Write metrics.json, timings.json and report.md into the report folder; returns the report path."""
    folder: Path = state.report_dir
    folder.mkdir(parents=True, exist_ok=True)
    metrics = build_metrics(state)
    (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    write_timings(state)
    path = folder / REPORT_FILE
    path.write_text(render_report(state, metrics), encoding="utf-8")
    return path


def _chat_example(state):
    """The question the Reproduce block asks the chat: the first held-out question Croc's first seed answered right
    (the first question when it answered none): the command then shows an answer the report counts as right; how
    often that happens is the accuracy above, not this example."""
    if not state.predictions:
        return state.questions[0]
    answers = state.predictions[min(state.predictions)].get("croc", [])
    for question, answer in zip(state.questions, answers):
        if normalize_answer(answer) == normalize_answer(question.answer):
            return question
    return state.questions[0]


def render_report(state, metrics: dict[str, Any]) -> str:
    """The Markdown of report.md."""
    settings = state.options.settings
    seeds = len(metrics["seeds"])
    difference = metrics["croc_minus_baseline"]
    croc, base = (metrics["accuracy"][arm][OVERALL]["mean"] for arm in ("croc", "baseline"))
    quick_note = ("\n> **Quick run** (`--quick`): tiny model, a few steps. It checks that the pipeline works; its "
                  "numbers mean nothing.\n" if settings.name == "quick" else "")
    seeds_text = f"{seeds} seed{'s' if seeds > 1 else ''}"
    reproduce = (f"python -m demo --out {state.out} --seed {state.options.seed}"
                 + (f" --seeds {seeds}" if seeds > 1 else "")
                 + (" --ablations" if any(arm.ablation for arm in state.arms) else "")
                 + (" --quick" if settings.name == "quick" else ""))
    first = _chat_example(state)
    grid = settings.model.image_size // settings.model.patch_size
    return f"""# Croc vs LLaVA-1.5* on synthetic scenes: CPU demo report
{quick_note}
**Held-out {metrics['report_split']} exact match, overall: Croc {_pct(croc)}% vs baseline {_pct(base)}%** \
({metrics['num_test_questions']} questions, {seeds_text}). {verdict(difference)}

{_split_note(metrics)}

Both arms start from the same random-init model, see the same training data (brief captions, detailed captions,
questions) and take the same number of optimiser steps ({metrics['steps']['croc']}) at the same batch size. Croc
spends part of them in stage 1.5 (prompt pool + Hungarian matching, mixed attention, VTR + caption loss); the
baseline (the paper's "LLaVA-1.5*", table 5) spends them in stage 1, on the same detailed captions as plain
captioning, where only the projector trains. So Croc's language model also trains for longer; the stage-1.5
ablations (`--ablations`) separate the caption loss from the pool / VTR / attention parts.

## Held-out accuracy per question type, {metrics['report_split']} split (%)

{accuracy_table(state, metrics)}

Chance: *uniform* guesses among the type's training answers; *majority* always gives its most frequent training
answer (what a model that ignores the image can reach). Exact match after lower-casing and stripping punctuation;
greedy decoding. Overall Croc − baseline, paired over questions{' and averaged over seeds' if seeds > 1 else ''}: \
{100 * difference['difference']:+.1f} points, 95% interval {100 * difference['low']:+.1f} to \
{100 * difference['high']:+.1f}.

![accuracy]({FIGURE_FILES['accuracy']})

## Sample generations

![samples]({FIGURE_FILES['samples']})

## Training

![losses]({FIGURE_FILES['losses']})

The stage-1.5 loss is `L = 10 · L_VTR + L_DCG`; `L_VTR` is the distance between the LM's prediction and the original
visual token at the reconstructed positions, averaged over them, in the form the run's configuration sets (the VTR
table below). {_stage1_5_change(metrics)}

![pool utilisation]({FIGURE_FILES['pool']})

Prompt-pool utilisation: the share of the {settings.model.prompt_pool_size} pool tokens assigned at least once in a
logging window. Hungarian matching assigns each masked token of an image its own pool token; nearest-neighbour
matching lets many tokens share one.

![attention mask]({FIGURE_FILES['mask']})

## Stage-1.5 ablations

{_ablation_paragraph(state, metrics)}

Differences are paired over questions and averaged over seeds; the interval is 95% (normal approximation).

## Does stage 1.5 reconstruct? The VTR objective

{_vtr_section(state, metrics)}

## Setup

{_setup_table(state, metrics)}

{_runs_table(state)}

What differs from a real run, all forced by the scale:
- the vision tower is a {settings.model.vision_layers}-layer CLIP-style encoder pretrained in stage 0 with CLIP's \
contrastive loss on the training scenes' brief captions ({_tower_text(metrics)}), then frozen in every stage as in the \
paper; not the paper's CLIP ViT-L/14;
- the LM is a random-init Llama-style model, so it trains at the rate of the table above instead of the paper's 2e-5
  (which moves a random LM nowhere in a few hundred steps), and so does the projector in stage 2; the projector and
  pool rates of stages 1 and 1.5 are the paper's (1e-3, 1.5e-4);
- the tokenizer is a SentencePiece BPE model fitted to the training texts (a 32K vocabulary would spend most of each
  step in the output layer);
- each image is {grid}×{grid} patches of {settings.model.patch_size} px = {settings.model.num_image_tokens} visual \
tokens, with a pool of {settings.model.prompt_pool_size} (the paper: 576 and 2048);
- stage 2 gives each image's questions as one multi-turn conversation, as LLaVA-1.5's instruction data does.

Everything else (templates, masking ratio 0.75, Hungarian matching, mixed attention, VTR weight 10, cosine schedule,
AdamW betas (0.9, 0.98), the trainer, its configs and checks) is the real code path.

## Wall time

{_timing_table(state)}

Measured on this machine with {state.options.threads} torch thread(s); `timings.json` has the same numbers.

## Reproduce

```bash
{reproduce}
python -m modeling_croc.chat {state.run_dir(min(state.histories), 'croc/stage2')} \\
    --image {state.scenes / first.image} --question "{first.text.splitlines()[0]}"
```
"""


def summary_line(state) -> str:
    """The one line printed at the end of `python -m demo`."""
    metrics = json.loads((state.report_dir / METRICS_FILE).read_text(encoding="utf-8"))
    accuracy = metrics["accuracy"]
    parts = [f"{arm.name} {_pct(accuracy[arm.name][OVERALL]['mean'])}%" for arm in state.arms
             if arm.name in accuracy]
    seeds = len(metrics["seeds"])
    return (f"demo done in {state.timings['total'] / 60:.1f} min: held-out exact match ({metrics['num_test_questions']}"
            f" questions, {seeds} seed{'s' if seeds > 1 else ''}) " + ", ".join(parts)
            + f"; report: {state.report_dir / REPORT_FILE}")
