"""The model card of a Croc training run: Hub metadata (base models, datasets, licence, pipeline tag, evaluation
results, the Croc stage, preset and hyperparameters, final losses) and a short human-readable body.

Base models, licences and datasets are inherited (`modeling_croc.provenance`): from the parts' cards in stage 1
(CLIP and the LM: a Hub id is a base model, its card's licence is carried), from the previous stage's card after
that, and from the data recipe's card (its upstream datasets). Every run writes its card into `output_dir`, so the
next stage reads it. `python -m trainer.model_card FOLDER --eval-results RESULTS.json` adds lmms-eval results to a
saved folder's card.

Where the card goes in the folder (`README.md`, or beside one the user edited) is `trainer.run_card_file`'s; which
lmms-eval results may go on it (whole benchmarks, of this model) is `trainer.eval_results`'.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

from modeling_croc.families import FAMILY_OF_CROC_MODEL_TYPE
from modeling_croc.loading import local_folder
from modeling_croc.provenance import HUB_ID, LICENSE_ID, OTHER_LICENSE, Provenance, is_hub_id
from modeling_croc.publish_folder import file_digest

from .eval_results import PIPELINE_TAG, eval_results_from_lmms_eval, scored_model_note
from .run_card_file import CARD_NAME, RunCard, card_as_written, card_target, card_title, record_card
from .script_args import DataArguments, ModelArguments

PACKAGE = "croc-transformers"
# Croc config fields worth stating on the card.
CARD_CROC_FIELDS = (
    "croc_preset", "croc_pretraining", "prompt_pool_size", "prompt_pool_init", "mask_ratio", "mask_rounding",
    "token_matching", "matching_scope", "bidirectional_span", "vtr_loss_weight", "vtr_loss", "vtr_positions", "vtr_prediction",
    "vtr_head", "vtr_head_layers", "vtr_target_normalization", "normalize_visual_tokens",
)
FINAL_LOG_KEYS = ("loss", "lm_loss", "vtr_loss", "pool_utilisation", "pool_entropy")


def run_provenance(model_args: ModelArguments, data_args: DataArguments | None = None) -> Provenance:
    """Base models, licences and datasets this run inherits: the parts' (stage 1 from CLIP + LM: a part given by Hub
    id is a base model, and its card's licence is carried) or the previous stage folder's card, plus the upstream
    datasets of the data recipe's card (or the Hub id of a pushed dataset, unless private). A Hub id given as
    `data.path` or `model.name_or_path` is named as given: a training run may have no network to ask whether it is
    private (docs/TRAINING.md). `model.base_models` replaces the base models found."""
    if model_args.vision_tower:
        found = Provenance().merged(*(
            Provenance.of_model_folder(local_folder(part), hub_id=part if is_hub_id(part) else None)
            for part in (model_args.language_model, model_args.vision_tower)))
    elif model_args.name_or_path and is_hub_id(model_args.name_or_path):
        found = Provenance(base_models=[model_args.name_or_path])
    else:
        found = Provenance.of_model_folder(model_args.name_or_path)
    if data_args is not None and data_args.path:
        data = Path(data_args.path).expanduser()
        if data.is_dir():
            found = found.merged(Provenance.of_dataset_folder(data), _pushed_dataset(data))
        elif is_hub_id(data_args.path):
            found = found.merged(Provenance(datasets=[data_args.path]))
    if model_args.base_models:
        found.base_models = list(model_args.base_models)
    return found


def _pushed_dataset(build: Path) -> Provenance:
    """The Hub id a data_recipes build was pushed to (its summary.json records it once the push went through), as a
    dataset of the run, unless the Hub held it private at the push (`--private`, or an existing private repo): the
    card goes up with the model, public by default, and a private repository's name is no one else's to read."""
    summary = build / "summary.json"
    if not summary.is_file():
        return Provenance()
    hub = json.loads(summary.read_text(encoding="utf-8")).get("hub") or {}
    repo = hub.get("repo")
    return Provenance(datasets=[repo] if repo and not hub.get("private") else [])


def final_losses(log_history: list[dict[str, Any]], skipped_steps: Sequence[int] = ()) -> dict[str, float]:
    """The last logged value of each loss / pool metric, plus the run's mean `train_loss` (`final_loss_entries`)."""
    return {key: value for key, (value, _) in final_loss_entries(log_history, skipped_steps).items()}


