"""VLMEvalKit model wrapper for Croc checkpoints (normalised visual tokens included).

VLMEvalKit (open-compass/VLMEvalKit, installed from its repository; it is not on PyPI) builds each model from
`vlmeval.config.supported_VLM[name]()`, then for every benchmark row asks `use_custom_prompt(dataset)`, builds the
message with the model's `build_prompt(line, dataset)` when that is True (else with the dataset's own prompt), and
calls `generate(message, dataset)`, which its `BaseModel` checks and hands to `generate_inner`. A message is a list of
`{"type": "image" | "text", "value": path or text}`. To evaluate Croc checkpoints, add them in VLMEvalKit's
`vlmeval/config.py`:

    from modeling_croc.evaluation.vlmevalkit import croc_models
    supported_VLM.update(croc_models({"croc-7b": "/path/to/croc-7b"}))

and run `python run.py --data MMBench_DEV_EN POPE GQA_TestDev_Balanced --model croc-7b`. This module imports
VLMEvalKit and exists only for it: nothing else in the package imports it.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from vlmeval.dataset import DATASET_TYPE
from vlmeval.vlm.base import BaseModel

from ..chat import answer_batch
from ..images import load_image
from ..processing_croc import pad_colour
from . import OPTION_LETTER_PROMPT, SHORT_ANSWER_PROMPT, load_for_evaluation

# VLMEvalKit's dataset types whose prompt this wrapper builds the LLaVA-1.5 way; the others keep the dataset's own.
CUSTOM_PROMPT_TYPES = ("MCQ", "Y/N")


def _given(line: Any, key: str) -> bool:
    """Whether a benchmark row (a pandas row in VLMEvalKit) has a value under `key` (missing cells are NaN there)."""
    if key not in line:
        return False
    value = line[key]
    return value is not None and value == value and str(value) != ""


def llava_prompt(line: Any, dataset_type: str) -> str:
    """LLaVA-1.5's prompt for a row: the hint (if any) and question, then the lettered options and the
    option-letter instruction for a multiple-choice row, or the short-answer instruction for a yes/no row."""
    question = str(line["question"])
    if dataset_type != "MCQ":
        return f"{question}\n{SHORT_ANSWER_PROMPT}"
    parts = [str(line["hint"])] if _given(line, "hint") else []
    parts.append(question)
    letters = [letter for letter in "ABCDEFGHIJ" if _given(line, letter)]
    parts += [f"{letter}. {line[letter]}" for letter in letters]
    parts.append(OPTION_LETTER_PROMPT)
    return "\n".join(parts)


class CrocVLM(BaseModel):
    """A Croc checkpoint as a VLMEvalKit model: LLaVA-1.5 prompts for multiple-choice and yes/no benchmarks, the
    images first and then the text (LLaVA-1.5 does not interleave), greedy answers through `modeling_croc.chat`."""

    INSTALL_REQ = False
    INTERLEAVE = False

    def __init__(
        self,
        model_path: str,
        vision_tower: str | None = None,
        device: str | None = None,
        dtype: str = "auto",
        max_new_tokens: int = 512,
        **generation: Any,
    ) -> None:
        super().__init__()
        self.model, self.processor = load_for_evaluation(model_path, vision_tower=vision_tower, device=device,
                                                         dtype=dtype)
        self.generation = {"max_new_tokens": max_new_tokens, "do_sample": False, **generation}

    def use_custom_prompt(self, dataset: str) -> bool:
        return DATASET_TYPE(dataset) in CUSTOM_PROMPT_TYPES

    def build_prompt(self, line: Any, dataset: str) -> list[dict[str, str]]:
        images = self.dump_image(line, dataset)
        images = [images] if isinstance(images, str) else list(images)
        text = llava_prompt(line, DATASET_TYPE(dataset))
        return [{"type": "image", "value": path} for path in images] + [{"type": "text", "value": text}]

    def generate_inner(self, message: list[dict[str, str]], dataset: str | None = None) -> str:
        # The project's one image reader: transparency onto the padding colour, 16-bit grey rescaled, file closed.
        background = pad_colour(self.processor.image_processor)
        images = [load_image(item["value"], background, image_processor=self.processor.image_processor)
                  for item in message if item["type"] == "image"]
        text = "\n".join(item["value"] for item in message if item["type"] == "text")
        return answer_batch(self.model, self.processor, [(images, text)], **self.generation)[0]


def croc_models(paths: dict[str, str], **settings: Any) -> dict[str, partial]:
    """Entries for VLMEvalKit's `supported_VLM`: model name -> a constructor of `CrocVLM` for that checkpoint folder
    (`settings`: `vision_tower`, `device`, `dtype`, `max_new_tokens`, generation arguments)."""
    return {name: partial(CrocVLM, model_path=str(path), **settings) for name, path in paths.items()}


__all__ = ["CUSTOM_PROMPT_TYPES", "CrocVLM", "croc_models", "llava_prompt"]
