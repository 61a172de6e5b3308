"""Does stage 1.5 reconstruct? The VTR loss of a trained stage-1.5 model on images it never saw, next to the loss of
the trivial predictor that always outputs the mean target, and the norms of predictions and targets.

A VTR objective that only closes a scale gap (the paper's literal L2 between post-norm hidden states and raw
projector tokens) can fall a long way and still sit at the trivial predictor's level: the ratio below says whether
the model learned anything about the *individual* tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch

from modeling_croc import CrocForConditionalGeneration, CrocProcessor
from modeling_croc.losses import VTR_DISTANCES, normalize_vtr_targets
from trainer.collator import build_collator
from trainer.data import CrocSupervisedDataset
from trainer.data_loading import load_training_rows
from trainer.script_args import DataArguments


@torch.no_grad()
def vtr_fit(model_dir: str | Path, captions: str | Path, template: str, max_length: int, seed: int,
            batch_size: int = 32, max_rows: int = 128) -> dict[str, float]:
    """Mean VTR distance of the model in `model_dir` on the first `max_rows` rows of `captions` (masks drawn with
    `seed`), the same distance for the trivial predictor (the mean of those targets), their ratio, and the mean
    prediction and target norms, all at the positions the model's config reconstructs."""
    model = CrocForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = CrocProcessor.from_pretrained(model_dir)
    config = model.config
    training_rows = load_training_rows(DataArguments(path=str(captions), max_samples=max_rows))
    rows, image_root = training_rows.rows, training_rows.image_root
    dataset = CrocSupervisedDataset(rows, processor, template=template, image_root=image_root,
                                    model_max_length=max_length)
    collate = build_collator(processor)
    generator = torch.Generator().manual_seed(seed)
    predictions, targets = [], []
    for start in range(0, len(dataset), batch_size):
        samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = collate([sample for sample in samples if sample is not None])
        base = model.model(**batch, croc_objectives=True, croc_generator=generator)
        target = normalize_vtr_targets(base.visual_tokens, config.vtr_target_normalization).float()
        num_images, num_tokens, hidden = target.shape
        prediction = base.vtr_source_states[base.image_token_mask].view(num_images, num_tokens, hidden)
        if model.vtr_head is not None:
            prediction = model.vtr_head(prediction)
        positions = base.replaced_token_mask if config.vtr_positions == "masked" else torch.ones_like(
            base.replaced_token_mask)
        predictions.append(prediction.float()[positions])
        targets.append(target[positions])
    prediction, target = torch.cat(predictions), torch.cat(targets)
    distance = VTR_DISTANCES[config.vtr_loss]
    beta = config.vtr_smooth_l1_beta
    loss = float(distance(prediction, target, beta).mean())
    trivial = float(distance(target.mean(dim=0, keepdim=True).expand_as(target), target, beta).mean())
    return {
        "vtr_loss": loss,
        "trivial_loss": trivial,
        "ratio_to_trivial": loss / trivial if trivial > 0 else float("nan"),
        "prediction_norm": float(prediction.norm(dim=-1).mean()),
        "target_norm": float(target.norm(dim=-1).mean()),
        "tokens": int(target.shape[0]),
        "form": vtr_form(config),
    }


def vtr_form(config) -> str:
    """The run's VTR objective in a few words, from its config (the report's VTR table names each form)."""
    head = {"none": "no head", "linear": "linear head", "bert": "BERT-layer head"}[config.vtr_head]
    targets = {"none": "raw targets", "l2": "L2-normalised targets", "standardize": "standardised targets"}[
        config.vtr_target_normalization]
    read = "after the final norm" if config.vtr_prediction == "final_norm" else "before the final norm"
    return f"{config.vtr_loss}, {head}, {targets}, read {read}"


__all__ = ["vtr_fit", "vtr_form"]
