"""`lmms-eval --model croc --model_args pretrained=FOLDER --tasks mmbench_en_dev,pope,gqa`: any Croc checkpoint
(normalised visual tokens included) under lmms-eval, prompted with the checkpoint's own chat template (Vicuna v1
for LLaVA-1.5, each family's own for the others).

Registered through lmms-eval's `lmms_eval.models` entry point (setup.cfg -> `modeling_croc.evaluation.
lmms_eval_manifest`), so installing this package with the `eval` extra is all `--model croc` needs. This module
imports lmms-eval and exists only for it: nothing else in the package imports it.

`model_args`: `pretrained` (a Croc, llava or released-layout folder), `vision_tower` (released layout's CLIP folder),
`device`, `dtype` (`auto`, `float32`, `bfloat16`, `float16`), `batch_size`, `attn_implementation`,
`image_aspect_ratio`. Under `accelerate launch` each process takes its own GPU and its share of the requests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import groupby
from typing import Any

from accelerate import Accelerator
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from PIL import Image

from ..chat import answer_batch, continuation_logprob
from ..images import to_rgb
from ..processing_croc import pad_colour
from . import load_for_evaluation

# lmms-eval generation settings and the `generate` argument each becomes; `temperature` 0 means greedy.
_GENERATE_ARGUMENTS = ("max_new_tokens", "temperature", "top_p", "num_beams")
DEFAULT_MAX_NEW_TOKENS = 1024  # lmms-eval's own default when a task sets none


def generation_settings(task_kwargs: dict[str, Any], eos_token: str) -> tuple[dict[str, Any], list[str]]:
    """(`generate` keyword arguments, stop strings) for a task's `generation_kwargs`: sampling only when the task
    asks for a temperature above 0; every other setting of the task that `generate` knows is passed on."""
    settings = {name: task_kwargs[name] for name in _GENERATE_ARGUMENTS if task_kwargs.get(name) is not None}
    settings.setdefault("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    temperature = float(settings.pop("temperature", 0) or 0)
    settings["do_sample"] = bool(task_kwargs.get("do_sample", False)) or temperature > 0
    if settings["do_sample"]:
        settings["temperature"] = temperature if temperature > 0 else 1.0
    else:
        settings.pop("top_p", None)  # a sampling setting: greedy decoding would warn that it is unused
    until = task_kwargs.get("until") or [eos_token]
    return settings, [until] if isinstance(until, str) else list(until)


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """`text` up to the first of `stops` (lmms-eval's `until`)."""
    for stop in stops:
        if stop:
            text = text.split(stop, 1)[0]
    return text


class Croc(lmms):
    """lmms-eval model for Croc checkpoints: `generate_until` (greedy unless the task samples, batched with left
    padding) and `loglikelihood` (the answer turn's tokens as the chat template renders them, for `multiple_choice`
    tasks)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        vision_tower: str | None = None,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int | str = 1,
        attn_implementation: str | None = None,
        image_aspect_ratio: str | None = None,
        max_batch_size: int | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            raise ValueError(f"unknown model_args for croc: {sorted(unknown)}")
        if not str(batch_size).isdigit() or int(batch_size) < 1:
            # `auto` (lmms-eval's search for the largest batch that fits) was taken as 1 without a word.
            raise ValueError(f"batch_size {batch_size!r}: the croc model takes a whole number of requests per batch "
                             "(lmms-eval's auto search is not implemented here), e.g. --batch_size 8")
        accelerator = Accelerator()
        if accelerator.num_processes > 1:
            # Data parallel: lmms-eval hands each rank its share of the documents.
            device = f"cuda:{accelerator.local_process_index}"
            self._rank, self._world_size = accelerator.local_process_index, accelerator.num_processes
        self.accelerator = accelerator
        self._model, self.processor = load_for_evaluation(
            pretrained, vision_tower=vision_tower, device=device, dtype=dtype,
            attn_implementation=attn_implementation, image_aspect_ratio=image_aspect_ratio,
        )
        self.batch_size_per_gpu = int(batch_size)

    @property
    def model(self):
        return self._model

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def _visuals(self, doc_to_visual: Callable, doc_id: int, task: str, split: str) -> list[Image.Image]:
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
        images = [visual for visual in visuals if visual is not None]
        if not all(isinstance(image, Image.Image) for image in images):
            raise ValueError(f"{task}: croc answers about images; doc {doc_id} gave {[type(v) for v in images]}")
        # As training reads images: transparency onto the padding colour, 16-bit grey rescaled.
        background = pad_colour(self.processor.image_processor)
        return [to_rgb(image, background) for image in images]

    def generate_until(self, requests: list[Instance]) -> list[str]:
        answers: list[str] = []
        for settings, stops, batch in self._batches(requests):
            questions = [(self._visuals(doc_to_visual, doc_id, task, split), context)
                         for context, _, doc_to_visual, doc_id, task, split in batch]
            for (context, *_), text in zip(batch, answer_batch(self.model, self.processor, questions, **settings)):
                answer = cut_at_stops(text, stops)
                answers.append(answer)
                self.cache_hook.add_partial("generate_until", (context, settings), answer)
        return answers

    def _batches(self, requests: list[Instance]) -> Iterator[tuple[dict[str, Any], list[str], list[tuple]]]:
        """Consecutive requests with the same generation settings, `batch_size` at a time, in request order."""
        eos = self.tokenizer.eos_token

        def key(request: Instance) -> str:
            return repr(sorted(request.args[1].items(), key=lambda item: item[0]))

        for _, group in groupby(requests, key=key):
            group = [request.args for request in group]
            settings, stops = generation_settings(dict(group[0][1]), eos)
            for start in range(0, len(group), self.batch_size):
                yield settings, stops, group[start:start + self.batch_size]

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """`(negative log-probability, is greedy)` of each request's continuation as the answer turn.

        The negative: lmms-eval's evaluator picks a `multiple_choice` answer with `argmin` (its models return a loss),
        so the summed negative log-likelihood makes it pick the most likely choice (and `acc_norm` divide it by the
        choice's length). Each pair is wrapped in a `GenerationResult` because lmms-eval 0.7.3 passes model outputs
        through `unwrap_generation_output`, which turns a bare tuple into its string (and then fails in
        `process_results` for every model); a `GenerationResult` hands its payload through unchanged.
        """
        results = []
        for context, target, doc_to_visual, doc_id, task, split in (request.args for request in requests):
            doc = self.task_dict[task][split][doc_id]
            continuation = target if isinstance(target, str) else target(doc)
            images = self._visuals(doc_to_visual, doc_id, task, split)
            logprob, greedy = continuation_logprob(self.model, self.processor, images, context, continuation.strip())
            results.append(GenerationResult(text=(-logprob, greedy)))
            self.cache_hook.add_partial("loglikelihood", (context, continuation), (-logprob, greedy))
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("croc answers single-turn tasks (LLaVA-1.5's benchmarks); multi-round tasks are "
                                  "not supported")


__all__ = ["Croc", "cut_at_stops", "generation_settings"]
