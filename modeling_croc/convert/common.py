"""Pieces shared by the checkpoint readers: weight files, vision-tower folders (CLIP, SigLIP, fixed-resolution SigLIP2),
LLaVA's extra tokens, the processor."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
    PreTrainedConfig,
    PreTrainedTokenizerBase,
    SiglipImageProcessorPil,
    SiglipVisionModel,
)

from ..constants import IMAGE_TOKEN, PAD_TOKEN
from ..model_folders import ModelFolderError
from ..processing_croc import CrocProcessor, with_image_aspect_ratio


def read_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder: `model.safetensors`, sharded safetensors, or `pytorch_model*.bin`."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors or pytorch_model*.bin weights in {folder}")
    # A sharded checkpoint's index names every shard: one missing (an interrupted download) is named here, instead
    # of surfacing later as a list of missing weights. Only the index of the format read: a Hub snapshot of the
    # safetensors keeps the .bin index without the .bin files.
    for index in folder.glob(("*.safetensors" if files[0].suffix == ".safetensors" else "*.bin") + ".index.json"):
        shards = set(read_json(index).get("weight_map", {}).values())
        absent = sorted(shard for shard in shards if not (folder / shard).is_file())
        if absent:
            raise FileNotFoundError(f"{index} names {len(absent)} shard(s) not in the folder: {', '.join(absent[:4])}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            state.update(load_file(file))
        else:
            state.update(torch.load(file, map_location="cpu", weights_only=True))
    return state


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


# Keys of a transformers-4.x config.json (what the released forks were saved with) that transformers 5 folds into
# `rope_parameters`: not dataclass fields any more, still accepted (and converted) by the config constructors.
LEGACY_ROPE_KEYS = ("rope_theta", "rope_scaling")


def text_config_fields(original: dict, config_class: type) -> dict:
    """The entries of a fork's saved config that `config_class` (the LM's transformers 5 config) takes, the legacy
    RoPE keys included: dropping `rope_theta` would silently run Qwen2.5's 1e6 (or Llama 3's 5e5) as 10000."""
    fields = config_class.__dataclass_fields__
    return {k: v for k, v in original.items() if (k in fields or k in LEGACY_ROPE_KEYS) and k != "model_type"}


# Vision-tower model_type -> the class that reads its folder, whether it prepends a class token, its image processor.
VISION_TOWERS: dict[str, tuple[type, bool, type]] = {
    "clip_vision_model": (CLIPVisionModel, True, CLIPImageProcessorPil),
    # SigLIP2 at a fixed resolution (google/siglip2-*-patchP-RES) is saved as the SigLIP architecture too.
    "siglip_vision_model": (SiglipVisionModel, False, SiglipImageProcessorPil),
}


def vision_tower_config(folder: str | Path) -> PreTrainedConfig:
    """The vision config of a tower folder: a full CLIP / SigLIP model (its `vision_config`) or a vision-only save."""
    config = AutoConfig.from_pretrained(folder)
    config = getattr(config, "vision_config", None) or config
    if config.model_type == "siglip2_vision_model":
        raise ValueError(
            f"{folder} is a NaFlex SigLIP2 tower (siglip2_vision_model): it takes patch sequences with their spatial "
            "shapes, which LLaVA's image path does not pass. Use a fixed-resolution SigLIP2 checkpoint "
            "(google/siglip2-*-patchP-RES, saved as model_type siglip)."
        )
    if config.model_type not in VISION_TOWERS:
        raise ValueError(f"{folder}: vision tower {config.model_type!r} is not one of {sorted(VISION_TOWERS)}")
    return config


def tower_has_cls_token(vision_config: PreTrainedConfig) -> bool:
    """Whether the tower prepends a class token (CLIP) or outputs patch tokens only (SigLIP, SigLIP2)."""
    return VISION_TOWERS[vision_config.model_type][1]


def read_vision_tower(folder: str | Path) -> tuple[PreTrainedConfig, dict[str, torch.Tensor]]:
    """A tower folder's vision config and its vision weights under Croc's names. The tower class's
    `from_pretrained` reads both layouts (a full CLIPModel / SiglipModel such as openai/clip-vit-large-patch14-336 or
    google/siglip2-so400m-patch14-384, or a vision-only save)."""
    model_class = VISION_TOWERS[vision_tower_config(folder).model_type][0]
    # `from_pretrained` alone fills a weight the folder lacks with random values (a warning in the log): a tower
    # whose config.json its weights do not match is refused instead (the text half of a full CLIPModel is expected
    # to have no place).
    vision, info = model_class.from_pretrained(folder, output_loading_info=True, ignore_mismatched_sizes=True)
    gaps = [f"{len(names)} {what}: {sorted(str(name[0] if isinstance(name, tuple) else name) for name in names)[:8]}"
            for names, what in ((info["missing_keys"], "missing"),
                                (info["mismatched_keys"], "of another shape than its config.json gives them")) if names]
    if gaps:
        raise ModelFolderError(folder, f"vision tower weights {'; '.join(gaps)}")
    return vision.config, {f"model.vision_tower.{name}": tensor for name, tensor in vision.state_dict().items()}


def clip_vision_config(folder: str | Path) -> CLIPVisionConfig:
    """`vision_tower_config` for a folder that must hold CLIP (the released LLaVA-1.5 / Croc checkpoints' tower)."""
    config = vision_tower_config(folder)
    if config.model_type != "clip_vision_model":
        raise ValueError(f"{folder} holds a {config.model_type} tower; LLaVA-1.5 / Croc checkpoints use CLIP")
    return config


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


# Croc's in-memory names of the two vocabulary-sized matrices.
VOCABULARY_MATRICES = ("model.language_model.embed_tokens.weight", "lm_head.weight")


def fit_vocabulary(state: dict[str, torch.Tensor], tokenizer_size: int, multiple: int) -> int:
    """Grow the embedding and LM head of `state` (Croc names) with mean rows so that the tokenizer's
    `tokenizer_size` tokens (grown by `<image>` / `<pad>`), padded to a multiple of `multiple`, have a row; never
    shrink them (Qwen's embeddings hold spare rows already). Returns the vocabulary size."""
    if VOCABULARY_MATRICES[0] not in state:
        # A checkpoint whose embedding is stored under another name: refused in one line, not a KeyError traceback.
        raise ValueError(f"the checkpoint has no token embedding ({VOCABULARY_MATRICES[0]} under Croc's names): are "
                         "its weight names those of the layout it is read as?")
    rows = state[VOCABULARY_MATRICES[0]].shape[0]
    vocab_size = max(rows, padded_vocab_size(tokenizer_size, multiple))
    for name in VOCABULARY_MATRICES:
        if name in state:
            state[name] = grow_vocabulary(state[name], vocab_size - state[name].shape[0])
    return vocab_size


# The renames every LLaVA-fork checkpoint shares (the original LLaVA / Croc repositories and ViCToR's LLaVA-NeXT fork):
# projector, vision tower (transformers 5 keeps its weights without the files' `vision_model.` level), language model.
LLAVA_FORK_RENAMES: list[tuple[str, str]] = [
    (r"^model\.mm_projector\.0\.", "model.multi_modal_projector.linear_1."),
    (r"^model\.mm_projector\.2\.", "model.multi_modal_projector.linear_2."),
    (r"^model\.vision_tower\.vision_tower\.vision_model\.", "model.vision_tower."),
    (r"^model\.(embed_tokens|layers|norm)\.", r"model.language_model.\1."),
]


def renamed(name: str, renames: list[tuple[str, str]]) -> str:
    """`name` under the first `(regex, target)` of `renames` that matches it (unchanged when none does)."""
    for pattern, target in renames:
        if re.search(pattern, name):
            return re.sub(pattern, target, name)
    return name


def build_processor(
    tokenizer: PreTrainedTokenizerBase,
    vision_folder: str | Path | None,
    vision_config,
    image_aspect_ratio: str = "pad",
    vision_feature_select_strategy: str | None = None,
    chat_template: str | None = None,
) -> CrocProcessor:
    """A `CrocProcessor` with the tower's own preprocessing (PIL backend; the folder's settings when it has them:
    CLIP resizes the short side and centre-crops, SigLIP resizes to the square) set up for `image_aspect_ratio` (see
    `with_image_aspect_ratio`). `<image>` expands to the tower's patch count, plus its class token under the `full`
    strategy."""
    _, has_cls, image_processor_class = VISION_TOWERS[vision_config.model_type]
    kwargs = {}
    if vision_folder is not None and (Path(vision_folder) / "preprocessor_config.json").exists():
        kwargs = read_json(Path(vision_folder) / "preprocessor_config.json")
        for key in ("image_processor_type", "processor_class", "feature_extractor_type"):
            kwargs.pop(key, None)
    size = vision_config.image_size
    if has_cls:
        kwargs.setdefault("size", {"shortest_edge": size})
        kwargs.setdefault("crop_size", {"height": size, "width": size})
    else:
        kwargs.setdefault("size", {"height": size, "width": size})
    strategy = vision_feature_select_strategy or ("default" if has_cls else "full")
    processor = CrocProcessor(
        image_processor=image_processor_class(**kwargs),
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=1 if has_cls else 0,
        chat_template=chat_template,
    )
    return with_image_aspect_ratio(processor, image_aspect_ratio)


def conversion_card(source: str | Path, name: str, what: str):
    """The card of a folder converted or exported from `source` (`what` it is: the command that made it): its
    `name` as the title, the source by folder name or Hub id, and what the source's card says (its licence, the Hub
    ids among its base models and datasets; a `source` named by Hub id is itself the base model), as a run started
    from `source` itself would inherit (`trainer.model_card.run_provenance`). Every conversion gets one, `license:
    unknown` where the source states none: a folder pushed to the Hub without a card says neither what it is nor
    where it came from. `name` is OUT's: the command writes a hidden staging folder, whose name the title had been.
    No local path goes into it."""
    from huggingface_hub import ModelCard, ModelCardData, hf_hub_download

    from ..provenance import Provenance, is_hub_id

    hub_id = str(source) if is_hub_id(str(source)) else None
    folder = Path(source).expanduser()
    if hub_id:
        try:  # the cached card of the Hub model (offline: the cache only); none to be had states nothing
            folder = Path(hf_hub_download(hub_id, "README.md")).parent
        except Exception:  # noqa: BLE001 (no card on the Hub, not cached, no network: the id is still the base model)
            pass
    provenance = Provenance.of_model_folder(folder, hub_id=hub_id)
    # `license_metadata` names `croc_licenses` itself where there are several: passing it twice was a TypeError.
    data = ModelCardData(**{"croc_licenses": provenance.licenses or None, **provenance.license_metadata()},
                         library_name="transformers", pipeline_tag="image-text-to-text",
                         base_model=provenance.base_models or None, datasets=provenance.datasets or None)
    # A card of several licences links `README.md#licences` (`license_metadata`): the section it names is this one.
    body = (f"# {name}\n\n`{hub_id or folder.resolve().name}` {what}.\n\n## Licences\n\nLicences of the source, each of "
            "which applies: " + (", ".join(f"`{licence}`" for licence in provenance.licenses) or "none stated in its card")
            + ".\n")
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
