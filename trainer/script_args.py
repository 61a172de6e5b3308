"""The `model:` and `data:` sections of a training config (the rest of the YAML is `CrocTrainingArguments`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from modeling_croc.constants import IMAGE_CHECK_MODES, MAX_ASPECT_RATIO, MAX_PREPROCESS_PIXELS, MODEL_DTYPES
from modeling_croc.images import ImageLimits

from .argument_checks import check_attention_name, check_field_types

# How much of each image the rows are checked for before training (see DataArguments.image_check).
IMAGE_CHECKS: tuple[str, ...] = (*IMAGE_CHECK_MODES, "none")
# The Llama projections LoRA adapts; only those inside the language model are targeted (see `trainer.lora`).
DEFAULT_LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class ModelArguments:
    """Where the model comes from and how it is loaded.

    Exactly one source: `name_or_path` (a Croc folder from the previous stage, or a transformers `llava` folder),
    or `vision_tower` + `language_model` (stage 1 from separate CLIP and LLM checkpoints). A random model to start
    from is a saved folder too (`python -m croc_testing tiny-model FOLDER` writes the tiny one of the cpu_tiny
    configs).
    """

    name_or_path: str | None = field(
        default=None,
        metadata={"help": "Croc folder of the previous stage, or a transformers `llava` / `llava_onevision` folder / id."}
    )
    vision_tower: str | None = field(
        default=None,
        metadata={"help": "Vision-tower checkpoint for stage 1: CLIP (openai/clip-vit-large-patch14-336), SigLIP or "
                  "fixed-resolution SigLIP2 (google/siglip2-so400m-patch14-384)."}
    )
    language_model: str | None = field(
        default=None,
        metadata={"help": "Causal LM checkpoint for stage 1 (lmsys/vicuna-7b-v1.5, Qwen/Qwen2.5-7B-Instruct, ...)."}
    )
    dtype: str = field(
        default="float32",
        metadata={"help": "Weights dtype at load: float32, bfloat16 or float16 (bfloat16 with DeepSpeed, as LLaVA)."},
    )
    attn_implementation: str = field(
        default="sdpa",
        metadata={"help": "Attention backend of the language model and vision tower. Stage 1.5 with a bidirectional "
                  "span (presets paper, official) needs one that takes a custom mask (sdpa, eager, flex_attention) "
                  "or croc_split (no mask: the queries split into segments, each one dense kernel call: varlen "
                  "FlashAttention on CUDA, sdpa per segment elsewhere; packed samples never attend to each other, "
                  "so packing pays in every stage) and refuses flash_attention_2; with bidirectional_span none "
                  "(preset victor) any backend works. croc_split falls back to eager for soft-capped attention "
                  "(Gemma 2), with a warning."},
    )
    base_models: list[str] | None = field(
        default=None,
        metadata={"help": "Base model ids for the model card (default: the LLM + CLIP ids, or the previous stage's)."},
    )

    # ---- PEFT ----
    use_peft: bool = field(
        default=False, metadata={"help": "Train the language model with LoRA (stages 1.5 and 2) instead of fully."}
    )
    lora_r: int = field(default=128, metadata={"help": "LoRA rank (LLaVA-1.5's LoRA recipe: 128)."})
    lora_alpha: int = field(default=256, metadata={"help": "LoRA alpha (LLaVA-1.5: 256)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(DEFAULT_LORA_TARGETS),
        metadata={"help": "Projection names inside the language model that get LoRA adapters."},
    )
    load_in_4bit: bool = field(
        default=False, metadata={"help": "QLoRA: load the language model in 4-bit NF4 (needs a GPU + bitsandbytes)."}
    )

    def __post_init__(self) -> None:
        check_field_types(self, "model.")
        separate = [name for name in ("vision_tower", "language_model") if getattr(self, name)]
        if len(separate) == 1:
            missing = ({"vision_tower", "language_model"} - set(separate)).pop()
            raise ValueError(f"model.{separate[0]} is set without model.{missing}")
        sources = (["name_or_path"] if self.name_or_path else []) + (["vision_tower+language_model"] if separate else [])
        if len(sources) != 1:
            raise ValueError(
                "give exactly one model source: model.name_or_path (previous stage / llava folder) "
                "or model.vision_tower + model.language_model (stage 1); got " + (", ".join(sources) or "none")
            )
        if self.dtype not in MODEL_DTYPES:
            raise ValueError(f"model.dtype must be one of {MODEL_DTYPES}, got {self.dtype!r}")
        check_attention_name(self.attn_implementation)
        if self.load_in_4bit and not self.use_peft:
            raise ValueError("model.load_in_4bit (QLoRA) needs model.use_peft=true")
        self._check_lora()

    def _check_lora(self) -> None:
        """PEFT refuses a rank of 0 only once it wraps the loaded model, and takes a non-positive alpha or a dropout
        of 1 (which zeroes every adapter input) without a word. Which modules the names select is checked against
        the model's modules (`trainer.model_checks.check_lora_targets`)."""
        if self.lora_r < 1:
            raise ValueError(f"model.lora_r must be >= 1 (the adapters' rank), got {self.lora_r}")
        if not self.lora_alpha > 0:
            raise ValueError(f"model.lora_alpha must be > 0 (the adapters' scale is lora_alpha / lora_r), got "
                             f"{self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"model.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_target_modules or not all(self.lora_target_modules):
            raise ValueError(f"model.lora_target_modules must name the language model's projections to adapt, e.g. "
                             f"[q_proj, v_proj]; got {self.lora_target_modules}")


@dataclass
class DataArguments:
    """The training data."""

    path: str | None = field(
        default=None,
        metadata={"help": "A data_recipes build folder (datasets.save_to_disk output) or a LLaVA-format JSON/JSONL."},
    )
    image_root: str | None = field(
        default=None,
        metadata={"help": "Folder the rows' image paths are relative to. Default: the build's recorded image root, "
                  "or the JSON file's folder."},
    )
    max_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N rows (quick runs, tests)."}
    )
    image_check: str = field(
        default="exists",
        metadata={"help": "How much of each image is checked before the model loads, for every source: 'exists' (the "
                  "path stays under the image root, the file, or the embedded bytes, is there and not empty), "
                  "'header' (also its width and height, against max_image_aspect_ratio and the pixels the stage's "
                  "preprocessing would allocate), 'decode' (also every pixel, as the recipe builder does) or 'none'. "
                  "Whatever passes here and still cannot be read in training (the same limits apply there, from the "
                  "header, before decoding) is replaced by the next usable row and counted. A resume, which trains "
                  "the interrupted run's rows, only checks that each image is still there ('exists')."},
    )
    max_image_aspect_ratio: float = field(
        default=MAX_ASPECT_RATIO,
        metadata={"help": "Longest side / shortest side an image may have (Qwen2-VL's processor refuses more than "
                  "200): beyond it an image is rejected (extreme_aspect_ratio); the pad aspect ratio would turn a "
                  "1 x 40000 banner into a 40000 x 40000 square."},
    )
    max_image_preprocess_pixels: int = field(
        default=MAX_PREPROCESS_PIXELS,
        metadata={"help": "Largest image (width x height) any preprocessing step of the stage's image processor may "
                  "allocate (padding to square, resizing, AnyRes crops), computed from the header: beyond it an "
                  "image is rejected (image_too_large)."},
    )
    strict: bool = field(
        default=False,
        metadata={"help": "Stop on any bad row: rejected at the start, or an image that cannot be read in training."},
    )
    max_reject_fraction: float = field(
        default=0.01,
        metadata={"help": "The run stops once more than this share of the rows read (and more than one row) is "
                  "rejected at the start, or once the rate of rows replaced in training (an unreadable image) is "
                  "over it with 99.9% confidence (and more than one row). Every such row is counted, logged and "
                  "written to <output_dir>/rejects.jsonl either way."},
    )
    num_proc: int = field(default=1, metadata={"help": "Processes for the start-of-run image checks."})

    def __post_init__(self) -> None:
        # Types first: the range checks below compare, and `[1, 2] < 1` would say so in Python's words, naming no key.
        check_field_types(self, "data.")
        if self.image_check not in IMAGE_CHECKS:
            raise ValueError(f"data.image_check must be one of {IMAGE_CHECKS}, got {self.image_check!r}")
        if not self.max_image_aspect_ratio >= 1:  # `not >=` also refuses NaN
            raise ValueError(f"data.max_image_aspect_ratio must be >= 1 (long side / short side), got "
                             f"{self.max_image_aspect_ratio}")
        if self.max_image_preprocess_pixels < 1:
            raise ValueError(f"data.max_image_preprocess_pixels must be >= 1, got {self.max_image_preprocess_pixels}")
        if not 0.0 <= self.max_reject_fraction <= 1.0:
            raise ValueError(f"data.max_reject_fraction must be in [0, 1], got {self.max_reject_fraction}")
        if self.num_proc < 1:
            raise ValueError(f"data.num_proc must be >= 1, got {self.num_proc}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"data.max_samples must be >= 1, got {self.max_samples}")

    @property
    def image_limits(self) -> ImageLimits:
        """The limits every image of the run is held to (`modeling_croc.images.ImageLimits`)."""
        return ImageLimits(max_preprocess_pixels=int(self.max_image_preprocess_pixels),
                           max_aspect_ratio=float(self.max_image_aspect_ratio))
