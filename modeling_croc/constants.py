"""Names and values shared by the model, the trainer, the converters and the recipes: each defined here once.

The Croc-only parameter prefixes are the parameters a plain Llava model does not have (the prompt pool, the
optional VTR head); loading, conversion, export, quantisation and the learning-rate groups all select them by these
prefixes. `tests/test_modeling_croc.py` checks them against the model class's state dict.
"""

# The image placeholder of prompts and LLaVA data files, and the padding token LLaVA-1.5 appends after it.
IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"

# Label of a position the loss ignores (transformers' and PyTorch's cross-entropy default).
IGNORE_INDEX = -100

# The largest image (width x height) any reader of this project decodes: PIL's own decompression-bomb warning level
# (2**28 / 3 pixels, ~0.25 GiB as RGB). A bigger image is refused with a reason from its header, before a single
# pixel is decoded, instead of PIL's warning (at this size) or DecompressionBombError (at twice it).
MAX_IMAGE_PIXELS = 89_478_485

# The Croc-only modules: `CrocModel.prompt_pool` and `CrocForConditionalGeneration.vtr_head`, and their
# parameter-name prefixes in `CrocForConditionalGeneration` (whose `CrocModel` sits under `model.`).
PROMPT_POOL_MODULE = "prompt_pool"
VTR_HEAD_MODULE = "vtr_head"
PROMPT_POOL_PREFIX = f"model.{PROMPT_POOL_MODULE}."
VTR_HEAD_PREFIX = f"{VTR_HEAD_MODULE}."
CROC_ONLY_PREFIXES: tuple[str, ...] = (PROMPT_POOL_PREFIX, VTR_HEAD_PREFIX)
# The same as patterns that also match inside `CrocModel` alone or under a wrapper's prefix (PEFT, DDP).
CROC_ONLY_PATTERNS: tuple[str, ...] = tuple(rf"(^|\.){module}\." for module in (PROMPT_POOL_MODULE, VTR_HEAD_MODULE))

# Every transformers Auto class Llava is registered with, and the Croc class it resolves to for a `croc` config
# (`LlavaModel` -> `CrocModel`, `LlavaForConditionalGeneration` -> `CrocForConditionalGeneration`). The package
# registers them on import and a saved folder's `auto_map` lists them, so `trust_remote_code` loads through each.
# `tests/test_transformers_contract.py` derives Llava's set from the installed transformers and checks this table
# against it. An Auto class the installed transformers lacks (AutoModelForMultimodalLM before 5.x) is skipped.
AUTO_MODEL_CLASSES: dict[str, str] = {
    "AutoModel": "CrocModel",
    "AutoModelForPreTraining": "CrocForConditionalGeneration",
    "AutoModelForImageTextToText": "CrocForConditionalGeneration",
    "AutoModelForMultimodalLM": "CrocForConditionalGeneration",
}

# Weight dtypes a model is loaded in, by the names `from_pretrained(dtype=...)` takes as they are.
MODEL_DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")

__all__ = [
    "AUTO_MODEL_CLASSES",
    "CROC_ONLY_PATTERNS",
    "CROC_ONLY_PREFIXES",
    "IGNORE_INDEX",
    "MODEL_DTYPES",
    "IMAGE_TOKEN",
    "MAX_IMAGE_PIXELS",
    "PAD_TOKEN",
    "PROMPT_POOL_MODULE",
    "PROMPT_POOL_PREFIX",
    "VTR_HEAD_MODULE",
    "VTR_HEAD_PREFIX",
]
