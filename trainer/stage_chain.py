"""What a stage says about the folder it starts from (`model.name_or_path`, the previous stage's output_dir).

Stages run 0 (a folder of parts) -> 1 -> 1.5 -> 2, and each keeps the Croc fields its parent was trained with
unless its preset says otherwise. A stage started from the wrong folder trains without error, so each of these is
said in one line before the rows are read: a stage after 1 from a stage-0 folder (a projector never trained), a
stage 2 from a stage-1 folder (stage 1.5, the Croc pretraining, skipped: LLaVA-1.5's recipe), a stage from a later
stage's folder, and a preset other than the parent's where that changes the model's own fields (`official`'s
`normalize_visual_tokens` switched off by `paper` computes another function of the same weights). None of them is
refused: an ablation may mean it. A folder whose run has not finished is refused (`validation.unfinished_run_problem`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modeling_croc.configuration_croc import CROC_FIELD_NAMES
from modeling_croc.provenance import STAGE0_TAG, card_metadata

from .run_record import read_run_record

STAGE_ORDER = ("0", "1", "1.5", "2")
# Croc config fields that are the stage's own, or the run's, not the model's: they differ from the parent's by design.
_NOT_THE_MODELS = frozenset({"croc_preset", "croc_pretraining", "prompt_pool_calibrated"})


def parent_stage(folder: str | Path) -> str | None:
    """The stage that wrote `folder`: its card's `croc_stage` (0 for a stage-0 folder's tag), else its run record's
    (a checkpoint's), else None (a converted or foreign folder)."""
    metadata = card_metadata(folder)
    if STAGE0_TAG in (metadata.get("tags") or []):
        return "0"
    stage = metadata.get("croc_stage")
    if stage is None:
        stage = (read_run_record(folder) or {}).get("stage")
    return None if stage is None else str(stage)


def stage_order_warning(folder: str | Path, stage: str) -> str | None:
    """The line for a stage started from a folder out of the 0 -> 1 -> 1.5 -> 2 order, or None."""
    parent = parent_stage(folder)
    if parent not in STAGE_ORDER or stage not in STAGE_ORDER:
        return None
    if parent == "0" and stage != "1":
        return (f"{folder} is a stage-0 folder (its card is tagged {STAGE0_TAG}): its projector was never trained; "
                f"stage {stage} usually starts from the previous stage's output_dir (stage 1 trains the projector)")
    if parent == "1" and stage == "2":
        return (f"{folder} is a stage-1 folder: this stage 2 skips stage 1.5, the Croc pretraining (LLaVA-1.5's "
                "recipe, the paper's baseline); stage 2 of Croc starts from stage 1.5's output_dir")
    if STAGE_ORDER.index(parent) > STAGE_ORDER.index(stage):
        return (f"{folder} is a stage-{parent} folder, later than this stage {stage}: stages run 1 -> 1.5 -> 2, each "
                "from the previous one's output_dir")
    return None


def preset_change_warning(folder: str | Path, croc_config: dict[str, Any] | None, preset: str) -> str | None:
    """The line for a stage whose preset is not the one its Croc parent was trained with and changes the model's own
    fields (`croc_config`: the stage's resolved config), or None."""
    try:
        parent = json.loads((Path(folder).expanduser() / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    trained = parent.get("croc_preset") if isinstance(parent, dict) else None
    if croc_config is None or trained is None or trained == preset:
        return None
    changed = [f"{name} {parent[name]!r} -> {croc_config.get(name)!r}" for name in sorted(parent)
               if name in CROC_FIELD_NAMES and name not in _NOT_THE_MODELS and name in croc_config
               and parent[name] != croc_config[name]]
    if not changed:
        return None
    return (f"{folder} was trained under the {trained} preset and this stage runs {preset}, which changes its model: "
            f"{', '.join(changed)}; pass --croc_preset={trained} to keep them")


def starting_folder_warnings(folder: str | None, stage: str, croc_config: dict[str, Any] | None,
                             preset: str) -> list[str]:
    """Every line `stage_order_warning` and `preset_change_warning` have for a local `folder` (none for a Hub id or a
    stage built from parts)."""
    if not folder or not Path(folder).expanduser().is_dir():
        return []
    # A stage-0 folder was never trained: the preset its config names (`convert from-parts`' default) is no choice.
    preset_line = None if parent_stage(folder) == "0" else preset_change_warning(folder, croc_config, preset)
    return [line for line in (stage_order_warning(folder, stage), preset_line) if line is not None]


__all__ = ["STAGE_ORDER", "parent_stage", "preset_change_warning", "stage_order_warning", "starting_folder_warnings"]
