"""LoRA / QLoRA for the language model in stages 1.5 and 2, with the projector, pool and VTR head fully trained.

The adapters target only the language model's projections. The other trainable parts of the stage go to PEFT's
`modules_to_save`, so an adapter folder holds everything the stage changed and `trainer.merge_lora` can rebuild
the full model from it and the base folder.
"""

from __future__ import annotations

import re

import torch

from .script_args import ModelArguments
from .training_args import CrocTrainingArguments

# Module names (as PEFT's `modules_to_save` matches them: suffixes of module paths) of every non-LM part.
FULLY_TRAINED_MODULES = {
    "projector": ("multi_modal_projector",),
    "prompt_pool": ("prompt_pool", "vtr_head"),
    "vision_tower": ("vision_tower",),
}


def language_model_name(model: torch.nn.Module) -> str:
    """The attribute name of `model`'s language model inside its base model: `language_model` in most families,
    `text_model` in SmolVLM's (`CrocModelMixin.croc_language_model`)."""
    language_model = getattr(getattr(model, "model", None), "croc_language_model", None)
    for name, module in model.named_modules():
        if name and module is language_model:
            return name.rsplit(".", 1)[-1]
    return "language_model"


def lora_target_regex(target_modules: list[str], language_model: str = "language_model") -> str:
    """A regex PEFT full-matches against module names: the given projections inside the language model only
    (the vision tower has `q_proj`/`k_proj`/`v_proj` too, and must not be adapted). `language_model`: its attribute
    name (`language_model_name`); a family naming it otherwise (SmolVLM's `text_model`) would match nothing."""
    names = "|".join(re.escape(name) for name in target_modules)
    return rf".*{re.escape(language_model)}\..*\.({names})"


def apply_lora(model: torch.nn.Module, model_args: ModelArguments, args: CrocTrainingArguments) -> torch.nn.Module:
    """Wrap `model` (its trainable parts already set) in a `PeftModel` with LoRA on the language model."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    modules_to_save = [
        name
        for group in args.trainable_parts
        for name in FULLY_TRAINED_MODULES.get(group, ())
        if getattr(model, name, None) is not None or hasattr(model.model, name)
    ]
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
    peft_model = get_peft_model(model, config)
    if args.gradient_checkpointing:
        # Text-only batches reach the first decoder layer with no tensor requiring grad (embeddings are frozen).
        peft_model.enable_input_require_grads()
    return peft_model
