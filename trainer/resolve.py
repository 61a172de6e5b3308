"""From `CONFIG.yaml [--key=value ...]` to the checked, resolved arguments of a run, without loading anything.

Order: the file and its keys (`trainer.cli`), this machine (`trainer.validation`: paths, packages, hardware), the
meaning of each section (the argument dataclasses' `__post_init__`), and last the rules that need two sections at
once (below), among them the Croc fields: a `CrocConfig` is constructed from the model's config.json and the run's
preset and `croc_overrides`, which runs every check of the model config (the prompt-pool size against the vision
tower's token count included) without reading a weight. Every problem surfaces as a `ConfigError` before a model is
built.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import NamedTuple

from huggingface_hub.errors import StrictDataclassError

from modeling_croc.attention_mask import check_mixed_attention_backend, is_maskless_backend
from modeling_croc.conversation import TEMPLATES
from modeling_croc.families import FAMILY_OF_CONFIG
from modeling_croc.loading import _config_folder, read_croc_config
from modeling_croc.presets import get_preset
from modeling_croc.split_attention import SPLIT_ATTENTION, split_attention_problem

from .argument_checks import check_arguments
from .cli import TRAINING, ConfigError, _section_of, _split_argv, build_arguments, load_raw_config
from .script_args import DataArguments, ModelArguments
from .stages import PARAMETER_GROUPS, StageSpec
from .training_args import CrocTrainingArguments
from .validation import validate_environment

logger = logging.getLogger(__name__)


class ResolvedConfig(NamedTuple):
    """A run's configuration as the trainer uses it: every stage and preset default filled in."""

    model: ModelArguments
    data: DataArguments
    training: CrocTrainingArguments
    stage: StageSpec


def resolve_config(argv: list[str]) -> ResolvedConfig:
    """Read, check and resolve `argv` (`CONFIG.yaml [--key=value ...]`) as `python -m trainer.train` does.

    Raises `ConfigError` for any problem the configuration alone shows (unknown keys, paths, batch arithmetic, ...).
    """
    raw = load_raw_config(argv)
    data_path = raw["data"].get("path")  # as given, before the checks below read it
    validate_environment(raw)
    if raw["training"].get("hub_dry_run") and raw["training"].get("push_to_hub"):
        logger.warning("hub_dry_run given: nothing is pushed")
        raw["training"]["push_to_hub"] = False
    try:
        model_args, data_args, training_args = build_arguments(raw)
    except (ValueError, TypeError) as error:  # TypeError: a value of the wrong shape (a list where a number goes)
        raise ConfigError(" ".join(str(error).split())) from None
    command_line = command_line_keys(argv)
    warn_preset_keeps_file_optimiser(load_raw_config(argv[:1])["training"], training_args, command_line)
    warn_template_renders_no_prompt(training_args)
    drop_hub_datasets_of_other_data(data_path, load_raw_config(argv[:1])["data"].get("path"), command_line,
                                    training_args)
    check_across_sections(model_args, training_args)
    check_croc_config(model_args, training_args, command_line)
    resolve_packing(model_args, training_args)
    check_arguments(model_args, data_args, training_args)
    return ResolvedConfig(model_args, data_args, training_args, training_args.stage_spec)


def command_line_keys(argv: list[str]) -> frozenset[str]:
    """The keys `argv`'s overrides set, as the YAML spells them (`data.path`, `hub_datasets`): what the command line
    chose, as against what the YAML file says."""
    _, overrides = _split_argv(list(argv))
    keys = (_section_of(key) for key, _ in overrides)
    return frozenset(name if section == TRAINING else f"{section}.{name}" for section, name in keys)


def warn_preset_keeps_file_optimiser(file_training: dict, args: CrocTrainingArguments,
                                     command_line: frozenset[str]) -> None:
    """Warn when `--croc_preset` on the command line switches the preset of a YAML that writes out its own learning
    rates or betas: those stay the file's (explicit values win), so `stage1_5.yaml --croc_preset=official` trains
    with the paper's rates, not the released code's, which the log's rates line alone does not say."""
    default = next(field.default for field in dataclasses.fields(CrocTrainingArguments) if field.name == "croc_preset")
    if "croc_preset" not in command_line or file_training.get("croc_preset", default) == args.croc_preset:
        return  # no switch: the file's rates are the ones it wrote for its own preset
    preset = get_preset(args.croc_preset)
    wanted = {f"{group}_lr": args.stage_spec.default_learning_rate(args.croc_preset, group)
              for group in PARAMETER_GROUPS}
    wanted |= {"adam_beta1": preset.adam_betas[0], "adam_beta2": preset.adam_betas[1]}
    kept = [f"{key} {getattr(args, key):g} ({args.croc_preset}: {value:g})" for key, value in wanted.items()
            if key in file_training and key not in command_line and value is not None
            and getattr(args, key) is not None and getattr(args, key) != value]
    if kept:
        logger.warning("--croc_preset=%s keeps the optimiser settings the config file writes out: %s; pass them on "
                       "the command line too, or start from a config written for that preset (trainer/configs/*_official.yaml, "
                       "trainer/configs/victor/)", args.croc_preset, ", ".join(kept))