def final_loss_entries(log_history: list[dict[str, Any]],
                       skipped_steps: Sequence[int] = ()) -> dict[str, tuple[float, int | None]]:
    """The last logged value of each loss / pool metric with the step of the entry that logged it (keys may come from
    different entries: a window of text-only steps logs no `vtr_loss`), plus the run's mean `train_loss` (step None).
    A step skipped as non-finite (`skipped_steps`) is not a measured value: the Trainer stands in for its loss with
    the mean of its logging window so far (0.0 when it opens the window) and averages that into the window's entry,
    logged at the window's last step, so an entry whose window holds a skipped step is left out."""
    losses: dict[str, tuple[float, int | None]] = {}
    skipped = sorted(set(skipped_steps))
    window_start = 0  # the step of the previous training log entry: a window is (window_start, step]
    for entry in log_history:
        step = entry.get("step")
        if not isinstance(step, int) or not any(key in entry for key in FINAL_LOG_KEYS):
            if "train_loss" in entry:
                losses["train_loss"] = (round(float(entry["train_loss"]), 6), None)
            continue
        measured = not any(window_start < skipped_step <= step for skipped_step in skipped)
        window_start = step
        for key in FINAL_LOG_KEYS:
            if key in entry and measured:
                losses[key] = (round(float(entry[key]), 6), step)
        if "train_loss" in entry:
            losses["train_loss"] = (round(float(entry["train_loss"]), 6), None)
    return losses


EVALUATION_HEADING = "## Evaluation (lmms-eval)"


def evaluation_section(results: Sequence[EvalResult]) -> list[str]:
    """The card's table of evaluation results (the lines of its section, heading first)."""
    return [EVALUATION_HEADING, "", "| task | metric | value |", "|---|---|---|",
            *[f"| {r.dataset_name} | {r.metric_type} | {r.metric_value:.4f} |" for r in results], ""]


def check_card(card: ModelCard) -> None:
    """The Hub's model-card metadata rules that can be checked offline (`ModelCard.validate` asks the Hub itself):
    the metadata parses into `ModelCardData`, the licence is a licence id (`other` with a name and link), base
    models and datasets are Hub ids (not local paths), and evaluation results survive huggingface_hub's model-index
    round trip. Raises ValueError listing every problem."""
    data = ModelCard(str(card)).data  # parses the YAML block again, as the Hub does
    problems = []
    license_id = data.license
    if not isinstance(license_id, str) or not LICENSE_ID.match(license_id):
        problems.append(f"license {license_id!r} is not a licence id")
    if license_id == OTHER_LICENSE and not (data.license_name and data.license_link):
        problems.append("license: other needs license_name and license_link")
    for key in ("base_model", "datasets"):
        values = getattr(data, key) or []
        for value in [values] if isinstance(values, str) else values:
            if not HUB_ID.match(str(value)):
                problems.append(f"{key} entry {value!r} is not a Hub id")
    if data.pipeline_tag != PIPELINE_TAG or data.library_name != "transformers":
        problems.append(f"pipeline_tag/library_name {data.pipeline_tag!r}/{data.library_name!r}")
    if data.eval_results:
        if not data.model_name:
            problems.append("eval_results need model_name")
        else:
            name, again = model_index_to_eval_results(eval_results_to_model_index(data.model_name, data.eval_results))
            if name != data.model_name or len(again) != len(data.eval_results):
                problems.append("eval_results do not survive the model-index round trip")
    if problems:
        raise ValueError("model card metadata: " + "; ".join(problems))


