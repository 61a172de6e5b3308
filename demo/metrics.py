"""Numbers of the report, from the pipeline state: accuracy per arm and question type (mean, std over seeds), the
paired Croc - baseline difference with its interval, curves out of the trainer logs. Pure functions, no I/O."""

from __future__ import annotations

import math
import statistics
from typing import Any

from .evaluate import OVERALL, normalize_answer

# Keys of the trainer's `log_history` entries that the figures use.
CURVE_KEYS: tuple[str, ...] = ("loss", "lm_loss", "vtr_loss", "pool_utilisation", "pool_entropy",
                               "vtr_prediction_norm", "vtr_target_norm")


def question_types(state) -> list[str]:
    """Question types of the test set in a fixed order, then `OVERALL`."""
    return sorted({q.question_type for q in state.questions}) + [OVERALL]


def aggregate_accuracy(state) -> dict[str, dict[str, dict[str, Any]]]:
    """`{arm: {type: {"mean", "std", "per_seed", "n"}}}`; std is 0.0 for one seed."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    seeds = sorted(state.accuracy)
    for arm in state.arms:
        out[arm.name] = {}
        for qtype in question_types(state):
            values = [state.accuracy[seed][arm.name][qtype]["accuracy"] for seed in seeds
                      if qtype in state.accuracy[seed].get(arm.name, {})]
            if not values:
                continue
            n = state.accuracy[seeds[0]][arm.name][qtype]["total"]
            out[arm.name][qtype] = {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "per_seed": values,
                "n": n,
            }
    return out


def paired_difference(state, arm: str = "croc", reference: str = "baseline") -> dict[str, float]:
    """Overall accuracy of `arm` minus `reference` on the same questions and seeds, with a 95% interval
    (normal approximation over the per-question differences, averaged over seeds)."""
    seeds = sorted(state.predictions)
    differences = []
    for index, question in enumerate(state.questions):
        truth = normalize_answer(question.answer)
        per_seed = [
            int(normalize_answer(state.predictions[seed][arm][index]) == truth)
            - int(normalize_answer(state.predictions[seed][reference][index]) == truth)
            for seed in seeds
        ]
        differences.append(statistics.fmean(per_seed))
    mean = statistics.fmean(differences)
    half_width = 1.96 * statistics.stdev(differences) / math.sqrt(len(differences)) if len(differences) > 1 else 0.0
    return {"difference": mean, "low": mean - half_width, "high": mean + half_width}


def verdict(difference: dict[str, float]) -> str:
    """One honest sentence about the paired difference."""
    low, high = difference["low"], difference["high"]
    points = f"{100 * difference['difference']:+.1f} points (95% interval {100 * low:+.1f} to {100 * high:+.1f})"
    if low > 0:
        return f"Croc beats the baseline at this scale: {points}."
    if high < 0:
        return f"Croc does **not** beat the baseline at this scale; it is worse: {points}."
    return f"Croc does **not** clearly beat the baseline at this scale: {points}, an interval that includes zero."


def curve(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of `key` in a trainer `log_history` (the final summary entry has none of the keys)."""
    points = [(int(entry["step"]), float(entry[key])) for entry in history if key in entry and "step" in entry]
    return [p[0] for p in points], [p[1] for p in points]


def final_value(history: list[dict[str, Any]], key: str, window: int = 3) -> float | None:
    """Mean of the last `window` logged values of `key` (None if never logged)."""
    _, values = curve(history, key)
    return statistics.fmean(values[-window:]) if values else None


def paired_table(view, reference: str) -> dict[str, dict[str, float]]:
    """`{arm: paired_difference(arm - reference)}` for every evaluated arm but `reference`, on one split."""
    evaluated = set().union(*(set(arms) for arms in view.predictions.values())) if view.predictions else set()
    if reference not in evaluated:
        return {}
    return {arm.name: paired_difference(view, arm.name, reference) for arm in view.arms
            if arm.name in evaluated and arm.name != reference}


def mean_over_seeds(per_seed: dict[int, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """`{run: {key: mean over the seeds that have it}}` of a `seed -> run -> {key: value}` mapping; a value that is
    not a number (a label) is the first seed's."""
    runs: dict[str, list[dict[str, float]]] = {}
    for by_run in per_seed.values():
        for run, values in by_run.items():
            runs.setdefault(run, []).append(values)
    return {run: {key: statistics.fmean(v[key] for v in values) if isinstance(values[0][key], (int, float))
                  else values[0][key] for key in values[0]}
            for run, values in runs.items()}
