"""Checks of a run against its model, made before any weight is read: from the model folder's config.json (with the
preset and `croc_overrides`), its processor, and the model built on the `meta` device (its modules and parameter
shapes, no memory). The language model of a stage-1 run from separate parts against the attention backend; the
attention backend against the model's classes; the LoRA targets and the parts LoRA keeps trained against its modules;
the prompt pool under ZeRO-3 against the saved one; and `model_max_length` against the shortest sample that can train.

`trainer.argument_checks.check_arguments` runs them last, after the checks of the arguments themselves. One check
needs the weights: `check_finite_start`, which `trainer.train` runs right after the load, before any step. Every check
raises `trainer.cli.ConfigError`: one line saying what is wrong, the value, and what to do.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import re
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError
from PIL import Image

from modeling_croc.constants import IGNORE_INDEX, IMAGE_TOKEN
from modeling_croc.conversation import get_template
from modeling_croc.loading import (
    croc_model_class,
    load_croc_config,
    load_processor,
    read_croc_config,
    source_kind,
)

from .cli import ConfigError

# PyTorch modules PEFT's LoRA wraps.
LORA_MODULE_TYPES = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


def read_model_config(model_args: Any, args: Any):
    """The run's Croc config from the model folder's config.json (with the preset and overrides), or None when there
    is no folder to read (stage 1 from separate parts, an uncached Hub id)."""
    if not model_args.name_or_path:
        return None
    try:
        return read_croc_config(model_args.name_or_path, croc_fields=args.croc_fields)
    except (ValueError, TypeError, StrictDataclassError):  # a Croc field `check_croc_config` or the load reports
        return None


def check_language_model_part(model_args: Any) -> None:
    """Stage 1 from separate parts: the LLM built on the `meta` device with the run's attention, so transformers'
    refusal of it (Gemma 2 has no sdpa) is one line now rather than a traceback from the load."""
    if not model_args.language_model:
        return
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights
    from transformers.utils.generic import is_flash_attention_requested

    from modeling_croc.loading import _config_folder

    folder = _config_folder(model_args.language_model)
    if folder is None:  # not readable yet: the load reports it
        return
    attn_implementation = model_args.attn_implementation
    if is_flash_attention_requested(requested_attention_implementation=attn_implementation):
        attn_implementation = "eager"  # its package and GPU are `validation.check_attention_backend`'s
    try:
        config = AutoConfig.from_pretrained(folder)
        with torch.device("meta"), no_init_weights():
            AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    except (ValueError, ImportError, OSError) as error:
        raise ConfigError(f"model.attn_implementation={attn_implementation} with model.language_model="
                            f"{model_args.language_model}: {' '.join(str(error).split())}") from None


def build_on_meta(config: Any, attn_implementation: str) -> torch.nn.Module:
    """The Croc model of `config` on the `meta` device: its modules and parameter shapes with no memory and no
    weights (LLaVA-1.5-7B: 727 modules, 7.1B parameters, about 0.1 s on one CPU core). Building it runs transformers'
    own check of `attn_implementation` against the model classes, as `from_pretrained` would before reading weights.
    FlashAttention needs its package and a GPU, which `validation.check_attention_backend` checks (so a test can
    stand in for them); the meta model is built with eager attention then."""
    from transformers.initialization import no_init_weights
    from transformers.modeling_utils import set_zero3_state
    from transformers.utils.generic import is_flash_attention_requested

    config = copy.deepcopy(config)
    if is_flash_attention_requested(requested_attention_implementation=attn_implementation):
        attn_implementation = "eager"
    config._attn_implementation = attn_implementation
    try:
        # Under ZeRO-3 transformers would build each sub-model in `deepspeed.zero.Init` (which starts a process
        # group); `set_zero3_state` is how `from_pretrained` marks that one is already open. A meta model is never
        # partitioned, and its weights are never initialised.
        with torch.device("meta"), set_zero3_state(), no_init_weights():
            return croc_model_class(config)(config)
    except (ValueError, ImportError) as error:
        raise ConfigError(f"model.attn_implementation={attn_implementation}: {' '.join(str(error).split())}") \
            from None


def check_lora_targets(model: torch.nn.Module, target_modules: list[str]) -> None:
    """Every name of `model.lora_target_modules` selects at least one module LoRA can wrap inside the language
    model, with the regex `trainer.lora` gives PEFT: a misspelt name would otherwise leave its projections without
    adapters silently (or, if no name matches, fail after the load)."""
    from .lora import language_model_name, lora_target_regex  # trainer.lora imports the argument dataclasses

    names = [name for name, _ in model.named_modules()]
    language_model = language_model_name(model)
    projections = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                          if f".{language_model}." in f".{name}" and isinstance(module, torch.nn.Linear)})
    for target in target_modules:
        pattern = re.compile(lora_target_regex([target], language_model))
        matched = [name for name in names if pattern.fullmatch(name)]
        if not matched:
            # A module right under the language model (`embed_tokens`, `norm`) is one of it, but outside its
            # layers, which are all the targets reach: "names no module of the language model" was false there.
            direct = [name for name in names if name.endswith(f"{language_model}.{target}")
                      and f".{language_model}." in f".{name}"]
            if direct:
                raise ConfigError(f"model.lora_target_modules: {target!r} ({direct[0]}) sits directly under the "
                                    "language model, outside its layers, and the targets reach only modules inside "
                                    f"its layers; name projections of its layers: {', '.join(projections)}")
            close = difflib.get_close_matches(target, projections, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"model.lora_target_modules: {target!r} names no module of the language model{hint}; "
                                f"its projections: {', '.join(projections)}")
        modules = dict(model.named_modules())
        wrong = [name for name in matched if not isinstance(modules[name], LORA_MODULE_TYPES)]
        if wrong:
            raise ConfigError(f"model.lora_target_modules: {target!r} matches {wrong[0]} "
                                f"({type(modules[wrong[0]]).__name__}), which LoRA cannot adapt; name its linear "
                                f"projections instead: {', '.join(projections)}")
        # A grouped convolution (Qwen3.5's depthwise Gated DeltaNet `conv1d`) is a type PEFT wraps, but PEFT cannot
        # merge its adapter (`trainer.merge_lora` failed at the run's end) and Qwen3.5's forward reads the wrapped
        # module's weight directly (the step failed in an AttributeError traceback, or trained an unused adapter).
        grouped = [name for name in matched if getattr(modules[name], "groups", 1) > 1]
        if grouped:
            raise ConfigError(f"model.lora_target_modules: {target!r} matches {grouped[0]}, a grouped convolution "
                                f"(groups={modules[grouped[0]].groups}), whose LoRA PEFT cannot merge into the "
                                f"model; name its linear projections instead: {', '.join(projections)}")


def check_lora_keeps_the_trained_parts(model: torch.nn.Module, parts: list[str]) -> None:
    """LoRA keeps the stage's other trained parts in whole modules beside the adapters (PEFT's `modules_to_save`);
    a trained parameter held by no such module would be frozen silently, its part still said to train."""
    from .lora import fully_trained_modules
    from .stages import parameter_group

    _, loose = fully_trained_modules(model, parts)
    if loose:
        groups = sorted({parameter_group(name) for name in loose})
        raise ConfigError(f"model.use_peft: LoRA keeps the trained parts {groups} in whole modules beside the "
                            f"adapters, but {', '.join(loose)} is a bare parameter of a module holding the language "
                            f"model too, so PEFT would freeze it; train without LoRA, or leave {', '.join(groups)} "
                            "out of trainable_parts")


def check_pool_size_under_zero3(model_args: Any, args: Any, config: Any) -> None:
    """Under ZeRO-3 `from_pretrained` builds the model partitioned and cannot load a saved prompt pool into one of
    another size (transformers' `ignore_mismatched_sizes` does not apply): the load fails with a size mismatch."""
    deepspeed_config = getattr(args, "hf_deepspeed_config", None)
    if deepspeed_config is None or not deepspeed_config.is_zero3():
        return
    folder = Path(model_args.name_or_path).expanduser()
    if not folder.is_dir() or source_kind(folder) != "croc":
        return
    saved = load_croc_config(folder).prompt_pool_size
    if saved != config.prompt_pool_size:
        raise ConfigError(f"croc_overrides prompt_pool_size={config.prompt_pool_size} differs from the "
                            f"{saved} saved in {model_args.name_or_path}: DeepSpeed ZeRO-3 cannot load a pool into "
                            f"one of another size; keep prompt_pool_size={saved}, or run this stage with ZeRO-2 "
                            "(trainer/configs/deepspeed/zero2.json) or without DeepSpeed")


# A special token's spelling in the templates: ChatML's `<|im_start|>`, Llama 3's `<|begin_of_text|>`, GLM's `<|user|>`.
_MARKER = re.compile(r"<\|[^<>|\s]+\|>")


def check_template_markers(processor: Any, template: str) -> None:
    """Every special token `template` writes is one token of the model's tokenizer. One the tokenizer lacks is
    tokenised as plain text, silently: SmolVLM-Instruct / -Base / -500M are idefics3 folders, and the idefics3 template
    (the family's default) opens each row with Llama 3's `<|begin_of_text|>`, which SmolVLM's tokenizer splits into
    pieces of text that the checkpoint never saw, in training and in the chat template saved with the model."""
    tokenizer = processor.tokenizer
    chosen = get_template(template)
    texts = [getattr(chosen, field.name) for field in dataclasses.fields(chosen)]
    for marker in sorted({marker for text in texts if isinstance(text, str) for marker in _MARKER.findall(text)}):
        pieces = len(tokenizer.encode(marker, add_special_tokens=False))
        if pieces != 1:
            hint = " (SmolVLM-Instruct / -Base / -500M: template: smolvlm)" if template == "idefics3" else ""
            raise ConfigError(f"the {template} template writes {marker}, which the model's tokenizer does not have "
                              f"(it would train on it as {pieces} tokens of text): set template to the model's own "
                              f"chat format{hint}")


def shortest_trainable_length(processor: Any, template: str) -> tuple[int, int] | None:
    """(image tokens, prompt tokens) of the shortest sample with an image that can train under `template`: an empty
    question and one answer token, through the training dataset itself (`trainer.data.CrocSupervisedDataset`), so
    its BOS, template, tokenisation and image-token expansion count as in training. Image tokens are the processor's
    per-image count (for AnyRes processors: the base view, a lower bound of every image's count)."""
    from data_recipes import DataError

    from .data import CrocSupervisedDataset

    row = {"id": "shortest", "image": Image.new("RGB", (32, 32), (128, 128, 128)),
           "conversations": [{"from": "human", "value": IMAGE_TOKEN}, {"from": "gpt", "value": "x"}]}
    try:
        sample = CrocSupervisedDataset([row], processor, template=template, model_max_length=2**31)[0]
    except DataError:  # the template supervises nothing: the data checks say so
        return None
    except ValueError as error:  # a processor setting training cannot take (Gemma 3's pan-and-scan, no EOS token)
        raise ConfigError(f"the model's processor cannot train: {' '.join(str(error).split())}") from None
    if sample is None:
        return None
    first_answer_token = int((sample["labels"] != IGNORE_INDEX).nonzero()[0])
    image_tokens_here = int((sample["input_ids"] == int(processor.image_token_id)).sum())
    return int(processor.num_image_tokens), first_answer_token - image_tokens_here


def check_model_max_length(model_args: Any, args: Any, config: Any) -> None:
    """`model_max_length` fits the image tokens, the template's prompt and one answer token, or no sample with an
    image can train: the dataset drops every such row, and the run stops at its first batch."""
    folder = Path(model_args.name_or_path).expanduser()
    if not folder.is_dir():
        return
    from .model_loading import model_folder_errors

    with model_folder_errors(model_args):  # processor files that do not load: one line naming the option
        counts = _shortest_sample_counts(str(folder.resolve()), args.template, _processor_files(folder))
    if counts is None:
        return
    image_tokens, prompt_tokens = counts
    shortest = image_tokens + prompt_tokens + 1
    if args.model_max_length < shortest:
        raise ConfigError(f"model_max_length={args.model_max_length} cannot hold a sample with an image: "
                            f"{image_tokens} image tokens + {prompt_tokens} tokens of the {args.template} template's "
                            f"prompt + 1 answer token = {shortest}; raise model_max_length to at least {shortest}")


def _processor_files(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, size, modification time) of the files a processor is read from: what `_shortest_sample_counts`
    depends on besides the template."""
    return tuple((path.name, path.stat().st_size, path.stat().st_mtime_ns) for path in sorted(folder.iterdir())
                 if path.suffix in (".json", ".model", ".txt", ".jinja"))


@functools.lru_cache(maxsize=16)
def _shortest_sample_counts(folder: str, template: str, files: tuple) -> tuple[int, int] | None:
    """`shortest_trainable_length` with the model folder's processor (its tokenizer and image-processor settings;
    no weights). Loading a LLaVA tokenizer takes about half a second, so the counts are kept per folder, template and
    `files` (the folder's processor files, which key the cache only): a process that resolves several runs of one
    model (the tests, a sweep) loads it once."""
    from modeling_croc.convert.from_llava import llava_processor

    path = Path(folder)
    processor = load_processor(path) if source_kind(path) == "croc" else llava_processor(path, read_croc_config(path))
    if processor is None:  # a weights-only folder: the load reports it
        return None
    check_template_markers(processor, template)
    return shortest_trainable_length(processor, template)


def check_finite_start(model: torch.nn.Module, source: str, args: Any) -> None:
    """Refuse to train from weights holding NaN or infinite values, right after the load and before any step: found
    only at the final save, the run stopped there with nothing to resume from, and its rerun trained to the same end.
    One pass over the parameters (each process its own, or its ZeRO-3 partition, as the final save's check), and one
    collective agreeing on the first parameter in model order, so every process names the same one."""
    from .run_control import first_nonfinite_parameter

    names = [name for name, _ in model.named_parameters()]
    bad = first_nonfinite_parameter(model)
    first = names.index(bad) if bad is not None else len(names)
    if args.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        agreed = torch.tensor([first], dtype=torch.long, device=args.device)
        torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MIN)
        first = int(agreed[0])
    if first < len(names):
        raise ConfigError(f"the model source {source} holds NaN or infinite values (first: {names[first]}); training "
                          "cannot start from it: use a model folder with finite weights")