# The two calls the card tells a reader to run (`REPO`: the repository id or the folder).
LOAD_MODEL = "`AutoModelForImageTextToText.from_pretrained(REPO, trust_remote_code=True)`"
LOAD_PROCESSOR = "`AutoProcessor.from_pretrained(REPO, trust_remote_code=True)`"


def _checkout_requirements() -> list[str]:
    """`install_requires` of the checkout this module runs from (not installed: no metadata), or none."""
    import configparser

    setup_cfg = Path(__file__).resolve().parents[1] / "setup.cfg"
    parser = configparser.ConfigParser()
    if not parser.read(setup_cfg, encoding="utf-8") or not parser.has_option("options", "install_requires"):
        return []
    lines = (line.split("#", 1)[0].strip() for line in parser.get("options", "install_requires").splitlines())
    return [line for line in lines if line]


def install_instructions() -> str:
    """How to load the card's model: the folder carries its code (`trust_remote_code`), with the transformers
    versions this package declares; the package itself is installed from a clone of its repository."""
    try:
        requirements = importlib.metadata.requires(PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:  # a checkout on PYTHONPATH (gpu_check.sh): its setup.cfg
        requirements = _checkout_requirements()
    transformers = next((requirement for requirement in requirements if re.match(r"^transformers\b", requirement)),
                        None)
    if transformers is None:
        import transformers as installed

        transformers = f"transformers>={installed.__version__}"
    transformers = transformers.replace(" ", "")
    return (f"The folder carries its modelling code: with `pip install \"{transformers}\" pillow`, "
            f"{LOAD_MODEL} and {LOAD_PROCESSOR} load it, whether or not the Croc package is installed (the prompt "
            "format is the processor's chat template). "
            f"Training, conversion and evaluation need the Croc package (`{PACKAGE}`, not on PyPI): clone its "
            "repository and run `pip install .` in the clone.")


ADAPTER_INSTRUCTIONS_START = "This folder holds LoRA adapters"


# How the card names the parameter groups (`trainer.stages.PARAMETER_GROUPS`) a LoRA folder holds whole.
PART_NAMES = {"projector": "projector", "prompt_pool": "prompt pool", "vtr_head": "VTR head",
              "vision_tower": "vision tower", "language_model": "language model"}


def adapter_instructions(base: str, whole_parts: Sequence[str] = ()) -> str:
    """What a LoRA run's folder is and how it loads: adapters, not a model (`install_instructions` would be false).
    `whole_parts` are the parameter groups it holds fully trained beside the adapters (`_adapter_whole_parts`): the
    sentence once named the projector, prompt pool and head whatever the stage, and a stage-2 folder holds no pool."""
    held = ", ".join(PART_NAMES.get(part, part) for part in whole_parts)
    return (f"{ADAPTER_INSTRUCTIONS_START} (PEFT, `adapter_config.json`) on the language model"
            f"{f' with the fully trained {held}' if held else ', and no other weights'}, "
            f"for the Croc base folder `{base}` they were trained on; it is not a model folder, and "
            f"{LOAD_MODEL} does not load it. `python -m trainer.merge_lora FOLDER --out MERGED --base BASE` (the "
            f"Croc package), BASE being the folder or Hub id of that base (left out: `{base}` as a folder here, then "
            "in the Hub cache), merges them into a plain folder that loads that way, and refuses a base of other "
            "weights than they were trained on; the run itself wrote one to `<output_dir>-merged`. With PEFT itself, "
            "build the base with this folder's `base_config/` (the base's config as this stage set it, such as the "
            "`official` preset's `normalize_visual_tokens`; the base folder's own config gives another model, "
            "silently): `PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(BASE, "
            "config=AutoConfig.from_pretrained(FOLDER, subfolder=\"base_config\", trust_remote_code=True), "
            "trust_remote_code=True), FOLDER)`.")


def merged_card(adapter_dir: str | Path, merged_name: str) -> ModelCard | None:
    """The card of a LoRA run's merged folder: the run's own card (its base models, licences, datasets and numbers
    hold for the merged weights, and the next stage inherits them from it) saying it is a model folder that loads
    with `from_pretrained`. None where `adapter_dir` has no Croc LoRA card (a checkpoint folder). Beside a README.md
    the user edited, the run's card is the one written beside it (`card_target`)."""
    path = card_target(adapter_dir)
    if not path.is_file():
        path = Path(adapter_dir) / CARD_NAME
    if not path.is_file():
        return None
    card = ModelCard.load(path)
    lines = card.text.split("\n")
    adapter_line = next((i for i, line in enumerate(lines) if line.startswith(ADAPTER_INSTRUCTIONS_START)), None)
    if adapter_line is None:
        return None
    lines[adapter_line] = (f"{install_instructions()} Merged from the LoRA adapters of `{Path(adapter_dir).name}` "
                           "(`python -m trainer.merge_lora`).")
    title = next((i for i, line in enumerate(lines) if line.startswith("# ")), None)
    if title is not None:
        lines[title] = f"# {merged_name}"
    if card.data.model_name:
        card.data.model_name = merged_name
    card = ModelCard(f"---\n{card.data.to_yaml()}\n---\n" + "\n".join(lines))
    check_card(card)
    return card


def _unwrapped_model(trainer):
    """`trainer`'s model without its accelerator wrapper (DDP, DeepSpeed), or None."""
    model, accelerator = getattr(trainer, "model", None), getattr(trainer, "accelerator", None)
    return accelerator.unwrap_model(model) if model is not None and accelerator is not None else model


def _adapter_base(trainer) -> str | None:
    """The base folder's name when `trainer` trains LoRA adapters (its saved folder holds only those), else None."""
    model = _unwrapped_model(trainer)
    if model is None or not hasattr(model, "get_base_model"):
        return None
    config = next(iter(getattr(model, "peft_config", {}).values()), None)
    base = str(getattr(config, "base_model_name_or_path", None) or "not recorded")
    return base if is_hub_id(base) and not Path(base).expanduser().is_dir() else Path(base).name


def _adapter_whole_parts(trainer) -> list[str]:
    """The parameter groups a LoRA run's folder holds whole: those of PEFT's `modules_to_save` copies, which is what
    the adapter file gets (read from the model, not the stage: a run resumed from an earlier version's checkpoint
    keeps what that checkpoint kept, `trainer.lora.resumed_modules_to_save`)."""
    from .stages import PARAMETER_GROUPS, parameter_group

    found = {parameter_group(name) for name, _ in _unwrapped_model(trainer).named_parameters()
             if ".modules_to_save." in name}
    return [group for group in PARAMETER_GROUPS if group in found]


# A stage-1.5 folder keeps `croc_pretraining: true` in its config, and `croc_objectives_on` (`modeling_croc.stage15`)
# reads it on every forward: a user fine-tuning the folder with their own loop got the Croc objectives and another
# loss without a word (the metadata field alone does not say what it does).
PRETRAINING_NOTE = (
    "Its config has `croc_pretraining: true`, so every training-mode forward (`model.train()`, as the Hugging Face "
    "Trainer or a PEFT loop runs it) runs stage 1.5's objectives: visual tokens masked with the prompt pool and the "
    "VTR loss added, other logits and loss; `generate` and eval-mode forwards run the plain model. To fine-tune it "
    "with another trainer, set `model.config.croc_pretraining = False` first (this trainer's stage 2 does).")


def architecture_line(config) -> str:
    """What the card says the model is, read from its config (the family's class, its tower and language model)."""
    from modeling_croc.loading import croc_model_class

    vision = getattr(getattr(config, "vision_config", None), "model_type", None) or "its"
    text = config.get_text_config().model_type
    return f"Architecture: `{croc_model_class(config).__name__}` ({vision} vision tower, {text} language model)."


def applies_image_aspect_ratio(config) -> bool:
    """Whether the model's processor prepares images the `image_aspect_ratio` way (`with_image_aspect_ratio`)."""
    from modeling_croc.families import FAMILY_OF_CONFIG
    from modeling_croc.processing_croc import CrocProcessor

    family = FAMILY_OF_CONFIG.get(type(config))
    return family is None or issubclass(family.processor, CrocProcessor)


def build_model_card(trainer, model_name: str | None = None) -> ModelCard:
    """The card of `trainer`'s run (a `CrocTrainer` with `CrocTrainingArguments`)."""
    args = trainer.args
    config = trainer.croc_model.config
    spec = args.stage_spec
    hyperparameters = {
        "learning_rates": args.group_learning_rates,
        "adam_betas": [args.adam_beta1, args.adam_beta2],
        "weight_decay": args.weight_decay,
        "lr_scheduler": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "warmup": args.warmup_steps,
        # `max_steps` overrides `num_train_epochs` (the Trainer ignores it): the card states what ran.
        **({"max_steps": args.max_steps, "epochs": round(float(trainer.state.epoch or 0.0), 4)}
           if getattr(args, "max_steps", -1) > 0 else {"epochs": args.num_train_epochs}),
        "global_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
        "model_max_length": args.model_max_length,
        "template": args.template,
        # Only LLaVA-1.5's processor resizes or pads to a square; the other families' prepare images their own way
        # (AnyRes crops, native resolution), where the card would state a preparation that never ran.
        **({"image_aspect_ratio": args.image_aspect_ratio} if applies_image_aspect_ratio(config) else {}),
        "seed": args.seed,
    }
    croc = {name: getattr(config, name) for name in CARD_CROC_FIELDS}
    run_control = getattr(trainer, "run_control", None)  # None: a trainer other than CrocTrainer
    skipped = [int(record["step"]) for record in run_control.skipped_steps] if run_control is not None else []
    logged = final_loss_entries(trainer.state.log_history, skipped)
    losses = {key: value for key, (value, _) in logged.items()}
    provenance = trainer.provenance
    datasets = provenance.datasets if not args.hub_datasets else _merge(provenance.datasets, args.hub_datasets)
    licence = {"license": args.hub_license} if args.hub_license else provenance.license_metadata()
    name = model_name or Path(args.output_dir).name
    evaluations = [result for path in args.hub_eval_results or [] for result in eval_results_from_lmms_eval(path)]
    evaluations = _earlier_eval_results(Path(args.output_dir), spec.name, hyperparameters, losses, evaluations)
    data = ModelCardData(
        **licence,
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        base_model=provenance.base_models or None,
        datasets=datasets or None,
        model_name=name if evaluations else None,
        eval_results=evaluations or None,
        # The parent family's model type (`llava`, `qwen2_5_vl`, `gemma3`, ...): the Hub lists the model under it.
        tags=["croc", FAMILY_OF_CROC_MODEL_TYPE[config.model_type].plain_model_type, PIPELINE_TAG,
              f"croc-stage-{spec.name.replace('.', '_')}"],
        croc_stage=spec.name,
        croc_config=croc,
        training_hyperparameters=hyperparameters,
        final_losses=losses,
        nonfinite_steps_skipped=skipped or None,
    )
    licences = provenance.licenses or ([args.hub_license] if args.hub_license else [])
    adapter_base = _adapter_base(trainer)
    whole_parts = _adapter_whole_parts(trainer) if adapter_base is not None else []
    body = [
        f"# {name}",
        "",
        f"Croc (arXiv 2410.14332) **stage {spec.name}**: {spec.description}. {architecture_line(config)}",
        "",
        *([PRETRAINING_NOTE, ""] if config.croc_pretraining else []),
        install_instructions() if adapter_base is None else adapter_instructions(adapter_base, whole_parts),
        "",
        f"- Croc preset: `{config.croc_preset}`; trained parts: {', '.join(args.trainable_parts)}",
        f"- Base models: {', '.join(provenance.base_models) if provenance.base_models else 'not recorded'}",
        f"- Datasets: {', '.join(datasets) if datasets else 'not recorded'}",
        *([f"- Non-finite steps skipped (no update, `max_nonfinite_steps`): {len(skipped)} of "
           f"{trainer.state.global_step} (steps {', '.join(map(str, skipped))})"] if skipped else []),
        "",
        "## Licences",
        "",
        ("The weights derive from parts under these licences, each of which applies: "
         + ", ".join(f"`{licence_id}`" for licence_id in licences) + "." if licences else
         "No licence was recorded for the parts this model derives from: check each base model's card."),
        "",
        "## Training hyperparameters",
        "",
        "| name | value |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in hyperparameters.items()],
        "",
        "## Croc configuration",
        "",
        "| field | value |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in croc.items()],
        "",
        "## Final losses",
        "",
        _final_losses_sentence(trainer),
        "",
        "| metric | value | step |",
        "|---|---|---|",
        *[f"| {key} | {value} | {'all' if step is None else step} |" for key, (value, step) in logged.items()],
        "",
    ]
    if evaluations:
        body += evaluation_section(evaluations)
    card = RunCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))
    check_card(card)
    return card


