"""Which lmms-eval results may go on a model's card: reading a results file (`eval_results_from_lmms_eval`: whole
benchmarks only), and which model it scored (`scored_model_note`: this folder by path or weights, an export or merge
of it by its card and its tensors, or a model elsewhere under its name). What the card then says is
`trainer.model_card`'s; where the card file is, `trainer.run_card_file`'s.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard

from modeling_croc.publish_folder import file_digest

from .run_card_file import card_title, run_card_path

logger = logging.getLogger(__name__)

PIPELINE_TAG = "image-text-to-text"


def _read_results_json(path: Path) -> Any:
    """The JSON of a results file; a ValueError naming the file for one that is not there, a folder, unreadable or
    not JSON (Python's own `[Errno 2] No such file or directory: '...'` did not say which option it came from)."""
    if path.is_dir():
        raise ValueError(f"eval results file {path} is a folder: give the *_results.json file in it (lmms-eval writes "
                         "OUTPUT/<model>/<date>_results.json)")
    if not path.is_file():
        glob = " (a shell pattern that matched nothing?)" if any(char in path.name for char in "*?[") else ""
        raise ValueError(f"eval results file {path} does not exist{glob}: give an lmms-eval *_results.json file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"eval results file {path} cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise ValueError(f"eval results file {path} is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"eval results file {path}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})") from None


class PartialEvaluationError(ValueError):
    """An lmms-eval results file that holds no whole-benchmark score: run on part of a task (`--limit`,
    `--offset`), with `--predict_only` (its `bypass` placeholder), or a metric that is not a finite number."""


def _partial_evaluation(data: dict) -> str | None:
    """Why the results file `data` scored only part of its tasks (`--limit` / `--offset`, as lmms-eval records them
    in `config` and `n-samples`), or None."""
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    if isinstance(config.get("offset"), int | float) and config["offset"] > 0:
        return f"was run with --offset {config['offset']}"
    samples = data.get("n-samples") if isinstance(data.get("n-samples"), dict) else {}
    counted = False
    for task, counts in samples.items():
        original, effective = (counts.get(key) if isinstance(counts, dict) else None
                               for key in ("original", "effective"))
        if isinstance(original, int) and isinstance(effective, int):
            counted = True
            if 0 <= effective < original:  # lmms-eval writes min(limit, size): -1 for `--limit -1`, "all samples"
                return f"scored {effective} of the {original} samples of {task}"
    limit = config.get("limit")
    if not counted and isinstance(limit, int | float) and limit > 0:  # `--limit -1` (all) and a null limit pass
        return f"was run with --limit {limit}"
    return None


def eval_results_from_lmms_eval(path: str | Path) -> list[EvalResult]:
    """The metrics of an lmms-eval results file (`OUTPUT/<model>/<date>_results.json`) as card evaluation results:
    one per task and metric (lmms-eval's `metric,filter` keys; standard errors and aliases left out). A file that
    holds no whole-benchmark score raises `PartialEvaluationError`: a card states what the model scores on the
    benchmark, and `--limit 2` on one task or `--predict_only`'s placeholder 999 read as such a score."""
    data = _read_results_json(Path(path))
    results = data.get("results") if isinstance(data, dict) else None
    # lmms-eval's samples files and other JSON sit next to the results files: a top-level list, or `results` without
    # a mapping of metrics per task, ended in an AttributeError traceback (after training, for hub_eval_results).
    if not isinstance(results, dict) or not all(isinstance(metrics, dict) for metrics in results.values()):
        raise ValueError(f"{path} is not an lmms-eval results file (no `results` mapping of task -> metrics)")
    partial = _partial_evaluation(data)
    if partial is not None:
        raise PartialEvaluationError(f"{path} {partial}: a model card states scores on whole benchmarks; evaluate "
                                     "every sample (without --limit and --offset) to report them")
    found = []
    for task, metrics in results.items():
        for key, value in metrics.items():
            metric, _, filter_name = key.partition(",")
            if "_stderr" in metric or metric == "alias" or not isinstance(value, int | float):
                continue
            if metric == "bypass":
                raise PartialEvaluationError(f"{path} holds no score for {task}: `bypass` is lmms-eval's placeholder "
                                             "of --predict_only; score the predictions to report them")
            if not math.isfinite(value):
                # A test split's placeholder or a diverged perplexity: that metric is no score, the others are.
                logger.warning("%s: %s %s is %s, not a score: left off the card", path, task, key, value)
                continue
            # A task scored under several filters (`exact_match,strict-match` and `exact_match,flexible-extract`)
            # reports one value per filter: the filter stays in the name, or the card would list two values under
            # one name (and a later file would replace both). The usual single `none` filter is left out.
            if filter_name not in ("", "none"):
                metric = key
            found.append(EvalResult(task_type=PIPELINE_TAG, dataset_type=task, dataset_name=task, metric_type=metric,
                                    metric_value=float(value)))
    return found


MODEL_ARGS_KEYS = ("peft", "delta", "pretrained", "model", "model_version", "model_name", "model_id", "path")


def scored_model(path: str | Path) -> str | None:
    """The model an lmms-eval results file says it scored: the first of `MODEL_ARGS_KEYS` in `config.model_args` (the
    command line's `k=v,...` string, or a mapping from Python), else its top-level `model_name`; None if neither."""
    data = _read_results_json(Path(path))
    config = data.get("config") if isinstance(data, dict) else None
    model_args = config.get("model_args") if isinstance(config, dict) else None
    if isinstance(model_args, str):
        model_args = dict(part.strip().partition("=")[::2] for part in model_args.split(",") if "=" in part)
    found = next((model_args[key] for key in MODEL_ARGS_KEYS if isinstance(model_args, dict) and model_args.get(key)),
                 None) or (data.get("model_name") if isinstance(data, dict) else None)
    return (str(found).strip() or None) if found else None


def _weight_files(folder: Path) -> dict[str, Path]:
    """`folder`'s weight files by name: safetensors and PyTorch `.bin` files (not `training_args.bin`)."""
    return {file.name: file for pattern in ("*.safetensors", "*.bin") for file in folder.glob(pattern)
            if file.name != "training_args.bin"}


def has_model_weights(folder: str | Path) -> bool:
    """Whether `folder` holds a model's weight files (safetensors or PyTorch `.bin`)."""
    return bool(_weight_files(Path(folder)))


def _same_weights(folder: Path, other: Path) -> bool:
    """Whether two folders hold the same weight files (a copy of the evaluated folder): names, then sizes, then
    digests, so two checkpoints of one run are told apart without hashing where their sizes already differ."""
    mine, theirs = _weight_files(folder), _weight_files(other)
    if not mine or mine.keys() != theirs.keys():
        return False
    if any(mine[name].stat().st_size != theirs[name].stat().st_size for name in mine):
        return False
    return all(file_digest(mine[name]) == file_digest(theirs[name]) for name in mine)


def _differing_tensor(folder: Path, other: Path, limit: int = 4) -> str | None:
    """A weight both folders' safetensors files hold under one name, in one dtype, with other values, or None: an
    export or merge keeps the projector's and most language-model tensors by name, so two runs' folders of the same
    name (`seed0/stage2`, `seed1/stage2`) are told apart by reading a few tensors (projector ones first, being
    small), not their gigabytes."""
    from safetensors import safe_open

    def tensors(root: Path) -> dict[str, tuple[Path, str]]:
        # By name without its `model` / `language_model` parts: a saved Croc folder keeps transformers' legacy
        # layout (`language_model.model.embed_tokens`), an export the current one (`model.language_model.embed_tokens`).
        found: dict[str, list[tuple[Path, str]]] = {}
        for file in sorted(root.glob("*.safetensors")):
            try:
                with safe_open(file, "pt") as handle:
                    for name in handle.keys():
                        plain = ".".join(part for part in name.split(".") if part not in ("model", "language_model"))
                        found.setdefault(plain, []).append((file, name))
            except Exception:  # noqa: BLE001 (safetensors' own error too: a file that does not read compares nothing)
                continue
        return {plain: places[0] for plain, places in found.items() if len(places) == 1}

    mine, theirs = tensors(folder), tensors(other)
    for plain in sorted(mine.keys() & theirs.keys(), key=lambda name: ("projector" not in name, name))[:limit]:
        (left_file, left_name), (right_file, right_name) = mine[plain], theirs[plain]
        with safe_open(left_file, "pt") as left, safe_open(right_file, "pt") as right:
            a, b = left.get_tensor(left_name), right.get_tensor(right_name)
        if a.dtype == b.dtype and (a.shape != b.shape or not bool((a == b).all())):
            return right_name
    return None


# How the cards of the folders made from a trained one name it: an export (`convert to-llava` / `to-plain`) and a
# LoRA run's merged folder hold the same model in another layout, whose weight files never equal the folder's.
DERIVED_FROM = (re.compile(r"^`([^`]+)` exported to its plain parent layout", re.MULTILINE),
                re.compile(r"Merged from the LoRA adapters of `([^`]+)`"))


# How a refusal says to take results of this model evaluated elsewhere (the training config has no such option).
SAME_MODEL = "`python -m trainer.model_card FOLDER --eval-results FILE --same-model`"


def _derived_from(folder: Path) -> str | None:
    """The name of the folder `folder` was exported or merged from, as its card says it, or None."""
    try:
        text = ModelCard.load(run_card_path(folder)).text
    except (OSError, ValueError):
        return None
    return next((found.group(1) for pattern in DERIVED_FROM if (found := pattern.search(text))), None)


def scored_model_note(folder: str | Path, results_file: str | Path, name: str | None = None) -> str | None:
    """Check that an lmms-eval results file scored the model in `folder` (`name`: the model's name besides the
    folder's and its card's heading, e.g. a `hub_model_id`), before its scores go on `folder`'s card.

    Confirmed (None): the file names this folder, resolved, or a folder with identical weight files. Taken with a
    note: a folder exported or merged from this one, by its card (`DERIVED_FROM`: the documented `llava_hf` route
    scores the `to-llava` export); a model not here under this folder's or card's name (evaluated on another
    machine, a Hub id that is the card's); a file that records no model. Refused (ValueError naming both): another
    folder on this machine, or a model not here whose name is none of these: the scores of another model would be
    published under this one's name, and a mismatched name is evidence of that."""
    folder, file_name = Path(folder).expanduser().resolve(), Path(results_file).name
    model = scored_model(results_file)
    if model is None:
        return f"{file_name} records no model: check that it scored this folder"
    card = run_card_path(folder)
    title = card_title(ModelCard.load(card).text) if card.is_file() else None
    names = {name for name in (folder.name, title, name) if name}
    path = Path(model).expanduser()
    if path.is_dir():
        if path.resolve() == folder or _same_weights(folder, path):
            return None
        source = _derived_from(path)
        if source is not None and Path(source).name in names:
            differing = _differing_tensor(folder, path)
            if differing is not None:  # another run's folder of the same name (`seed1/stage2` for `seed0/stage2`)
                raise ValueError(f"{results_file} scored {model}, made from a folder named {Path(source).name} by "
                                 f"its card, but its {differing} differs from {folder}'s: another model; give this "
                                 f"folder's results ({SAME_MODEL} takes them if it holds this model)")
            return (f"{file_name} scored {model}, made from this folder by its card: taken, no tensor both hold "
                    "by name differing")
        raise ValueError(f"{results_file} scored {model} ({path.resolve()}), another model than {folder}: give this "
                         f"folder's results ({SAME_MODEL} takes them if it holds this model)")
    if model == str(folder) or model in names or Path(model).name in names:
        return f"{file_name} scored {model}, not on this machine: taken as this model by its name, weights not compared"
    raise ValueError(f"{results_file} scored {model}, which is not on this machine and is named neither as {folder} "
                     f"nor as its card: give this folder's results ({SAME_MODEL} takes results of this model "
                     "evaluated under another name or path)")
