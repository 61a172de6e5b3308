"""Loaders from other checkpoint layouts into Croc, and the export to a plain llava folder."""

from .to_llava import croc_config_to_llava, croc_to_llava, export_llava_folder

__all__ = ["croc_config_to_llava", "croc_to_llava", "export_llava_folder"]
