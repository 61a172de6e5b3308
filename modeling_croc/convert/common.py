"""Pieces shared by the checkpoint readers: weight files, CLIP vision folders, LLaVA's extra tokens, the processor."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel, PreTrainedTokenizerBase

from ..constants import IMAGE_TOKEN, PAD_TOKEN
from ..processing_croc import CrocProcessor, with_image_aspect_ratio


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


def clip_vision_config(folder: str | Path) -> CLIPVisionConfig:
    """A CLIP folder's vision config, from its config.json only (a full `CLIPModel` config or a vision-only one)."""
    fields = read_json(Path(folder) / "config.json")
    fields = fields.get("vision_config", fields)
    fields["model_type"] = "clip_vision_model"
    return CLIPVisionConfig(**{k: v for k, v in fields.items() if k in CLIPVisionConfig.__dataclass_fields__})


def read_clip_vision(folder: str | Path) -> tuple[CLIPVisionConfig, dict[str, torch.Tensor]]:
    """A CLIP folder's vision config and its vision weights under Croc's names. `CLIPVisionModel.from_pretrained`
    reads every CLIP layout (a full `CLIPModel` such as openai/clip-vit-large-patch14-336, or a vision-only save)."""
    config = clip_vision_config(folder)
    vision = CLIPVisionModel.from_pretrained(folder)
    return config, {f"model.vision_tower.{name}": tensor for name, tensor in vision.state_dict().items()}


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
    """A `CrocProcessor` with CLIP preprocessing (PIL backend, the CLIP folder's settings when it has them) set up
    for `image_aspect_ratio` (see `with_image_aspect_ratio`)."""
    kwargs = {}
    if vision_folder is not None and (Path(vision_folder) / "preprocessor_config.json").exists():
        kwargs = read_json(Path(vision_folder) / "preprocessor_config.json")
        for key in ("image_processor_type", "processor_class", "feature_extractor_type"):
            kwargs.pop(key, None)
    size = vision_config.image_size
    kwargs.setdefault("size", {"shortest_edge": size})
    kwargs.setdefault("crop_size", {"height": size, "width": size})
    processor = CrocProcessor(
        image_processor=CLIPImageProcessorPil(**kwargs),
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return with_image_aspect_ratio(processor, image_aspect_ratio)
