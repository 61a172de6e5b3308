"""Named profiler regions around Croc's own pieces of the stage-1.5 forward.

Each piece runs inside `torch.profiler.record_function(label)`, so any profiler (`torch.profiler.profile`, the
PyTorch TensorBoard plugin, Nsight through NVTX) attributes time to it by name, and `benchmarks/bench_step.py`
reads these labels instead of patching module globals. Outside a profiler a region costs a few microseconds.
"""

from __future__ import annotations

from torch.profiler import record_function

# piece -> profiler label
CROC_REGIONS: dict[str, str] = {
    "vision": "croc.vision_features",
    "masking": "croc.masking",
    "costs": "croc.matching_costs",
    "assignment": "croc.assignment",
    "mask building": "croc.mixed_attention_mask",
    "language model": "croc.language_model",
    "VTR head": "croc.vtr_head",
    "VTR loss": "croc.vtr_loss",
}


def croc_region(piece: str) -> record_function:
    """The profiler region of `piece` (a key of `CROC_REGIONS`)."""
    return record_function(CROC_REGIONS[piece])


__all__ = ["CROC_REGIONS", "croc_region"]
