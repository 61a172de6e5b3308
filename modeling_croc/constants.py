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

# The largest intermediate image (width x height, or crops x width x height for a stack of crops) any preprocessing
# step may allocate: 2**28 pixels, ~0.8 GB as 8-bit RGB (3.2 GB once an image processor turns it into float32). A
# 10000 x 2000 panorama padded to a square (1e8 pixels) still fits; a 1 x 40000 banner padded to a square (1.6e9)
# does not. See `modeling_croc.images.preprocessing_footprint`.
MAX_PREPROCESS_PIXELS = 2**28

# The largest long side / short side accepted: Qwen2-VL's image processor refuses more than 200 ("absolute aspect
# ratio must be smaller than 200", `smart_resize` in transformers/models/qwen2_vl/image_processing_qwen2_vl.py).
# Beyond it an image is a strip or a banner whose content survives no square vision tower, and the square and pad
# aspect ratios blow it up (a shortest-edge resize to 336 px makes 1 x 40000 into 336 x 13,440,000).
MAX_ASPECT_RATIO = 200.0

# How much of an image file a check reads (`data_recipes.validation.check_image_file`): "exists" (stat only: the
# file is there and not empty), "header" (width and height from the header, checked against the size limits) or
# "decode" (the whole image decoded and converted as training reads it, limits included).
IMAGE_CHECK_MODES: tuple[str, ...] = ("exists", "header", "decode")

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
# The names of half precision a config may give (the short ones are refused later, as no `MODEL_DTYPES` name).
HALF_DTYPES: tuple[str, ...] = ("bfloat16", "float16", "bf16", "fp16")

__all__ = [
    "AUTO_MODEL_CLASSES",
    "CROC_ONLY_PATTERNS",
    "CROC_ONLY_PREFIXES",
    "IGNORE_INDEX",
    "MODEL_DTYPES",
    "HALF_DTYPES",
    "IMAGE_CHECK_MODES",
    "IMAGE_TOKEN",
    "MAX_ASPECT_RATIO",
    "MAX_IMAGE_PIXELS",
    "MAX_PREPROCESS_PIXELS",
    "PAD_TOKEN",
    "PROMPT_POOL_MODULE",
    "PROMPT_POOL_PREFIX",
    "VTR_HEAD_MODULE",
    "VTR_HEAD_PREFIX",
]
