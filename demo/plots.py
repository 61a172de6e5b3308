"""The report's figures (matplotlib, Agg backend, PNG): loss curves per stage, prompt-pool utilisation, the mixed
attention mask of a real stage-1.5 sample, held-out accuracy per question type, and sample generations."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a CPU box or in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402
from mpl_toolkits.axes_grid1 import make_axes_locatable  # noqa: E402
from PIL import Image  # noqa: E402

from .evaluate import OVERALL, normalize_answer  # noqa: E402
from .metrics import aggregate_accuracy, curve, question_types  # noqa: E402

DPI = 130
# One colour per arm everywhere (curves, bars, sample captions).
ARM_COLORS: dict[str, str] = {
    "croc": "#d95f02",
    "baseline": "#7570b3",
    "ablation_nearest": "#1b9e77",
    "ablation_causal": "#e7298a",
    "ablation_brief": "#66a61e",
    "ablation_dcg": "#a6761d",
    "vtr_cosine": "#1f78b4",
    "vtr_last_layer": "#6a3d9a",
    "vtr_linear_l2": "#33a02c",
    "vtr_literal": "#b15928",
    "vtr_bert_l2": "#666666",
}
FIGURE_FILES: dict[str, str] = {
    "losses": "loss_curves.png",
    "pool": "pool_utilisation.png",
    "mask": "attention_mask.png",
    "accuracy": "accuracy.png",
    "samples": "samples.png",
    "vtr_norms": "vtr_norms.png",
}


def make_figures(state) -> dict[str, str]:
    """Draw every figure into the report folder; returns figure key -> file name."""
    folder: Path = state.report_dir
    plot_losses(state, folder / FIGURE_FILES["losses"])
    plot_pool_utilisation(state, folder / FIGURE_FILES["pool"])
    plot_attention_mask(state, folder / FIGURE_FILES["mask"])
    plot_accuracy(state, folder / FIGURE_FILES["accuracy"])
    plot_samples(state, folder / FIGURE_FILES["samples"])
    plot_vtr_norms(state, folder / FIGURE_FILES["vtr_norms"])
    return dict(FIGURE_FILES)


def plot_vtr_norms(state, path: Path) -> None:
    """Mean norms of the VTR predictions and targets over stage 1.5, per stage-1.5 run: where the two sit far
    apart the reconstruction loss is mostly a scale gap."""
    runs = [(f"{arm.name}/stage1_5", arm.label, ARM_COLORS.get(arm.name, "k")) for arm in state.arms
            if any(run.stage == "1.5" for run in arm.runs)]
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.4))
    for ax, key, title in zip(axes, ("vtr_prediction_norm", "vtr_target_norm"),
                              ("VTR prediction norm (what the loss compares)", "VTR target norm")):
        drawn = [_draw_curve(ax, state, run, key, label, color, smooth=0.0) for run, label, color in runs]
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("optimiser step in stage 1.5")
        ax.set_ylabel("mean L2 norm")
        ax.grid(alpha=0.3)
        # A norm that barely moves (the final norm's output) must read as its value, not as offsets from it.
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        if any(drawn):
            _log_scale_if_wide(ax)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
        fig.subplots_adjust(bottom=0.32)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)


def _smooth(values: list[float], weight: float) -> np.ndarray:
    """Exponential moving average (TensorBoard's smoothing), so the trend reads through step-to-step noise."""
    out, running = [], None
    for value in values:
        running = value if running is None else weight * running + (1 - weight) * value
        out.append(running)
    return np.asarray(out)


def _seed_curves(state, run: str, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Steps and a (seeds, points) array of `key` for run `run` over every seed (None when not logged)."""
    rows, steps = [], None
    for seed in sorted(state.histories):
        history = state.histories[seed].get(run)
        if history is None:
            continue
        x, y = curve(history, key)
        if not y:
            return None
        steps = np.asarray(x) if steps is None else steps
        rows.append(y[: len(steps)])
    if not rows:
        return None
    length = min(len(r) for r in rows)
    return steps[:length], np.asarray([r[:length] for r in rows])


def _draw_curve(ax, state, run: str, key: str, label: str, color: str, smooth: float = 0.4) -> bool:
    data = _seed_curves(state, run, key)
    if data is None:
        return False
    steps, values = data
    mean = values.mean(axis=0)
    ax.plot(steps, mean, color=color, alpha=0.25, linewidth=1)
    ax.plot(steps, _smooth(list(mean), smooth), color=color, linewidth=2, label=label)
    if values.shape[0] > 1:
        ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=color, alpha=0.12, linewidth=0)
    return True


def _arm_label(state, arm_name: str) -> str:
    return next((arm.label for arm in state.arms if arm.name == arm_name), arm_name)


def plot_losses(state, path: Path) -> None:
    """LM loss of every stage and the VTR loss of stage 1.5, one panel each, every arm that has the stage."""
    panels = [
        ("Stage 1: caption loss (projector only)", "lm_loss", "stage1"),
        ("Stage 1.5: caption (DCG) loss", "lm_loss", "stage1_5"),
        ("Stage 1.5: VTR loss (each run's own objective)", "vtr_loss", "stage1_5"),
        ("Stage 2: answer loss (held-in questions)", "lm_loss", "stage2"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11.5, 8.0))
    for ax, (title, key, stage_dir) in zip(axes.ravel(), panels):
        drawn = [_draw_curve(ax, state, f"{arm.name}/{stage_dir}", key, arm.label, ARM_COLORS.get(arm.name, "k"))
                 for arm in state.arms]
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("optimiser step in the stage")
        ax.grid(alpha=0.3)
        if any(drawn):
            ax.legend(fontsize=8, loc="upper right")
        if key == "lm_loss":
            ax.set_ylabel("cross-entropy (nats / token)")
        else:  # the objective each run configures (the paper preset: MSE on standardised targets)
            ax.set_ylabel("VTR loss per token (the run's vtr_loss)")
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        _log_scale_if_wide(ax)
    fig.suptitle("Training losses (faint: logged values, bold: smoothed" +
                 (f"; band: min-max over {len(state.histories)} seeds)" if len(state.histories) > 1 else ")"),
                 fontsize=12)
    fig.tight_layout()
    _save(fig, path)


def _log_scale_if_wide(ax, ratio: float = 4.0) -> None:
    """Log y axis when the curves span more than `ratio` (a loss falling from ~7 nats: the part below 1 matters),
    with plain 1-2-5 tick labels instead of powers of ten."""
    values = [y for line in ax.get_lines() for y in line.get_ydata() if y > 0]
    if not values or max(values) / min(values) < ratio:
        return
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel(ax.get_ylabel() + ", log scale")


def plot_pool_utilisation(state, path: Path) -> None:
    """Share of pool tokens used per logging window and the assignment entropy, Hungarian vs nearest."""
    runs = [("croc/stage1_5", "Hungarian (Croc)", ARM_COLORS["croc"]),
            ("ablation_nearest/stage1_5", "nearest neighbour", ARM_COLORS["ablation_nearest"])]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    drawn_nearest = False
    for run, label, color in runs:
        for ax, key in zip(axes, ("pool_utilisation", "pool_entropy")):
            drawn = _draw_curve(ax, state, run, key, label, color, smooth=0.3)
            drawn_nearest |= drawn and run.startswith("ablation_nearest")
    pool_size = state.options.settings.model.prompt_pool_size
    axes[0].set_ylim(-0.02, 1.05)
    axes[0].set_ylabel("pool tokens used at least once")
    axes[0].set_title(f"Prompt-pool utilisation (pool of {pool_size})", fontsize=11)
    axes[1].axhline(math.log(pool_size), color="gray", linestyle=":", linewidth=1)
    axes[1].text(0.02, math.log(pool_size), "uniform use (log N)", va="bottom", fontsize=8, color="gray",
                 transform=axes[1].get_yaxis_transform())
    axes[1].set_ylabel("entropy of the assignments (nats)")
    axes[1].set_title("Assignment entropy", fontsize=11)
    for ax in axes:
        ax.set_xlabel("optimiser step in stage 1.5")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    if not drawn_nearest:
        fig.text(0.5, -0.04, "nearest-neighbour curve: run `python -m demo --ablations`", ha="center", fontsize=9,
                 style="italic")
    fig.tight_layout()
    _save(fig, path)


def mask_sample(state) -> dict[str, Any]:
    """A real stage-1.5 sample, collated as the trainer does, and its mixed and causal masks as (L, L) bools.

    The shortest of the first rows of the stage-1.5 data is taken so every token stays visible in the figure.
    """
    from transformers.masking_utils import create_causal_mask

    from data_recipes import load_llava_json
    from modeling_croc import IGNORE_INDEX, CrocConfig, CrocProcessor
    from modeling_croc.attention_mask import bidirectional_block_ids, build_mixed_attention_mask
    from trainer.collator import build_collator
    from trainer.data import CrocSupervisedDataset

    from .runs import stage_arguments

    seed = min(state.histories)
    folder = state.run_dir(seed, "croc/stage1_5")
    config = CrocConfig.from_pretrained(folder)
    processor = CrocProcessor.from_pretrained(folder)
    stage = stage_arguments("stage1_5")
    rows = load_llava_json(state.scenes / "detailed_captions.json")  # the generator's own file: clean rows
    dataset = CrocSupervisedDataset(rows, processor, template=stage.template, image_root=state.scenes,
                                    model_max_length=stage.model_max_length)
    candidates = [dataset[i] for i in range(min(len(dataset), 32))]
    sample = min((c for c in candidates if c is not None), key=lambda c: len(c["input_ids"]))
    batch = build_collator(processor)([sample])
    image_tokens = batch["input_ids"] == config.image_token_id
    text_config = config.text_config
    text_config._attn_implementation = "eager"  # additive float mask: 0 where attention is allowed
    embeds = torch.zeros(*batch["input_ids"].shape, text_config.hidden_size)
    blocks = bidirectional_block_ids(config.bidirectional_span, image_tokens, batch["labels"], batch["attention_mask"])
    mixed = build_mixed_attention_mask(text_config, embeds, batch["attention_mask"], blocks)
    # The causal reference is what the language model builds itself (span "none" hands it the 2D mask).
    causal = create_causal_mask(text_config, embeds, batch["attention_mask"], None)
    return {
        "mixed": (mixed[0, 0] == 0).numpy(),
        "causal": (causal[0, 0] == 0).numpy(),
        "image": image_tokens[0].numpy(),
        "supervised": (batch["labels"][0] != IGNORE_INDEX).numpy(),
        "span": config.bidirectional_span,
    }


def plot_attention_mask(state, path: Path, caption_tokens_shown: int = 40) -> None:
    """The mixed mask of one sample: causal part, the extra bidirectional image block, and what stays hidden.

    Only the first `caption_tokens_shown` tokens after the image are drawn: the rest of a caption is more of the
    same causal triangle and would shrink the image block to a few pixels.
    """
    sample = mask_sample(state)
    image = sample["image"]
    full_length = len(image)
    last_image = int(full_length - np.argmax(image[::-1]) - 1)
    length = min(full_length, last_image + 1 + caption_tokens_shown)
    mixed, causal = sample["mixed"][:length, :length], sample["causal"][:length, :length]
    image, supervised = image[:length], sample["supervised"][:length]
    # 0 hidden, 1 causal (both masks allow), 2 allowed only by the mixed mask (an image token sees a later one).
    codes = np.where(mixed & causal, 1, 0) + np.where(mixed & ~causal, 2, 0)
    fig, ax = plt.subplots(figsize=(7.6, 7.6))
    ax.imshow(codes, cmap=ListedColormap(["#f4f4f4", "#9ecae1", "#d95f02"]), vmin=0, vmax=2, interpolation="nearest")
    ax.set_xlabel("key position (attended to)")
    ax.yaxis.set_label_position("right")
    ax.yaxis.tick_right()
    ax.set_ylabel("query position (attending)")
    # Token-type strips along both axes (prompt text, image tokens, supervised caption), glued to the matrix.
    kinds = np.where(image, 1, np.where(supervised, 2, 0))[None, :]
    strip_cmap = ListedColormap(["#bdbdbd", "#6a3d9a", "#31a354"])
    divider = make_axes_locatable(ax)
    top = divider.append_axes("top", size="3%", pad=0.05, sharex=ax)
    top.imshow(kinds, cmap=strip_cmap, vmin=0, vmax=2, aspect="auto", interpolation="nearest")
    left = divider.append_axes("left", size="3%", pad=0.05, sharey=ax)
    left.imshow(kinds.T, cmap=strip_cmap, vmin=0, vmax=2, aspect="auto", interpolation="nearest")
    for strip in (top, left):
        strip.tick_params(left=False, bottom=False, labelleft=False, labelbottom=False)
    first = int(np.argmax(image))
    ax.add_patch(plt.Rectangle((first - 0.5, first - 0.5), last_image - first + 1, last_image - first + 1,
                               fill=False, edgecolor="black", linewidth=1.2))
    ax.legend(handles=[
        Patch(color="#9ecae1", label="allowed: causal (every stage)"),
        Patch(color="#d95f02", label="allowed: added by mixed attention\n(image token sees a later image token)"),
        Patch(color="#f4f4f4", label="hidden"),
        Patch(color="#bdbdbd", label="axis strip: prompt text"),
        Patch(color="#6a3d9a", label="axis strip: image tokens"),
        Patch(color="#31a354", label="axis strip: supervised caption"),
    ], loc="lower left", fontsize=8, framealpha=0.95)
    shown = f"first {length} of {full_length} tokens" if length < full_length else f"{full_length} tokens"
    top.set_title(f"Stage-1.5 attention mask of one collated training sample\n({shown}, {int(image.sum())} image "
                  f"tokens, bidirectional_span={sample['span']!r})", fontsize=10)
    _save(fig, path)


def plot_accuracy(state, path: Path) -> None:
    """Held-out exact-match accuracy per question type, one bar per arm, with the two chance levels."""
    accuracy = aggregate_accuracy(state)
    types = question_types(state)
    arms = [arm for arm in state.arms if arm.name in accuracy]
    width = 0.8 / len(arms)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.35 * len(types) + 1.5 * len(arms)), 4.4))
    x = np.arange(len(types))
    for k, arm in enumerate(arms):
        means = [100 * accuracy[arm.name].get(t, {}).get("mean", 0.0) for t in types]
        stds = [100 * accuracy[arm.name].get(t, {}).get("std", 0.0) for t in types]
        offsets = x - 0.4 + width * (k + 0.5)
        bars = ax.bar(offsets, means, width, color=ARM_COLORS.get(arm.name, "gray"), label=arm.label,
                      yerr=stds if len(state.accuracy) > 1 else None, capsize=2)
        for bar, value in zip(bars, means):
            ax.text(bar.get_x() + bar.get_width() / 2, value + 1, f"{value:.0f}", ha="center", va="bottom",
                    fontsize=7)
    for i, t in enumerate(types):
        chance = state.chance.get(t, {})
        ax.hlines(100 * chance.get("majority", 0), i - 0.45, i + 0.45, colors="black", linewidth=1.5,
                  label="chance: majority answer" if i == 0 else None)
        ax.hlines(100 * chance.get("uniform", 0), i - 0.45, i + 0.45, colors="black", linestyles=":",
                  linewidth=1.2, label="chance: uniform guess" if i == 0 else None)
    n = {t: accuracy[arms[0].name].get(t, {}).get("n", 0) for t in types}
    ax.set_xticks(x, [f"{t}\n(n={n[t]})" for t in types])
    ax.set_ylim(0, 109)
    ax.set_ylabel("exact match on held-out questions (%)")
    seeds = len(state.accuracy)
    ax.set_title(f"Held-out accuracy per question type ({seeds} seed{'s' if seeds > 1 else ''}"
                 + (", mean ± std)" if seeds > 1 else ")"), fontsize=11)
    ax.legend(fontsize=8, ncol=min(4, len(arms) + 2), loc="upper center", bbox_to_anchor=(0.5, -0.16),
              frameon=False)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def sample_questions(state, count: int) -> list[int]:
    """Indices of `count` test questions on distinct images, cycling through the question types."""
    by_type: dict[str, list[int]] = {}
    for index, question in enumerate(state.questions):
        by_type.setdefault(question.question_type, []).append(index)
    chosen, used_images = [], set()
    types = sorted(by_type)
    cursor = {t: 0 for t in types}
    while len(chosen) < count and any(cursor[t] < len(by_type[t]) for t in types):
        for t in types:
            while cursor[t] < len(by_type[t]) and state.questions[by_type[t][cursor[t]]].image in used_images:
                cursor[t] += 1
            if cursor[t] < len(by_type[t]) and len(chosen) < count:
                index = by_type[t][cursor[t]]
                chosen.append(index)
                used_images.add(state.questions[index].image)
                cursor[t] += 1
    return chosen


def plot_samples(state, path: Path) -> None:
    """Test images beside their question, the Croc and baseline answers (green right, red wrong) and the truth."""
    seed = min(state.predictions)
    indices = sample_questions(state, state.options.settings.num_samples)
    columns = 2
    rows = max(1, math.ceil(len(indices) / columns))
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(11, 2.6 * rows),
                             gridspec_kw={"width_ratios": [1, 1.6] * columns})
    axes = np.atleast_2d(axes)
    for ax in axes.ravel():
        ax.axis("off")
    for k, index in enumerate(indices):
        question = state.questions[index]
        image_ax, text_ax = axes[k // columns, 2 * (k % columns)], axes[k // columns, 2 * (k % columns) + 1]
        image_ax.imshow(Image.open(state.scenes / question.image).convert("RGB"), interpolation="nearest")
        image_ax.set_title(Path(question.image).name, fontsize=8)
        text = question.text.split("\n")[0]
        text_ax.text(0.0, 0.95, f"[{question.question_type}]\n{text}", fontsize=9, va="top", wrap=True,
                     transform=text_ax.transAxes)
        lines = [(arm, state.predictions[seed].get(arm)) for arm in ("croc", "baseline")]
        y = 0.55
        for arm, answers in lines:
            if answers is None:
                continue
            answer = answers[index]
            right = normalize_answer(answer) == normalize_answer(question.answer)
            label = "Croc" if arm == "croc" else "baseline"
            text_ax.text(0.0, y, f"{label}: {answer or '(empty)'}  {'✓' if right else '✗'}", fontsize=9,
                         color="#1a9641" if right else "#d7191c", transform=text_ax.transAxes, va="top")
            y -= 0.18
        text_ax.text(0.0, y, f"truth: {question.answer}", fontsize=9, fontweight="bold",
                     transform=text_ax.transAxes, va="top")
    fig.suptitle(f"Sample generations on held-out images (greedy, seed {seed}; the image is the model's "
                 f"{state.options.settings.image_size}x{state.options.settings.image_size} input)", fontsize=11)
    fig.tight_layout()
    _save(fig, path)


__all__ = ["FIGURE_FILES", "make_figures", "OVERALL"]
