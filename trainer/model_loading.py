"""Build or load the model and processor of a stage, set its Croc fields and freeze what the stage does not train.

Sources (one per run, see `ModelArguments`): a Croc folder of the previous stage (LLaVA-1.5 or OneVision layout), a
transformers `llava` / `llava_onevision` folder, or separate vision-tower + LLM checkpoints (stage 1).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

from modeling_croc import CrocForConditionalGeneration, CrocOnevisionForConditionalGeneration
from modeling_croc.constants import IMAGE_TOKEN
from modeling_croc.conversation import get_template
from modeling_croc.loading import load_croc, load_croc_processor, local_folder, read_croc_config
from modeling_croc.model_folders import ModelFolderError

from .cli import ConfigError
from .script_args import ModelArguments
from .stages import PARAMETER_GROUPS, parameter_group
from .training_args import CrocTrainingArguments

logger = logging.getLogger(__name__)

# The modules QLoRA keeps in full precision, as the paths of every family's (`model.visual` holds Qwen's merger,
# `model.vision_model` and `model.connector` are SmolVLM's, `model.embed_vision` Gemma 4's projector). transformers
# matches a skip entry from the start of a module's path (or as its suffix), so the bare `vision_tower` /
# `multi_modal_projector` matched none of the `model.`-prefixed towers and projectors: they were quantised too, the
# projector the stage trains included.
QLORA_FULL_PRECISION_MODULES: tuple[str, ...] = (
    "model.vision_tower", "model.visual", "model.vision_model", "model.multi_modal_projector", "model.connector",
    "model.embed_vision", "model.prompt_pool", "vtr_head", "lm_head",
)


def _load_kwargs(model_args: ModelArguments) -> dict:
    kwargs = {"dtype": model_args.dtype, "attn_implementation": model_args.attn_implementation}
    if model_args.load_in_4bit:
        from transformers import BitsAndBytesConfig

        # Only the language model is quantised; the tower, projector, pool, head and lm_head stay in full precision.
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
            llm_int8_skip_modules=list(QLORA_FULL_PRECISION_MODULES),
        )
    return kwargs


@contextlib.contextmanager
def model_folder_errors(model_args: ModelArguments) -> Iterator[None]:
    """The one place a model folder that does not load becomes one line: a `ModelFolderError` (weights its
    config.json does not describe, a weights file cut short or corrupt, a shard absent, processor files that do not
    load) is a `ConfigError` naming the option that gave the folder. Other errors (bugs) keep their traceback."""
    try:
        yield
    except ModelFolderError as error:
        named = [key for key in ("name_or_path", "vision_tower", "language_model") if getattr(model_args, key, None)
                 and local_folder(getattr(model_args, key)).resolve() == error.folder.resolve()]
        where = f"model.{named[0]}={getattr(model_args, named[0])}" if named else str(error.folder)
        raise ConfigError(f"{where} cannot be loaded: {' '.join(error.problem.split())}") from None


def load_stage_processor(model_args: ModelArguments, args: CrocTrainingArguments, bound_to_pool: bool = True):
    """The stage's processor (its template's chat template, images prepared the stage's way) from the configs and
    tokenizer of the model source alone, no weights: what the run's rows are tokenised and checked with before the
    model loads. `bound_to_pool=False`: without stage 1.5's bound on image sizes (`fit_images_to_pool`), as the
    source has them: what the model is saved with."""
    with model_folder_errors(model_args):
        if model_args.vision_tower:
            processor = load_croc_processor(vision_tower=model_args.vision_tower,
                                            language_model=model_args.language_model,
                                            image_aspect_ratio=args.image_aspect_ratio)
        else:
            processor = load_croc_processor(model_args.name_or_path, image_aspect_ratio=args.image_aspect_ratio)
        if bound_to_pool and hasattr(processor, "max_visual_tokens"):  # a count per image: fit to the pool
            config = read_croc_config(model_args.name_or_path, croc_fields=args.croc_fields)
            if config is not None:
                fit_images_to_pool(processor, config)
    return _for_stage(processor, args)

# A token count no image reaches: where even it masks no more tokens than the pool holds (mask_ratio 0), no limit.
_NO_TOKEN_LIMIT = 2**40


def fit_images_to_pool(processor, config) -> None:
    """Bound a native-resolution processor's images (Qwen2.5-VL's: up to 16,384 merged tokens by default) so that
    stage 1.5's one-to-one matching can serve every image: its masked tokens never outnumber the prompt pool (with
    `mask_ratio` 0.75 and a 2048 pool, 2730 tokens, ~2.1 MP). Without this, the first large image would end the run
    mid-way; with it, the limit is decided before the data is read and logged once. A processor whose images cannot
    be bounded (AnyRes grids: LLaVA-NeXT, OneVision), or not that far (Gemma 4's smallest `max_soft_tokens`, 70),
    with a largest image the pool cannot serve is refused in one line (`ConfigError`)."""
    if not (config.croc_pretraining and config.token_matching == "hungarian"):
        return
    most = int(processor.max_visual_tokens)
    # The largest count whose masked tokens fit the pool (num_masked_tokens is monotone): the search's upper end
    # doubles until it is too many, so a small mask_ratio (0.2: a count of 5 x the pool fits) finds it too.
    high = max(most, 1)
    while config.num_masked_tokens(high) <= config.prompt_pool_size and high < _NO_TOKEN_LIMIT:
        high *= 2
    low = 1
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if config.num_masked_tokens(middle) <= config.prompt_pool_size else (low, middle - 1)
    # The bound on an image's size is not one on its tokens for every shape: Qwen's resize keeps one merge window on
    # a thin image's short side, so a 28 x 4200 image takes about sqrt(budget x 150) windows, more than the budget
    # (24 for a budget of 4). The dataset replaces a row whose image still has more tokens than this (one line in the
    # data report) rather than let the matching end the run in a traceback.
    processor.pool_visual_token_limit = None if config.num_masked_tokens(low + 1) <= config.prompt_pool_size else low
    if config.num_masked_tokens(most) <= config.prompt_pool_size:
        return
    limit = getattr(processor, "limit_visual_tokens", None)
    if limit is None:  # AnyRes grids: no smaller image size without changing the model
        raise ConfigError(
            f"{type(processor).__name__} expands an image to up to {most} visual tokens, whose "
            f"{config.num_masked_tokens(most)} masked tokens outnumber the {config.prompt_pool_size}-token prompt pool "
            f"(Hungarian matching is one-to-one): the first such image would stop the run. Set croc_overrides "
            f"prompt_pool_size >= {config.num_masked_tokens(most)}, or token_matching: nearest")
    limit(low)
    # A processor whose image sizes come in steps (Gemma 4's `max_soft_tokens` budgets) bounds to the largest step
    # under `low`, or cannot go that low: its smallest step is checked again rather than trusted.
    bounded = int(processor.max_visual_tokens)
    if config.num_masked_tokens(bounded) > config.prompt_pool_size:
        raise ConfigError(
            f"{type(processor).__name__} expands an image to at least {bounded} visual tokens at its smallest size, "
            f"whose {config.num_masked_tokens(bounded)} masked tokens outnumber the {config.prompt_pool_size}-token "
            f"prompt pool (Hungarian matching is one-to-one): set croc_overrides prompt_pool_size >= "
            f"{config.num_masked_tokens(bounded)}, or token_matching: nearest")
    logger.info("images resized to at most %d visual tokens (was %d), so that their %d masked tokens fit the "
                "%d-token prompt pool one-to-one", bounded, most, config.num_masked_tokens(bounded),
                config.prompt_pool_size)


def _for_stage(processor, args: CrocTrainingArguments):
    template = get_template(args.template)
    if template.user_text and processor is not None:
        # The saved processor prompts the model the way this stage trains it (Vicuna v1, or ChatML for Qwen runs).
        processor.chat_template = template.chat_template(processor.tokenizer.eos_token,
                                                         getattr(processor, "image_token", IMAGE_TOKEN))
    return processor


def load_model_and_processor(
    model_args: ModelArguments, args: CrocTrainingArguments
) -> tuple[CrocForConditionalGeneration | CrocOnevisionForConditionalGeneration, object]:
    """The model (train mode, stage-specific config) and its processor (preparing images the stage's way) for
    `args.stage`, from whichever source `model_args` names (`modeling_croc.loading.load_croc`).

    A folder whose weights cannot be loaded as its config.json describes them (`ModelFolderError`: missing,
    unexpected or of another shape, a file cut short or corrupt, a shard absent) is a `ConfigError` naming the option
    that gave it: one line, not the loader's traceback."""
    if model_args.vision_tower:
        sources = {"vision_tower": local_folder(model_args.vision_tower),
                   "language_model": local_folder(model_args.language_model)}
    else:
        sources = {"source": local_folder(model_args.name_or_path)}
    with model_folder_errors(model_args):
        model, processor = load_croc(**sources, croc_fields=args.croc_fields,
                                     image_aspect_ratio=args.image_aspect_ratio, **_load_kwargs(model_args))
    model.train()
    return model, _for_stage(processor, args)


def apply_trainable_parts(model: torch.nn.Module, parts: list[str]) -> dict[str, tuple[int, int]]:
    """Train exactly the parameter groups in `parts` (`requires_grad`); returns `count_trainable(model)`."""
    for name, param in model.named_parameters():
        group = parameter_group(name)
        if group is None:
            raise ValueError(f"parameter {name} belongs to no parameter group of {PARAMETER_GROUPS}")
        param.requires_grad_(group in parts and param.dtype.is_floating_point)
    return count_trainable(model)


def count_trainable(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """group -> (trainable, total) parameter counts (ZeRO-3 partitioned parameters counted at full size)."""
    counts = {group: [0, 0] for group in PARAMETER_GROUPS}
    for name, param in model.named_parameters():
        group = parameter_group(name)
        if group is None:
            continue
        numel = getattr(param, "ds_numel", param.numel())
        counts[group][1] += numel
        if param.requires_grad:
            counts[group][0] += numel
    return {group: (trainable, total) for group, (trainable, total) in counts.items()}


def format_trainable(counts: dict[str, tuple[int, int]], stage: str) -> str:
    """A small table of trainable / total parameters per group, for the log."""
    lines = [f"stage {stage}: trainable parameters per group", f"  {'group':<16}{'trainable':>15}{'total':>15}"]
    for group, (trainable, total) in counts.items():
        lines.append(f"  {group:<16}{trainable:>15,}{total:>15,}")
    trainable = sum(c[0] for c in counts.values())
    total = sum(c[1] for c in counts.values())
    lines.append(f"  {'all':<16}{trainable:>15,}{total:>15,}  ({100 * trainable / max(total, 1):.2f}%)")
    return "\n".join(lines)
