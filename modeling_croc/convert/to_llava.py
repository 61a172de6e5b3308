"""Export a Croc checkpoint as the plain transformers model it extends (no pool, no VTR head): a `llava` folder for
`CrocForConditionalGeneration`, a `llava_onevision` folder for `CrocOnevisionForConditionalGeneration`, a
`qwen2_5_vl` folder for `CrocQwen2_5_VLForConditionalGeneration` (`families.FAMILIES`).

lmms-eval's `llava_hf` / `llava_onevision`, vLLM and other consumers then load it with the plain class, which gives
the same logits as Croc's inference path.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from transformers import (
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    PreTrainedConfig,
    PreTrainedModel,
    ProcessorMixin,
)

from ..configuration_croc import CROC_FIELD_NAMES, CrocConfig
from ..configuration_croc_onevision import CrocOnevisionConfig
from ..constants import CROC_ONLY_PREFIXES
from ..families import FAMILIES
from ..model_folders import ModelFolderError, checked_from_pretrained, folder_processor, weight_gaps
from ..provenance import write_without_local_paths
from .common import conversion_card

# Croc config class -> the plain config and model classes it extends (`families.FAMILIES`).
PLAIN_COUNTERPARTS: dict[type, tuple[type[PreTrainedConfig], type[PreTrainedModel]]] = {
    family.config: (family.plain_config, family.plain_model) for family in FAMILIES}
# Entries of a saved Croc config that describe the Croc class rather than the architecture.
_CLASS_ENTRIES = ("model_type", "auto_map", "architectures")


def croc_config_to_llava(config: CrocConfig | CrocOnevisionConfig) -> LlavaConfig | LlavaOnevisionConfig:
    """The plain config describing the same architecture (every field but the Croc ones). Refuses configs the plain
    model cannot reproduce."""
    if config.normalize_visual_tokens:
        raise ValueError(
            "This Croc model L2-normalises its visual tokens (normalize_visual_tokens=True: the `official` and "
            "`victor` presets, as the released Croc and ViCToR code); the plain llava / llava_onevision model has no "
            "such step, so an exported folder would give different logits. Export is only possible for models with "
            "normalize_visual_tokens=False."
        )
    plain_config_class, _ = PLAIN_COUNTERPARTS[type(config)]
    data = {name: value for name, value in config.to_dict().items()
            if name not in CROC_FIELD_NAMES and name not in _CLASS_ENTRIES}
    return plain_config_class.from_dict(data)


def croc_to_llava(model) -> LlavaForConditionalGeneration | LlavaOnevisionForConditionalGeneration:
    """The plain model holding `model`'s weights (the Croc-only parameters are dropped)."""
    plain_config = croc_config_to_llava(model.config)
    plain_config._attn_implementation = model.config._attn_implementation
    # Each part keeps its own, set after the whole's (which reaches them all): PaliGemma 2's Gemma 2 text model has no
    # sdpa attention and loads eager beside an sdpa tower, and the plain model refused sdpa for it.
    for name in getattr(plain_config, "sub_configs", {}):
        part, own = getattr(plain_config, name, None), getattr(model.config, name, None)
        if part is not None and own is not None and getattr(own, "_attn_implementation", None):
            part._attn_implementation = own._attn_implementation
    _, plain_model_class = PLAIN_COUNTERPARTS[type(model.config)]
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(CROC_ONLY_PREFIXES)}
    # from_pretrained's own loading path: no random copy of the whole model is built first.
    plain, info = plain_model_class.from_pretrained(None, config=plain_config, state_dict=state, dtype=model.dtype,
                                                    output_loading_info=True)
    gaps = weight_gaps(plain, info)
    if gaps:
        raise ValueError(f"the plain model does not hold exactly the Croc model's weights: {'; '.join(gaps)}")
    # The generation defaults go along (a Hub folder's extra eos ids, sampling settings): built from the config
    # alone, the plain model would stop and sample otherwise than the Croc model it exports.
    if getattr(model, "generation_config", None) is not None:
        plain.generation_config = copy.deepcopy(model.generation_config)
    return plain.eval()