def warn_template_renders_no_prompt(args: CrocTrainingArguments) -> None:
    """Warn when a stage after 1 trains with a template that renders no user text (`plain`, stage 1's): its rows'
    questions are dropped, and the saved processor keeps its parent's chat template, which then prompts the model in a
    format it was not trained on (the card says to prompt with the processor's chat template)."""
    if args.stage == "1" or TEMPLATES[args.template].user_text:
        return
    logger.warning("template=%s renders no user text (stage 1's image-and-caption format): stage %s trains without "
                   "its rows' questions, and the processor it saves keeps its parent's chat template, a format this "
                   "stage does not train; leave the stage's template (%s) unless that is the experiment",
                   args.template, args.stage, args.stage_spec.template)


def drop_hub_datasets_of_other_data(data_path, yaml_data_path, command_line: frozenset[str],
                                    args: CrocTrainingArguments) -> None:
    """A YAML's `hub_datasets` name the data its `data.path` holds: a run that trains on other data
    (`--data.path=...` differing from the YAML's) drops them, with a log line, unless the command line names
    `hub_datasets` too. The card then lists what the data itself records (a data_recipes build's sources)."""
    if not args.hub_datasets or "hub_datasets" in command_line or "data.path" not in command_line:
        return
    if data_path == yaml_data_path:
        return
    logger.info("hub_datasets %s left off the model card: the YAML names them for its data.path (%s), not for "
                "--data.path=%s; give --hub_datasets=[...] to name this data's datasets", args.hub_datasets,
                yaml_data_path, data_path)
    args.hub_datasets = None


def resolve_training_arguments(argv: list[str]) -> CrocTrainingArguments:
    """Only the training section of `argv` (`CONFIG.yaml [--key=value ...]`), resolved: the stage, steps, batch
    arithmetic, learning rates, template and the rest as a run would use them, without this machine's checks (the
    model and data paths need not exist yet). For tools that plan runs, such as the demo."""
    raw = load_raw_config(argv)
    raw["training"].setdefault("output_dir", "unused")
    try:
        return CrocTrainingArguments(**raw["training"])
    except (ValueError, TypeError) as error:
        raise ConfigError(" ".join(str(error).split())) from None


def check_across_sections(model_args: ModelArguments, args: CrocTrainingArguments) -> None:
    """The rules that tie the model section to the stage."""
    stage = args.stage_spec
    if model_args.vision_tower and stage.name != "1":
        raise ConfigError(
            f"stage {stage.name} continues a trained model: set model.name_or_path to the previous stage's folder "
            "(separate CLIP + LLM checkpoints only start stage 1)"
        )
    if model_args.use_peft and "language_model" not in args.trainable_parts:
        raise ConfigError(f"LoRA adapts the language model, which stage {stage.name} keeps frozen; use it in 1.5 or 2")
    span = args.croc_fields.get("bidirectional_span") or get_preset(args.croc_preset).model_fields["bidirectional_span"]
    if stage.croc_pretraining and span != "none":
        try:
            check_mixed_attention_backend(model_args.attn_implementation)
        except ValueError as error:
            raise ConfigError(
                f"stage {stage.name}: {error} (--model.attn_implementation=sdpa, croc_split, eager or flex_attention)"
            ) from None


def check_croc_config(model_args: ModelArguments, args: CrocTrainingArguments,
                      command_line: frozenset[str] | None = None) -> None:
    """Construct the run's `CrocConfig` from the model's config.json (no weights) with the preset, the stage's
    objectives and `croc_overrides`, so every field it refuses (`mask_ratio: 1.5`, a pool too small for Hungarian
    matching on this tower, a value of the wrong type) is a `ConfigError` now. When no config.json can be read yet
    (an uncached Hub id), `trainer.train` reports the same errors from the load, still before any weight is read."""
    try:
        if model_args.name_or_path:
            config = read_croc_config(model_args.name_or_path, croc_fields=args.croc_fields)
        else:
            config = read_croc_config(vision_tower=model_args.vision_tower, croc_fields=args.croc_fields)
    except (ValueError, TypeError, StrictDataclassError) as error:
        raise ConfigError(f"the model's config with croc_preset / croc_overrides: {' '.join(str(error).split())}") from None
    text_config = language_model_config(model_args, config)
    if text_config is not None and model_args.attn_implementation == SPLIT_ATTENTION:
        problem = split_attention_problem(text_config)
        if problem is not None:
            # The mask path computes the same attention; only its speed differs.
            logger.warning("%s: falling back to the mask path (model.attn_implementation=eager)", problem)
            model_args.attn_implementation = "eager"
    if config is not None:
        use_family_data_path(config, args, command_line)
    if args.packing and config is not None and config.croc_variable_token_count:
        # The collator packs fixed-size images only; AnyRes crops and native-resolution patches carry their sizes
        # or grids per image.
        raise ConfigError(f"packing=true: {config.model_type} images have a token count of their own (AnyRes crops "
                          "or native-resolution patches), which the collator does not pack; set packing=false for "
                          "this model")
    if args.packing and config is not None:
        # A family whose model refuses packed rows (Gemma 3's sliding layers): refused here, before the model loads,
        # not by the first packed forward mid-run.
        family = FAMILY_OF_CONFIG.get(type(config))
        refusal = getattr(family.model, "croc_packing_refusal", None) if family is not None else None
        if refusal:
            raise ConfigError(f"packing=true: {refusal}")


