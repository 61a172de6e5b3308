"""Evaluation integrations for any Croc checkpoint, including those that cannot become plain llava (the `official`
preset and the released Croc-7B normalise their visual tokens):

* `modeling_croc.evaluation.lmms_eval_model`: the `croc` model of lmms-eval (`lmms-eval --model croc`), registered
  through lmms-eval's `lmms_eval.models` entry point (`lmms_eval_manifest`);
* `modeling_croc.evaluation.vlmevalkit`: a VLMEvalKit model wrapper (`CrocVLM`) and the entries to add to
  VLMEvalKit's `supported_VLM`.

Both load a model with `modeling_croc.loading.load_croc` (a Croc, llava or released-layout folder) and answer through
`modeling_croc.chat`, so a benchmark prompts a model exactly as the chat and the demo's evaluation do. Neither tool
is imported here: they are the `eval` extra (see README, "Evaluation").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..constants import MODEL_DTYPES

# LLaVA-1.5's evaluation instructions (its paper's appendix), appended to the question: short-answer benchmarks
# (GQA, VQAv2, POPE, MME) and multiple-choice ones (MMBench, SEED-Bench, ScienceQA). lmms-eval's tasks carry their own;
# the VLMEvalKit wrapper builds these.
SHORT_ANSWER_PROMPT = "Answer the question using a single word or phrase."
OPTION_LETTER_PROMPT = "Answer with the option's letter from the given choices directly."

# lmms-eval's name for this model (`--model croc`) and where its class lives.
LMMS_EVAL_MODEL_ID = "croc"
LMMS_EVAL_CLASS_PATH = "modeling_croc.evaluation.lmms_eval_model.Croc"


def lmms_eval_manifest():
    """The payload of this package's `lmms_eval.models` entry point: lmms-eval's registry loads it at start-up and
    maps `--model croc` to `Croc` (imported only when that model is asked for)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=LMMS_EVAL_MODEL_ID, simple_class_path=LMMS_EVAL_CLASS_PATH)


def load_for_evaluation(
    pretrained: str | Path,
    *,
    vision_tower: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: str = "auto",
    attn_implementation: str | None = None,
    image_aspect_ratio: str | None = None,
) -> tuple[Any, Any]:
    """The model (eval mode, on `device`) and processor of any checkpoint `modeling_croc.loading.load_croc` reads.

    Args:
        pretrained: a Croc, llava or released-layout folder.
        vision_tower: the CLIP folder of a released-layout checkpoint.
        device: default `cuda` when a GPU is visible, else `cpu`.
        dtype: `auto` (bfloat16 on a GPU, float32 on a CPU), `float32`, `bfloat16` or `float16`.
        attn_implementation: transformers' attention backend (default: its own choice).
        image_aspect_ratio: `square` or `pad`; default the saved processor's (what the model was trained with).
    """
    from ..loading import load_croc
    from ..model_folders import nothing_at
    from ..provenance import is_hub_id

    path = Path(pretrained).expanduser()
    if not path.exists() and (not is_hub_id(str(pretrained)) or path.parent.is_dir() and str(path.parent) != "."):
        # A mistyped or moved folder reached huggingface_hub as a repository id ("Repo id must be in the form ..."):
        # a path, or an `org/name` whose `org` is a folder here (`tiny_out/stag2`).
        raise FileNotFoundError(f"pretrained={pretrained}: {nothing_at(pretrained)} (a model folder, or a Hub id "
                                "org/name)")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    if dtype not in MODEL_DTYPES:
        raise ValueError(f"dtype must be auto or one of {MODEL_DTYPES}, got {dtype!r}")
    kwargs = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model, processor = load_croc(pretrained, vision_tower=vision_tower, image_aspect_ratio=image_aspect_ratio,
                                 **kwargs)
    if processor is None:
        raise ValueError(f"{pretrained} holds no processor (tokenizer + image processor): save one next to the weights")
    return model.to(device).eval(), processor


__all__ = [
    "LMMS_EVAL_CLASS_PATH",
    "LMMS_EVAL_MODEL_ID",
    "OPTION_LETTER_PROMPT",
    "SHORT_ANSWER_PROMPT",
    "lmms_eval_manifest",
    "load_for_evaluation",
]
