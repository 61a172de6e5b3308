"""Readers of other checkpoint layouts (LLaVA-1.5 / Croc fork, ViCToR's LLaVA-NeXT fork, transformers llava /
llava_onevision folders, separate tower + LM folders) (into Croc's config, state dict and processor), the writers that turn them
into Croc folders, and the export to a plain llava folder. Building a model from any source is
`modeling_croc.loading.load_croc`."""

from .from_llava import convert_llava_folder, croc_config_from_llava, llava_processor
from .from_original import convert_original_checkpoint, read_original_checkpoint, rename_original_state_dict
from .from_parts import build_from_parts, parts_processor, read_parts
from .from_victor import read_victor_checkpoint, rename_victor_state_dict
from .to_llava import croc_config_to_llava, croc_to_llava, export_llava_folder

__all__ = [
    "build_from_parts",
    "parts_processor",
    "convert_llava_folder",
    "convert_original_checkpoint",
    "croc_config_from_llava",
    "croc_config_to_llava",
    "croc_to_llava",
    "export_llava_folder",
    "llava_processor",
    "read_original_checkpoint",
    "read_parts",
    "read_victor_checkpoint",
    "rename_original_state_dict",
    "rename_victor_state_dict",
]