def _final_losses_sentence(trainer) -> str:
    """What the card's final losses are means of: the run's logging windows, as its logging strategy made them."""
    strategy = getattr(trainer.args, "logging_strategy", None)
    if strategy == "no":
        return "The run logged no window (`logging_strategy` = no): `train_loss` is the mean over its applied steps."
    if strategy == "epoch":
        window = "an epoch; the run's last may be shorter"
    else:
        # A `logging_steps` below 1 is a share of the run's steps; the Trainer keeps the count it came to in its state.
        steps = getattr(trainer.state, "logging_steps", None) or getattr(trainer.args, "logging_steps", None)
        window = f"`logging_steps` = {steps:g} step(s)" if isinstance(steps, (int, float)) else "`logging_steps`"
    return (f"Each metric's last logged value: the mean over a logging window ({window}) ending at the step shown; "
            "`train_loss` is the mean over the run's applied steps.")


def _earlier_eval_results(output_dir: Path, stage: str, hyperparameters: dict[str, Any], losses: dict[str, float],
                          evaluations: list[EvalResult]) -> list[EvalResult]:
    """`evaluations` plus the scores the card already in `output_dir` holds for other tasks and metrics, when that card
    describes the same trained model (same stage, hyperparameters and final losses): a rerun that publishes a finished
    run writes the card again, which dropped the scores `python -m trainer.model_card` had added to it. A card of
    other weights (a run trained further) keeps none: its scores were measured on another model."""
    path = output_dir / "README.md"
    if not path.is_file():  # a first run
        return evaluations
    try:
        earlier = ModelCard.load(path).data
    except (ValueError, yaml.YAMLError):
        # A metadata block that is not a mapping, or not YAML at all (a hand edit): nothing to carry. The card is
        # written anew, as before scores were carried; a yaml traceback ended the run after its training.
        return evaluations
    same_model = (str(earlier.get("croc_stage")) == stage and earlier.get("final_losses") == losses
                  and earlier.get("training_hyperparameters") == hyperparameters)
    if not same_model or not earlier.eval_results:
        return evaluations
    return _with_replaced(earlier.eval_results, evaluations)


