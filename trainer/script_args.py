"""The `model:` and `data:` sections of a training config (the rest of the YAML is `CrocTrainingArguments`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from modeling_croc.constants import MODEL_DTYPES

# How much of each image a LLaVA file's rows are checked for before training (see DataArguments.image_check).
IMAGE_CHECKS: tuple[str, ...] = ("decode", "exists", "none")
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
                  "and refuses flash_attention_2; with bidirectional_span none (preset victor) any backend works."},
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
        if self.load_in_4bit and not self.use_peft:
            raise ValueError("model.load_in_4bit (QLoRA) needs model.use_peft=true")


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
        metadata={"help": "How a LLaVA JSON/JSONL file's images are checked before the model loads: 'decode' (every "
                  "image decoded in full, as the recipe builder does), 'exists' (path under the image root, file "
                  "present and not empty; an image that then fails to decode is replaced in training) or 'none'. "
                  "A build folder was checked when it was built."},
    )
    strict: bool = field(
        default=False,
        metadata={"help": "Stop on any bad row: rejected at the start, or an image that cannot be read in training."},
    )
    max_reject_fraction: float = field(
        default=0.01,
        metadata={"help": "The run stops once more than this share of the rows seen (and more than one row) was "
                  "rejected at the start or had an unreadable image in training. Every such row is counted, "
                  "logged and written to <output_dir>/rejects.jsonl either way."},
    )
    num_proc: int = field(default=1, metadata={"help": "Processes for the start-of-run image checks."})

    def __post_init__(self) -> None:
        if self.image_check not in IMAGE_CHECKS:
            raise ValueError(f"data.image_check must be one of {IMAGE_CHECKS}, got {self.image_check!r}")
        if not 0.0 <= self.max_reject_fraction <= 1.0:
            raise ValueError(f"data.max_reject_fraction must be in [0, 1], got {self.max_reject_fraction}")
        if self.num_proc < 1:
            raise ValueError(f"data.num_proc must be >= 1, got {self.num_proc}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"data.max_samples must be >= 1, got {self.max_samples}")
