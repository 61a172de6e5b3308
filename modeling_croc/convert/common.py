"""Pieces shared by the checkpoint converters: reading weight files, LLaVA's extra tokens, building a processor,
and materialising a Croc model from a state dict without a random initialisation of the full model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import CLIPImageProcessorPil, LlavaImageProcessorPil, PreTrainedTokenizerBase

from ..configuration_croc import CrocConfig
from ..modeling_croc import CrocForConditionalGeneration
from ..processing_croc import CrocProcessor

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"


def read_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder: `model.safetensors`, sharded safetensors, or `pytorch_model*.bin`."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors or pytorch_model*.bin weights in {folder}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            state.update(load_file(file))
        else:
            state.update(torch.load(file, map_location="cpu", weights_only=True))
    return state


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def add_llava_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """Append `<image>` and `<pad>` as LLaVA-1.5's transformers conversions do (ids 32000 and 32001 on Vicuna).
    Returns `(image_token_id, pad_token_id)`."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.unk_token:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), tokenizer.pad_token_id


def grow_vocabulary(weight: torch.Tensor, new_rows: int) -> torch.Tensor:
    """Append rows equal to the mean of the existing ones (embedding or LM head): the new tokens start as an
    average token, so the logits of the old vocabulary are unchanged and the new logits are unremarkable."""
    if new_rows <= 0:
        return weight
    mean = weight.float().mean(dim=0, keepdim=True).to(weight.dtype)
    return torch.cat([weight, mean.expand(new_rows, -1)], dim=0)


def padded_vocab_size(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple if multiple > 1 else size


def build_processor(
    tokenizer: PreTrainedTokenizerBase,
    vision_folder: str | Path | None,
    vision_config,
    image_aspect_ratio: str = "pad",
) -> CrocProcessor:
    """A `CrocProcessor` with CLIP preprocessing (PIL backend); `image_aspect_ratio="pad"` pads to a square with
    the mean colour first, as LLaVA-1.5 does after stage 1."""
    kwargs = {}
    if vision_folder is not None and (Path(vision_folder) / "preprocessor_config.json").exists():
        kwargs = read_json(Path(vision_folder) / "preprocessor_config.json")
        for key in ("image_processor_type", "processor_class", "feature_extractor_type"):
            kwargs.pop(key, None)
    size = vision_config.image_size
    kwargs.setdefault("size", {"shortest_edge": size})
    kwargs.setdefault("crop_size", {"height": size, "width": size})
    if image_aspect_ratio == "pad":
        image_processor = LlavaImageProcessorPil(**kwargs, do_pad=True)
    else:
        image_processor = CLIPImageProcessorPil(**kwargs)
    return CrocProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


def materialize_croc(config: CrocConfig, state: dict[str, torch.Tensor]) -> CrocForConditionalGeneration:
    """A Croc model holding `state` (in-memory parameter names), through `from_pretrained`'s own loading path: no
    random copy of the full model is built, and a pool or VTR head absent from `state` is initialised the way
    `from_pretrained` initialises missing weights. Weights with no place in the model, or other missing ones,
    raise."""
    model, info = CrocForConditionalGeneration.from_pretrained(
        None, config=config, state_dict=state, output_loading_info=True
    )
    if info["unexpected_keys"] or info["mismatched_keys"]:
        raise ValueError(
            f"weights with no place in a Croc model: {sorted(info['unexpected_keys'])[:10]} "
            f"{sorted(info['mismatched_keys'])[:10]}"
        )
    missing = sorted(set(model.state_dict()) - set(state))
    unexplained = [name for name in missing if not name.startswith(("model.prompt_pool.", "vtr_head."))]
    if unexplained:
        raise ValueError(f"weights missing for: {unexplained[:10]}")
    if missing:
        logger.info("initialised parameters absent from the source: %s", missing[:5])
    return model.eval()