def export_llava_folder(croc_dir: str | Path, out_dir: str | Path, *, name: str | None = None,
                        command: str = "to-llava") -> Path:
    """Load a Croc folder and write the equivalent plain folder (weights, config, processor files, card) to
    `out_dir`. `name`: the folder's name for its card (default `out_dir`'s; the command writes a staging folder
    first); `command`: the subcommand the card names (`to-llava` or its alias `to-plain`, as run)."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, LlavaProcessor

    from ..processing_croc import CrocProcessor

    config = AutoConfig.from_pretrained(croc_dir)
    if type(config) not in PLAIN_COUNTERPARTS:
        raise ValueError(f"{croc_dir} is not a Croc folder (model_type {config.model_type!r}): nothing to export")
    croc_config_to_llava(config)  # refuses what cannot be exported before the weights are read
    # The processor first (one that is there but does not load is refused, not left out of the export), then the
    # weights, checked against config.json: a weight missing would be exported random as if trained, one of another
    # shape raises many lines, one with no place (a config edited to fewer layers) would be dropped unsaid.
    # AttributeError: a processor_config.json of another shape (a list) fails inside transformers' reader.
    processor = folder_processor(croc_dir, AutoProcessor.from_pretrained,
                                 (OSError, ValueError, TypeError, AttributeError))
    if isinstance(processor, CrocProcessor):
        check_patch_size(croc_dir, processor.patch_size, config)
    model = checked_from_pretrained(AutoModelForImageTextToText, croc_dir, may_lack=CROC_ONLY_PREFIXES)
    plain = croc_to_llava(model)
    out_dir = Path(out_dir)
    plain.save_pretrained(out_dir)
    if isinstance(processor, CrocProcessor):
        LlavaProcessor(
            image_processor=processor.image_processor,
            tokenizer=processor.tokenizer,
            patch_size=processor.patch_size,
            vision_feature_select_strategy=processor.vision_feature_select_strategy,
            chat_template=processor.chat_template,
            num_additional_image_tokens=processor.num_additional_image_tokens,
        ).save_pretrained(out_dir)
    elif processor is not None:
        processor.save_pretrained(out_dir)
        name_parent_processor(out_dir, type(processor))
    write_without_local_paths(out_dir)  # an export is a folder to share: the parts' folders as their names
    conversion_card(croc_dir, name or out_dir.resolve().name,
                    f"exported to its plain parent layout, `{plain.config.model_type}` "
                    f"(`python -m modeling_croc.convert {command}`)").save(out_dir / "README.md")
    return out_dir


def check_patch_size(folder: str | Path, patch_size, config) -> None:
    """Refuse a llava processor whose `<image>` expansion cannot match the tower: the processor counts an image's
    tokens as (height // patch_size) * (width // patch_size), so a patch_size that is not the tower's (0, None, a
    hand edit) exported a folder that fails on every image, at inference."""
    tower = getattr(getattr(config, "vision_config", None), "patch_size", None)
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1 or (
            tower is not None and patch_size != tower):
        raise ModelFolderError(folder, f"its processor_config.json gives patch_size {patch_size!r}, but the vision "
                                       f"tower's patches are {tower} pixels: every image's <image> tokens would be "
                                       "counted wrong; set it to the tower's patch_size")


def name_parent_processor(folder: Path, processor_class: type) -> None:
    """A processor of this package that only leaves out the parent's video part (`CrocOnevisionProcessor`,
    `CrocQwen2_5_VLProcessor`) saves the parent's files: the plain folder names the parent class, which loads them
    natively, instead of this package's class as remote code. (The parent class itself cannot be built here when
    its video processor needs torchvision.)"""
    if not processor_class.__module__.startswith(__package__.split(".")[0]):
        return
    for config_file in folder.glob("*.json"):
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            continue
        cleaned = _without_croc_auto_map(config)
        if cleaned.get("processor_class") == processor_class.__name__:  # processor and tokenizer configs
            cleaned["processor_class"] = processor_class.__mro__[1].__name__
        if cleaned != config:
            config_file.write_text(json.dumps(cleaned, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for copied in folder.glob("processing_croc*.py"):
        copied.unlink()
    _declare_left_out_parts(folder, processor_class)


def _declare_left_out_parts(folder: Path, processor_class: type) -> None:
    """Give each part the parent processor has and this package's leaves out (a video processor, Gemma 4's audio
    feature extractor) an empty entry in `processor_config.json`. Without one, transformers looks for its own config
    file (`video_preprocessor_config.json`), which the folder lacks, and the plain folder does not load even where
    torchvision is installed; with one, it builds the part with the defaults of the folder's model type (Croc trains
    neither videos nor audio), or says in one line that the part needs torchvision."""
    processor_config = folder / "processor_config.json"
    parent = processor_class.__mro__[1]
    if not processor_config.is_file() or not issubclass(parent, ProcessorMixin):
        return
    left_out = set(parent.get_attributes()) - set(processor_class.get_attributes())
    config = json.loads(processor_config.read_text(encoding="utf-8"))
    missing = sorted(part for part in left_out if "tokenizer" not in part and part not in config)
    if missing:
        config.update({part: {} for part in missing})
        processor_config.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _without_croc_auto_map(entry):
    """`entry` (a saved JSON value) without the `auto_map` entries that point to this package's processor code."""
    if isinstance(entry, dict):
        return {key: _without_croc_auto_map(value) for key, value in entry.items()
                if not (key == "auto_map" and "processing_croc" in json.dumps(value))}
    if isinstance(entry, list):
        return [_without_croc_auto_map(value) for value in entry]
    return entry
