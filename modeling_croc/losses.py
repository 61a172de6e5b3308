"""Visual-token reconstruction (VTR) loss of Croc. The caption loss (DCG) is transformers' causal-LM loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _per_token_l2(prediction: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    return torch.linalg.vector_norm(prediction - target, dim=-1)


def _per_token_mse(prediction: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    return F.mse_loss(prediction, target, reduction="none").mean(-1)


def _per_token_smooth_l1(prediction: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    return F.smooth_l1_loss(prediction, target, reduction="none", beta=beta).mean(-1)


def _per_token_cosine(prediction: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    return 1.0 - F.cosine_similarity(prediction, target, dim=-1, eps=1e-6)


# name -> per-token distance `(..., D), (..., D) -> (...)`; averaging over tokens is shared below.
VTR_DISTANCES = {"l2": _per_token_l2, "mse": _per_token_mse, "smooth_l1": _per_token_smooth_l1,
                 "cosine": _per_token_cosine}


def _l2_normalized(target: torch.Tensor) -> torch.Tensor:
    return F.normalize(target, dim=-1)


def _standardized(target: torch.Tensor) -> torch.Tensor:
    # MAE's norm_pix_loss: each token to zero mean and unit variance over its features.
    if target.numel() == 0:  # no token to reconstruct (a text-only batch): var() of nothing only warns
        return target
    mean = target.mean(dim=-1, keepdim=True)
    variance = target.var(dim=-1, keepdim=True, unbiased=False)
    return (target - mean) / (variance + 1e-6).sqrt()


# name -> per-token normalisation of the targets `(..., D) -> (..., D)`.
VTR_TARGET_NORMALIZATIONS = {"none": lambda target: target, "l2": _l2_normalized, "standardize": _standardized}


def normalize_vtr_targets(target: torch.Tensor, normalization: str = "none") -> torch.Tensor:
    """`target` (`(..., D)`) with each token normalised as `normalization` says (see `VTR_TARGET_NORMALIZATIONS`)."""
    return VTR_TARGET_NORMALIZATIONS[normalization](target)


def visual_token_reconstruction_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    positions: torch.BoolTensor,
    distance: str = "l2",
    smooth_l1_beta: float = 0.01,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Average distance between predicted and original visual tokens over the selected positions.

    Args:
        prediction: `(num_images, T, D)` LM hidden states at the visual positions (through the optional head).
        target: `(num_images, T, D)` original visual tokens; detached here.
        positions: `(num_images, T)` bool, which tokens count (the replaced ones, or all).
        distance: `"l2"` (per-token L2 norm, eq. 3 of the paper), `"mse"` or `"smooth_l1"` (both averaged
            over features, so a mean over all elements as in the released code), or `"cosine"` (1 - cosine
            similarity per token).
        num_items_in_batch: selected tokens in the whole optimiser step (all micro-batches and processes). When
            given, the sum is divided by it, so gradient accumulation and data parallelism average over the step
            exactly as transformers does for the LM loss; otherwise it is a mean over this batch.

    Returns:
        A scalar in float32. Zero (still attached to the graph) when no position is selected.
    """
    per_token = VTR_DISTANCES[distance](prediction.float(), target.detach().float(), smooth_l1_beta)
    total = (per_token * positions).sum()
    count = positions.sum() if num_items_in_batch is None else num_items_in_batch
    if isinstance(count, torch.Tensor):
        count = count.to(total.device)
        return total / count.clamp(min=1)
    return total / max(count, 1)


def _liger_fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                      ignore_index: int) -> torch.Tensor:
    """Summed cross-entropy of `hidden @ weight.T` against `targets`, by Liger's fused kernel (chunked on the
    GPU: the `(tokens, vocabulary)` logits never exist at once)."""
    from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

    return LigerFusedLinearCrossEntropyLoss(ignore_index=ignore_index, reduction="sum")(weight, hidden, targets)


def fused_language_model_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.LongTensor,
                              num_items_in_batch: int | torch.Tensor | None = None,
                              ignore_index: int = -100, shift_labels: torch.LongTensor | None = None) -> torch.Tensor:
    """The language-model loss transformers computes from logits (`ForCausalLMLoss`: labels shifted by one, the
    last position predicting nothing, or `shift_labels` as they are, already shifted (the Trainer's context
    parallelism shards them so); summed and divided by `num_items_in_batch`, or averaged over the supervised tokens,
    NaN when there are none, as there) from the last hidden states `(B, L, D)` and the LM head's weight `(V, D)`,
    without the `(B, L, V)` logits: what `use_liger_kernel` buys a 152K-vocabulary model."""
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    targets = shift_labels.reshape(-1).to(hidden.device)
    total = _liger_fused_linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), weight, targets, ignore_index)
    if num_items_in_batch is None:
        return total / (targets != ignore_index).sum()
    if isinstance(num_items_in_batch, torch.Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch
