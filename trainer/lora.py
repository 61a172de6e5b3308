"""LoRA / QLoRA for the language model in stages 1.5 and 2, with the projector, pool and VTR head fully trained.

The adapters target only the language model's projections. The other trainable parts of the stage go to PEFT's
`modules_to_save`, so an adapter folder holds everything the stage changed and `trainer.merge_lora` can rebuild
the full model from it and the base folder.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from modeling_croc.provenance import is_hub_id

from .script_args import ModelArguments
from .stages import parameter_group
from .training_args import CrocTrainingArguments

logger = logging.getLogger(__name__)


def language_model_name(model: torch.nn.Module) -> str:
    """The attribute name of `model`'s language model inside its base model: `language_model` in most families,
    `text_model` in SmolVLM's (`CrocModelMixin.croc_language_model`)."""
    language_model = getattr(getattr(model, "model", None), "croc_language_model", None)
    for name, module in model.named_modules():
        if name and module is language_model:
            return name.rsplit(".", 1)[-1]
    return "language_model"


def fully_trained_modules(model: torch.nn.Module, parts: Sequence[str]) -> tuple[list[str], list[str]]:
    """The modules PEFT's `modules_to_save` keeps fully trained beside the adapters, and the parameters it cannot.

    Returns the largest modules all of whose parameters belong to the parts in `parts` other than the language
    model (projector, pool, head, vision tower), found from `stages.parameter_group` whatever the family calls them
    (Qwen's `visual.merger`, SmolVLM's `connector`), never a `ModuleList` (no family calls its `forward`); and the
    names of such parameters that no such module holds (a bare parameter of a module holding the language model too,
    as LLaVA-NeXT's and OneVision's `image_newline`): PEFT would freeze them. Module names are full paths, which PEFT
    matches as suffixes.
    """
    trained_groups = set(parts) - {"language_model"}
    trained = {name for name, _ in model.named_parameters() if parameter_group(name) in trained_groups}
    whole = set()
    for path, module in model.named_modules():
        if not path or isinstance(module, torch.nn.ModuleList | torch.nn.ModuleDict):
            continue
        names = [f"{path}.{name}" for name, _ in module.named_parameters()]
        if names and all(name in trained for name in names):
            whole.add(path)
    chosen = sorted(path for path in whole
                    if not any(".".join(path.split(".")[:i]) in whole for i in range(1, path.count(".") + 1)))
    held = {name for name in trained for path in chosen if name.startswith(f"{path}.")}
    return chosen, sorted(trained - held)


def lora_target_regex(target_modules: list[str], language_model: str = "language_model") -> str:
    """A regex PEFT full-matches against module names: the given projections inside the language model only
    (the vision tower has `q_proj`/`k_proj`/`v_proj` too, and must not be adapted). `language_model`: its attribute
    name (`language_model_name`); a family naming it otherwise (SmolVLM's `text_model`) would match nothing."""
    names = "|".join(re.escape(name) for name in target_modules)
    return rf".*{re.escape(language_model)}\..*\.({names})"


def _kept_whole(model: torch.nn.Module, names: Sequence[str]) -> set[str]:
    """The module paths of `model` that `modules_to_save` entries `names` select (PEFT matches them as suffixes)."""
    return {path for path, _ in model.named_modules() if path
            and any(path == name or path.endswith(f".{name}") for name in names)}


def resumed_modules_to_save(model: torch.nn.Module, modules: Sequence[str], checkpoint: str | Path | None
                            ) -> list[str] | None:
    """The `modules_to_save` of the LoRA checkpoint a run resumes from, where they keep other modules of `model` whole
    than `modules` (this version's), else None.

    A checkpoint written before LoRA kept every trained part whole (Qwen2.5-VL's and Qwen3-VL's patch mergers,
    SmolVLM's connector were frozen) holds no copy of those modules, and its optimizer state none of their moments:
    loading it into this version's modules ended the resume in PEFT's KeyError traceback. The run goes on as it was
    started instead, on its loss curve."""
    config = Path(checkpoint) / "adapter_config.json" if checkpoint else None
    if config is None or not config.is_file():
        return None
    saved = json.loads(config.read_text(encoding="utf-8")).get("modules_to_save") or []
    if _kept_whole(model, saved) == _kept_whole(model, modules):
        return None
    return list(saved)


def apply_lora(model: torch.nn.Module, model_args: ModelArguments, args: CrocTrainingArguments,
               resume_from: str | Path | None = None) -> torch.nn.Module:
    """Wrap `model` (its trainable parts already set) in a `PeftModel` with LoRA on the language model. A run resumed
    from `resume_from` keeps the modules whole that its checkpoint keeps (`resumed_modules_to_save`)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    modules_to_save, loose = fully_trained_modules(model, args.trainable_parts)
    resumed = resumed_modules_to_save(model, modules_to_save, resume_from)
    if resumed is not None:
        frozen = sorted(_kept_whole(model, modules_to_save) - _kept_whole(model, resumed))
        logger.warning("%s was written by an earlier version of this trainer whose LoRA kept %s frozen: the resumed "
                       "run goes on as it started, with them frozen (start a new output_dir to train them)",
                       resume_from, ", ".join(frozen) or "other modules")
        modules_to_save, loose = resumed, []
    if loose:  # refused before the load by `model_checks.check_lora_keeps_the_trained_parts`
        raise ValueError(f"LoRA would freeze {', '.join(loose)}, which the stage trains")
    if model_args.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
    config = LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=lora_target_regex(model_args.lora_target_modules, language_model_name(model)),
        modules_to_save=modules_to_save or None,
        bias="none",
    )
    # The adapters' initial values are drawn from the CPU generator at the run's seed, not from wherever loading
    # left it: a model built partitioned under ZeRO-3 draws otherwise than one built whole, and its LoRA run left
    # the one-process run's curve at its second step. The generator is restored after (and CUDA's left alone).
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(args.seed)
        peft_model = get_peft_model(model, config)
    source = model_args.name_or_path
    if source and is_hub_id(source) and not Path(source).expanduser().is_dir():
        # PEFT names the base by the folder the model loaded from: a Hub id's snapshot in this machine's cache, a
        # local path the upload cannot carry. The id loads the same weights anywhere (and `merge_lora` finds it).
        peft_model.peft_config["default"].base_model_name_or_path = source
    if args.gradient_checkpointing:
        # Text-only batches reach the first decoder layer with no tensor requiring grad (embeddings are frozen).
        peft_model.enable_input_require_grads()
    return peft_model
