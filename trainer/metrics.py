"""Running sums of the Croc loss terms, the VTR norms and the prompt-pool assignment histogram between two logging
steps.

The trainer adds every micro-batch here and, when the Trainer logs, reduces the sums over processes and turns
them into `lm_loss`, `vtr_loss`, `aux_loss` (a mixture of experts' router load-balancing loss, where the model adds
one to its loss), `vtr_share` (the weighted VTR term's share of the loss), `vtr_prediction_norm` and
`vtr_target_norm` (mean L2 norms at the reconstructed positions: a scale mismatch between prediction and target
shows in the first logging step), `pool_utilisation` and `pool_entropy`. Sums stay on the device as tensors, so
recording costs no host synchronisation per micro-batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


class CrocMetrics:
    """Window accumulator for the Croc training metrics.

    A step's micro-batches are held apart until the step is known to be applied: a step skipped for a non-finite loss
    or gradient (`max_nonfinite_steps`, `discard_step`) leaves the window as the logged `loss` leaves it, so the terms
    stay the applied steps' means (a NaN `lm_loss` of a skipped step made every component of its window NaN while
    `loss` was corrected). `lm_loss` and `aux_loss` are means over the window's applied steps; `vtr_loss`, the norms
    and the pool statistics over those of its steps that reconstruct something (the step-wide VTR count above 0): a
    step of text-only rows (`group_by_modality_length` makes whole steps of them) has no VTR term, and averaging its
    0 in read as a reconstruction twice as good, and a pool entropy of 0 as a collapse. A window with no such step
    logs none of them. `vtr_share` is the weighted VTR term's share of the window's logged `loss`, every term of it
    counted (an auxiliary router loss included).

    Args:
        pool_size: number of prompt-pool tokens N (the histogram length); None when pool use is not logged.
        vtr_loss_weight: the weight of the VTR term, for `vtr_share`.
        croc_objectives: whether the run trains the Croc objectives (then `vtr_loss` and `vtr_share` are logged,
            whether or not the pool histogram is).
    """

    def __init__(self, pool_size: int | None = None, vtr_loss_weight: float = 0.0,
                 croc_objectives: bool | None = None) -> None:
        self.pool_size = pool_size
        self.vtr_loss_weight = vtr_loss_weight
        self.croc_objectives = pool_size is not None if croc_objectives is None else croc_objectives
        self.reset()

    def reset(self) -> None:
        self.window_start_step: int | None = None
        # [lm, vtr] summed, each micro-batch scaled to a step share; [lm, vtr, aux] for a model with an auxiliary loss
        self._losses: torch.Tensor | None = None
        self._histogram: torch.Tensor | None = None
        self._norms: torch.Tensor | None = None  # summed prediction norms, target norms, positions
        # Applied steps in the window, and those with VTR targets (a tensor: counted without a host synchronisation).
        # None: a window reopened from a checkpoint of an earlier version, which counted neither.
        self._steps: int | None = 0
        self._vtr_steps: torch.Tensor | float | None = 0.0
        self._pending: _StepSums | None = None

    @property
    def has_data(self) -> bool:
        return self._losses is not None or (self._pending is not None and self._pending.losses is not None)

    def add(
        self,
        step: int,
        scale: float,
        lm_loss: torch.Tensor | None,
        vtr_loss: torch.Tensor | None,
        pool_ids: torch.Tensor | None,
        vtr_norm_sums: torch.Tensor | None = None,
        aux_loss: torch.Tensor | None = None,
        num_vtr_items: torch.Tensor | None = None,
    ) -> None:
        """Record one micro-batch.

        Args:
            step: the optimiser step it belongs to (opens the window on the first call after a reset).
            scale: factor that turns the micro-batch's loss terms into their share of the step's loss, the same
                factor the Trainer applies to the total loss, so the sums over a step are the step's losses.
            lm_loss, vtr_loss: the model's loss terms (None when absent).
            pool_ids: `(num_images, M)` pool rows assigned in this forward (-1 where an image masked fewer).
            vtr_norm_sums: `(3,)` summed prediction and target norms at the reconstructed positions, and their count.
            aux_loss: the auxiliary term as the micro-batch's loss holds it, over its weight (None where the model
                adds none: no `aux_loss` is logged then).
            num_vtr_items: the step's VTR count over every process: a step with VTR targets anywhere is a VTR step
                on every process (a process holding none adds its 0 to the step's term, as the optimiser sees it);
                None: the step has VTR targets where a micro-batch of this process returned a VTR term.
        """
        if self.window_start_step is None:
            self.window_start_step = step
        if self._pending is not None and self._pending.step != step:
            self._commit()
        if self._pending is None:
            self._pending = _StepSums(step)
        pending = self._pending
        if num_vtr_items is not None:
            pending.has_vtr = (num_vtr_items.detach().reshape(-1)[:1] > 0).float()
        elif vtr_loss is not None and not isinstance(pending.has_vtr, torch.Tensor):
            pending.has_vtr = 1.0
        reference = lm_loss if lm_loss is not None else vtr_loss
        if reference is None:
            return
        terms = [lm_loss if lm_loss is not None else torch.zeros_like(reference),
                 vtr_loss if vtr_loss is not None else torch.zeros_like(reference)]
        if aux_loss is not None:
            terms.append(aux_loss.to(reference.device))
        values = torch.stack([term.detach().float() for term in terms]) * scale
        pending.losses = values if pending.losses is None else _added(pending.losses, values)
        if vtr_norm_sums is not None:
            norms = vtr_norm_sums.detach().float()
            pending.norms = norms if pending.norms is None else pending.norms + norms
        if self.pool_size is not None:
            if pending.histogram is None:
                pending.histogram = torch.zeros(self.pool_size, dtype=torch.float32, device=reference.device)
            if pool_ids is not None and pool_ids.numel():
                ids = pool_ids.reshape(-1)
                # -1 pads images that masked fewer tokens (AnyRes): counted with weight 0, no boolean indexing.
                pending.histogram += torch.bincount(ids.clamp(min=0), weights=(ids >= 0).float(),
                                                    minlength=self.pool_size).to(pending.histogram.device,
                                                                                 torch.float32)

    def discard_step(self, step: int) -> None:
        """Leave out the micro-batches of optimiser step `step` (0-based, as `add` counts): the step was skipped."""
        if self._pending is not None and self._pending.step == step:
            self._pending = None

    def _commit(self) -> None:
        """Add the held step to the window: its micro-batches are all in, and it was not discarded."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if self._steps is not None:
            self._steps += 1
        if self._vtr_steps is not None:
            self._vtr_steps = self._vtr_steps + pending.has_vtr
        if pending.losses is not None:
            self._losses = pending.losses if self._losses is None else _added(self._losses, pending.losses)
        if pending.norms is not None:
            self._norms = pending.norms if self._norms is None else self._norms + pending.norms
        if pending.histogram is not None:
            self._histogram = pending.histogram if self._histogram is None else self._histogram + pending.histogram

    def window_state(self) -> dict[str, Any]:
        """The open window as plain numbers (float32 sums as Python floats, exact both ways), for a checkpoint
        (`trainer.logging_window`); `load_window_state` puts it back."""
        def floats(tensor: torch.Tensor | None) -> list[float] | None:
            return None if tensor is None else [float(value) for value in tensor.detach().float().reshape(-1).tolist()]

        self._commit()
        if not self.has_data:
            return {"window_start_step": None, "losses": None, "histogram": None, "norms": None}
        return {"window_start_step": self.window_start_step, "losses": floats(self._losses),
                "histogram": floats(self._histogram), "norms": floats(self._norms), "steps": self._steps,
                "vtr_steps": None if self._vtr_steps is None else float(self._vtr_steps)}

    def load_window_state(self, state: dict[str, Any], device: torch.device) -> None:
        """Reopen a window saved by `window_state` (an empty one: nothing recorded since the last log)."""
        def tensor(values: list[float] | None) -> torch.Tensor | None:
            return None if values is None else torch.tensor(values, dtype=torch.float32, device=device)

        self.reset()
        if state.get("losses") is not None:
            self.window_start_step = state["window_start_step"]
            self._losses, self._histogram, self._norms = (tensor(state.get(key))
                                                          for key in ("losses", "histogram", "norms"))
            # An earlier version's window counted steps by the window's extent, every step a VTR step.
            self._steps = state.get("steps")
            self._vtr_steps = state.get("vtr_steps")

    def compute(self, accelerator, current_step: int, loss: float | None = None) -> dict[str, float]:
        """Reduce over processes (every process must call this at the same step) and reset the window.

        Losses are averaged over processes and over the applied optimiser steps of the window, like the Trainer's
        `loss`; `loss` is that logged value, for `vtr_share` (None: the terms' own sum).
        """
        self._commit()
        if self._losses is None:
            self.reset()
            return {}
        # `is None`, not `or`: the run's first window opens at step 0, which `or` took for no window (one step), so
        # with logging_steps=N the first logged lm_loss and vtr_loss were the sums of N steps, not their mean.
        start = current_step if self.window_start_step is None else self.window_start_step
        num_steps = self._steps if self._steps is not None else max(current_step - start, 1)
        vtr_steps = self._vtr_steps if self._vtr_steps is not None else float(num_steps)
        device = self._losses.device
        # The VTR-step count rides with the loss sums, reduced by the same mean (every process counts the same steps;
        # a window reshared onto another number of processes holds their mean).
        sums = torch.cat([self._losses, torch.as_tensor(vtr_steps, dtype=torch.float32, device=device).reshape(1)])
        histogram = self._histogram
        norms = self._norms
        if accelerator is not None and accelerator.num_processes > 1:
            sums = accelerator.reduce(sums.clone(), reduction="mean")
            if histogram is not None:
                histogram = accelerator.reduce(histogram.clone(), reduction="sum")
            if norms is not None:
                norms = accelerator.reduce(norms.clone(), reduction="sum")
        *losses, vtr_steps = sums.tolist()
        self.reset()
        if num_steps == 0:  # every step of the window was skipped
            return {}
        lm, vtr, *aux = (value / num_steps for value in losses)
        logs = {"lm_loss": lm}
        if aux:
            logs["aux_loss"] = aux[0]
        if self.croc_objectives:
            weighted = self.vtr_loss_weight * vtr
            total = loss if loss is not None and math.isfinite(loss) else lm + weighted
            logs["vtr_share"] = weighted / total if total > 0 else 0.0
            if vtr_steps > 0:
                logs["vtr_loss"] = losses[1] / vtr_steps
        if histogram is not None and vtr_steps > 0:
            logs.update(pool_statistics(histogram))
        if norms is not None and float(norms[2]) > 0:
            prediction_sum, target_sum, count = norms.tolist()
            logs["vtr_prediction_norm"] = prediction_sum / count
            logs["vtr_target_norm"] = target_sum / count
        return logs


@dataclass
class _StepSums:
    """The micro-batches of one optimiser step, held until the step is applied (`CrocMetrics._commit`)."""

    step: int
    losses: torch.Tensor | None = None
    histogram: torch.Tensor | None = None
    norms: torch.Tensor | None = None
    has_vtr: torch.Tensor | float = 0.0


def _added(sums: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    if len(sums) != len(values):
        # A window reopened from a checkpoint written before `aux_loss` was summed holds no sum of it: the window
        # logs lm_loss and vtr_loss only, rather than an aux_loss missing the steps before the resume.
        kept = min(len(sums), len(values))
        sums, values = sums[:kept], values[:kept]
    return sums + values


def pool_statistics(histogram: torch.Tensor) -> dict[str, float]:
    """`pool_utilisation`: share of pool tokens assigned at least once; `pool_entropy`: entropy (nats) of the
    assignment distribution (log N when every token is used equally, 0 when one token takes everything)."""
    total = float(histogram.sum())
    if total == 0:
        return {"pool_utilisation": 0.0, "pool_entropy": 0.0}
    probabilities = histogram[histogram > 0].double() / total
    entropy = float(-(probabilities * probabilities.log()).sum())
    return {
        "pool_utilisation": float((histogram > 0).double().mean()),
        "pool_entropy": entropy if entropy > 0 else 0.0,  # also turns -0.0 (one token used) into 0.0
    }
