"""Loaders from other checkpoint layouts into Croc, and the export to a plain llava folder."""

from .from_llava import convert_llava_folder, croc_config_from_llava
from .from_original import convert_original_checkpoint, rename_original_state_dict
from .from_parts import build_from_parts
from .to_llava import croc_config_to_llava, croc_to_llava, export_llava_folder

__all__ = [
    "build_from_parts",
    "convert_llava_folder",
    "convert_original_checkpoint",
    "croc_config_from_llava",
    "croc_config_to_llava",
    "croc_to_llava",
    "export_llava_folder",
    "rename_original_state_dict",
]
