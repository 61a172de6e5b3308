"""Build or load the model and processor of a stage, set its Croc fields and freeze what the stage does not train.

Sources (one per run, see `ModelArguments`): a Croc folder of the previous stage, a transformers `llava`
folder, or separate CLIP + LLM checkpoints (stage 1).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import LlavaConfig, LlavaImageProcessorPil

from modeling_croc import CROC_PRESETS, CrocConfig, CrocForConditionalGeneration, CrocProcessor
from modeling_croc.convert.common import build_processor
from modeling_croc.convert.from_llava import croc_config_from_llava
from modeling_croc.convert.from_parts import build_from_parts

from .croc_config import CrocTrainingArguments
from .script_args import ModelArguments
from .stages import PARAMETER_GROUPS, parameter_group

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Missing weights that a load may legitimately start fresh: the pool and the VTR head (not in llava checkpoints).
FRESH_PREFIXES = ("model.prompt_pool.", "vtr_head.")


def croc_fields(args: CrocTrainingArguments) -> dict:
    """The CrocConfig fields this run sets: preset, the stage's objectives, and the explicit overrides."""
    return {"croc_preset": args.croc_preset, "croc_pretraining": args.stage_spec.croc_pretraining,
            **(args.croc_config or {})}


def reconfigure(config: CrocConfig, args: CrocTrainingArguments) -> CrocConfig:
    """`config` with this run's Croc fields. Switching preset refills every preset field from the new preset;
    a new preset or pool size means a new pool, which then still needs calibrating."""
    data = config.to_dict()
    fields = croc_fields(args)
    if data.get("croc_preset") != fields["croc_preset"]:
        for name in CROC_PRESETS[fields["croc_preset"]]:
            data[name] = None
        data["prompt_pool_calibrated"] = False
    if "prompt_pool_size" in fields and fields["prompt_pool_size"] != data.get("prompt_pool_size"):
        data["prompt_pool_calibrated"] = False
    data.update(fields)
    return CrocConfig.from_dict(data)


def _load_kwargs(model_args: ModelArguments) -> dict:
    kwargs = {"dtype": DTYPES[model_args.dtype], "attn_implementation": model_args.attn_implementation}
    if model_args.load_in_4bit:
        from transformers import BitsAndBytesConfig

        # Only the language model is quantised; the tower, projector, pool, head and lm_head stay in full precision.
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
            llm_int8_skip_modules=["vision_tower", "multi_modal_projector", "prompt_pool", "vtr_head", "lm_head"],
        )
    return kwargs


def load_pretrained_croc(path: str, config: CrocConfig, **kwargs) -> CrocForConditionalGeneration:
    """`from_pretrained` that tolerates exactly one kind of change, a new pool size, and refuses silent gaps:
    any missing weight other than the pool / VTR head (e.g. an `lm_head` left random by a renaming problem)."""
    saved = CrocConfig.from_pretrained(path) if _model_type(path) == "croc" else None
    resized_pool = saved is not None and saved.prompt_pool_size != config.prompt_pool_size
    model, info = CrocForConditionalGeneration.from_pretrained(
        path, config=config, output_loading_info=True, ignore_mismatched_sizes=resized_pool, **kwargs
    )
    missing = [name for name in info.get("missing_keys", []) if not name.startswith(FRESH_PREFIXES)]
    mismatched = [entry[0] if isinstance(entry, tuple) else entry for entry in info.get("mismatched_keys", [])]
    mismatched = [name for name in mismatched if not str(name).startswith("model.prompt_pool.")]
    if missing or mismatched:
        raise ValueError(f"{path}: weights missing {missing[:8]} / of the wrong shape {mismatched[:8]}; is it a "
                         "Croc or llava checkpoint of this architecture?")
    if resized_pool:
        logger.warning("prompt pool resized %d -> %d: the new pool starts fresh", saved.prompt_pool_size,
                       config.prompt_pool_size)
    return model


def _model_type(path: str) -> str | None:
    try:
        return LlavaConfig.get_config_dict(path)[0].get("model_type")
    except OSError:
        return None


def _with_padding_image_processor(processor: CrocProcessor, aspect_ratio: str) -> CrocProcessor:
    """For "pad" stages, make the saved processor pad to square too, so inference sees images as training did."""
    current = processor.image_processor
    if aspect_ratio != "pad" or getattr(current, "do_pad", False):
        return processor
    settings = {k: v for k, v in current.to_dict().items() if k not in ("image_processor_type", "processor_class")}
    settings["do_pad"] = True
    processor.image_processor = LlavaImageProcessorPil(**settings)
    return processor


def load_model_and_processor(
    model_args: ModelArguments, args: CrocTrainingArguments
) -> tuple[CrocForConditionalGeneration, CrocProcessor]:
    """The model (train mode, stage-specific config) and its processor for `args.stage`."""
    load_kwargs = _load_kwargs(model_args)
    if model_args.vision_tower:
        vision, language = _local_snapshot(model_args.vision_tower), _local_snapshot(model_args.language_model)
        model, processor = build_from_parts(vision, language, image_aspect_ratio=args.image_aspect_ratio,
                                            **croc_fields(args))
        model = model.to(load_kwargs["dtype"])
        model.config._attn_implementation = model_args.attn_implementation  # validated before: not flash in 1.5
    else:
        path = model_args.name_or_path
        if _model_type(path) == "llava":
            source = croc_config_from_llava(LlavaConfig.from_pretrained(path))
            processor = _llava_processor(path, source)
        else:
            source = CrocConfig.from_pretrained(path)
            processor = CrocProcessor.from_pretrained(path)
        config = reconfigure(source, args)
        model = load_pretrained_croc(path, config, **load_kwargs)
        if source.croc_preset != config.croc_preset:
            # The saved pool was drawn for the other preset (e.g. std 0.02 vs the released code's N(0, 1)).
            model.model.prompt_pool.reset_parameters()
    processor = _with_padding_image_processor(processor, args.image_aspect_ratio)
    model.train()
    return model, processor


def _llava_processor(path: str, config: CrocConfig) -> CrocProcessor:
    from transformers import AutoProcessor

    source = AutoProcessor.from_pretrained(path)
    processor = build_processor(source.tokenizer, None, config.vision_config)
    processor.image_processor = source.image_processor
    return processor


def _local_snapshot(name_or_path: str) -> Path:
    """A local folder for `name_or_path`, downloading a Hub repository's config, tokenizer and weights if needed."""
    if Path(name_or_path).expanduser().is_dir():
        return Path(name_or_path).expanduser()
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.model", "*.safetensors", "*.txt"]))


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
