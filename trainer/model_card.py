"""The model card of a Croc training run: Hub metadata (base models, datasets, licence, pipeline tag, the Croc stage,
preset and hyperparameters, final losses) and a short human-readable body."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from .script_args import ModelArguments

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Croc config fields worth stating on the card.
CARD_CROC_FIELDS = (
    "croc_preset", "croc_pretraining", "prompt_pool_size", "prompt_pool_init", "mask_ratio", "mask_rounding",
    "token_matching", "matching_scope", "bidirectional_span", "vtr_loss_weight", "vtr_loss", "vtr_positions", "vtr_prediction",
    "vtr_head", "vtr_head_layers", "vtr_target_normalization", "normalize_visual_tokens",
)
FINAL_LOG_KEYS = ("loss", "lm_loss", "vtr_loss", "pool_utilisation", "pool_entropy")


def _is_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and not Path(name).expanduser().exists()


def base_models_for(model_args: ModelArguments) -> list[str]:
    """Hub ids this run descends from: explicit `base_models`, the LLM + CLIP ids of stage 1, or the previous stage
    folder's own card metadata (a local path is not a valid `base_model`, so it is looked through)."""
    if model_args.base_models:
        return list(model_args.base_models)
    if model_args.vision_tower:
        return [name for name in (model_args.language_model, model_args.vision_tower) if _is_hub_id(name)]
    source = model_args.name_or_path
    if not source:
        return []
    if _is_hub_id(source):
        return [source]
    readme = Path(source) / "README.md"
    if readme.is_file():
        base = ModelCard.load(readme).data.to_dict().get("base_model") or []
        return [base] if isinstance(base, str) else list(base)
    return []


def final_losses(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """The last logged value of each loss / pool metric, plus the run's mean `train_loss`."""
    losses: dict[str, float] = {}
    for entry in log_history:
        for key in (*FINAL_LOG_KEYS, "train_loss"):
            if key in entry:
                losses[key] = round(float(entry[key]), 6)
    return losses


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
        "epochs": args.num_train_epochs,
        "global_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
        "model_max_length": args.model_max_length,
        "template": args.template,
        "image_aspect_ratio": args.image_aspect_ratio,
        "seed": args.seed,
    }
    croc = {name: getattr(config, name) for name in CARD_CROC_FIELDS}
    losses = final_losses(trainer.state.log_history)
    data = ModelCardData(
        license=args.hub_license,
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        base_model=trainer.base_models or None,
        datasets=list(args.hub_datasets) if args.hub_datasets else None,
        tags=["croc", "llava", "image-text-to-text", f"croc-stage-{spec.name.replace('.', '_')}"],
        croc_stage=spec.name,
        croc_config=croc,
        training_hyperparameters=hyperparameters,
        final_losses=losses,
    )
    name = model_name or Path(args.output_dir).name
    body = [
        f"# {name}",
        "",
        f"Croc (arXiv 2410.14332) **stage {spec.name}**: {spec.description}. LLaVA-1.5 architecture (CLIP vision "
        "tower, 2-layer MLP projector, Llama-family LM); load it with `AutoModelForImageTextToText` and "
        "`AutoProcessor` (`pip install croc-transformers`, or `trust_remote_code=True`).",
        "",
        f"- Croc preset: `{config.croc_preset}`; trained parts: {', '.join(args.trainable_parts)}",
        f"- Base models: {', '.join(trainer.base_models) if trainer.base_models else 'not recorded'}",
        f"- Datasets: {', '.join(args.hub_datasets) if args.hub_datasets else 'not recorded'}",
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
        "| metric | value |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in losses.items()],
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))