def language_model_config(model_args: ModelArguments, config):
    """The config of the language model the run trains: the Croc config's, or in a stage 1 from separate parts the
    LLM folder's own (`read_croc_config` builds the parts' config from the vision tower alone, around a default text
    config); None when there is none to read yet."""
    if model_args.language_model:
        folder = _config_folder(model_args.language_model)
        if folder is None:
            return None
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(folder)
        except (ValueError, OSError) as error:  # an unknown model_type, custom code, a config.json that does not parse
            raise ConfigError(f"model.language_model={model_args.language_model}: "
                              f"{' '.join(str(error).split())}") from None
    return None if config is None else config.text_config


# The families whose folders stage 1 aligns (a Croc folder built from a vision tower and a language model); every
# other family's checkpoint is a trained VLM whose projector is already aligned, so its first Croc stage is 1.5.
STAGE1_FAMILIES = ("llava", "llava_onevision")


def use_family_data_path(config, args: CrocTrainingArguments, command_line: frozenset[str] | None = None) -> None:
    """The model family's part of the data path: refused in one line where the trainer does not build it (the
    family's model classes, conversion and export still work) or where the stage does not apply (stage 1 on an
    aligned family checkpoint), and its own chat format in the chat stages unless the run names a template
    (`families.CrocFamily.template`). An `image_aspect_ratio` the family's processor does not apply is refused when
    the run names it (`command_line`: the keys the command line set; None: every named value is the caller's), and
    passed over with a log line when it comes from a YAML shared with LLaVA-1.5 (trainer/configs/stage2.yaml)."""
    family = FAMILY_OF_CONFIG[type(config)]
    name = family.plain_model_type
    if not family.trainer_data:
        raise ConfigError(f"{name}: the trainer's data path (this family's processor, chat format "
                          "and batch layout) is not built yet; its Croc model classes, conversion and export work "
                          "(docs/MODELS.md)")
    if args.stage_spec.name == "1" and name not in STAGE1_FAMILIES:
        raise ConfigError(f"stage 1: a {name} checkpoint is already aligned: start at stage 1.5 "
                          f"(trainer/configs/{name}/stage1_5.yaml)")
    if family.template and not args.template_named and TEMPLATES[args.template].user_text:
        logger.info("template: %s, %s's own chat format (the stage's is %s)", family.template, name, args.template)
        args.template = family.template
    elif family.template and args.template_named and args.template != family.template:
        logger.warning("template: %s on a %s model, whose own chat format is %s (drop --template for it)",
                       args.template, name, family.template)
    from .model_card import applies_image_aspect_ratio

    if args.image_aspect_ratio_named and not applies_image_aspect_ratio(config):
        if command_line is None or "image_aspect_ratio" in command_line:
            raise ConfigError(f"image_aspect_ratio={args.image_aspect_ratio}: {name}'s processor prepares images its "
                              "own way and does not apply it; drop image_aspect_ratio for this model")
        logger.info("image_aspect_ratio: %s from the YAML is not applied: %s's processor prepares images its own way",
                    args.image_aspect_ratio, name)


def resolve_packing(model_args: ModelArguments, args: CrocTrainingArguments) -> None:
    """FlashAttention keeps packed samples apart only in a one-row batch (its varlen path): with packing on such a
    backend, the micro-batch is packed into one row (`packing_max_length=0`); a fixed budget would give several
    rows, refused here rather than by the model's first forward."""
    if not args.packing or not is_maskless_backend(model_args.attn_implementation):
        return
    if args.packing_max_length not in (None, 0):
        raise ConfigError(
            f"packing_max_length={args.packing_max_length} with attn_implementation="
            f"{model_args.attn_implementation!r}: FlashAttention packs a micro-batch into one row; leave "
            "packing_max_length unset (or 0)"
        )
    args.packing_max_length = 0