def _with_replaced(earlier: Sequence[EvalResult], new: Sequence[EvalResult]) -> list[EvalResult]:
    """`earlier` results that no result of `new` replaces, then `new`. A result replaces the same task and metric
    and, for a filtered metric (`exact_match,strict-match`), the bare name too: the version before filters were kept
    in the name wrote each filter's value as `exact_match`, and those stale scores stayed beside the new ones."""
    replaced = {(r.dataset_type, name) for r in new for name in (r.metric_type, r.metric_type.partition(",")[0])}
    return [r for r in earlier if (r.dataset_type, r.metric_type) not in replaced] + list(new)


def _merge(*lists: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(item for items in lists for item in items))


# lmms-eval's `model_args` keys that name the model scored, in the order its own `_get_model_name` tries them.
def add_eval_results(folder: str | Path, results_files: Sequence[str | Path], same_model: bool = False) -> ModelCard:
    """Add the metrics of lmms-eval results files to the card in `folder` (replacing earlier results of the same
    task and metric) and save it. Results of another model are refused (`scored_model_note`) unless `same_model`."""
    path = Path(folder) / CARD_NAME
    if not same_model:
        for file in results_files:
            scored_model_note(folder, file)
    # Scores added to the run's own card keep it the run's (the next save rewrites it, carrying them); added to a
    # card the user edited, they leave it the user's.
    runs_own = card_as_written(folder)
    card = ModelCard.load(path)
    new = [result for file in results_files for result in eval_results_from_lmms_eval(file)]
    card.data.eval_results = _with_replaced(card.data.eval_results or [], new)
    # The model-index names the model as the heading does: the name the run gave it (its output_dir or hub_model_id).
    # The folder's name now is often incidental (a copy made to evaluate, a Hub cache's `snapshots/<commit>`), and
    # naming the index after it left the card calling one model by two names.
    card.data.model_name = card_title(card.text) or card.data.model_name or Path(folder).resolve().name
    # The text's table follows the metadata: left as training wrote it, it showed a replaced score next to the new one.
    text = card.text
    start = text.find(EVALUATION_HEADING)
    if start >= 0:
        after = text.find("\n## ", start + len(EVALUATION_HEADING))
        text = text[:start] + (text[after + 1:] if after >= 0 else "")
    card.text = text.rstrip("\n") + "\n\n" + "\n".join(evaluation_section(card.data.eval_results))
    check_card(card)
    card.save(path)
    if runs_own:
        record_card(Path(folder), CARD_NAME, [file_digest(path)])
    return card


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trainer.model_card",
                                     description="Add lmms-eval results to a saved model folder's card.")
    parser.add_argument("folder", help="a trained stage's folder, whose README.md (model card) gets the scores")
    parser.add_argument("--eval-results", nargs="+", required=True, help="lmms-eval *_results.json files")
    parser.add_argument("--same-model", action="store_true",
                        help="the results files scored this folder's model under another path or name (a folder "
                             "moved or renamed since): skip the check that they name this folder")
    args = parser.parse_args(argv)
    # The mistakes made first (a folder with no card, a shell glob that matched nothing, a file that is not a
    # results file) stop with one line, as every other command of the project does, not a traceback.
    if not (Path(args.folder) / "README.md").is_file():
        raise SystemExit(f"model card error: {args.folder} has no README.md: not a folder a training run saved")
    try:
        notes = ["model not checked (--same-model)"] if args.same_model else [
            note for file in args.eval_results if (note := scored_model_note(args.folder, file))]
        card = add_eval_results(args.folder, args.eval_results, same_model=True)
    except (OSError, ValueError) as error:  # json.JSONDecodeError is a ValueError
        raise SystemExit(f"model card error: {' '.join(str(error).split())[:500]}") from None
    # What could not be confirmed goes in the one line the command prints, not a warning that scrolls away.
    print(f"{len(card.data.eval_results)} evaluation results in {Path(args.folder) / 'README.md'}"
          + (f" ({'; '.join(notes)})" if notes else ""))


if __name__ == "__main__":
    main()
