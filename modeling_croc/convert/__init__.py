"""Readers of other checkpoint layouts (LLaVA-1.5 / Croc fork, ViCToR's LLaVA-NeXT fork, transformers llava /
llava_onevision folders, separate tower + LM folders) into Croc's config, state dict and processor, and the export to
a plain llava folder. Building a model from any source is `modeling_croc.loading.load_croc`, which uses these
readers; writing a source as a Croc folder is `modeling_croc.conversion` (this package imports neither: the imports
go one way, conversion -> loading -> convert)."""

from .from_llava import croc_config_from_llava, llava_processor
from .from_original import read_original_checkpoint, rename_original_state_dict
from .from_parts import parts_processor, read_parts, stage0_card
from .from_victor import read_victor_checkpoint, rename_victor_state_dict
from .to_llava import croc_config_to_llava, croc_to_llava, export_llava_folder

__all__ = [
    "parts_processor",
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
    "stage0_card",
]
