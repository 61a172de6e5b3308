"""Conversation templates: a row's turns -> text segments, each flagged as supervised (trained on) or not.

A template only builds text. The dataset (`trainer.data`) tokenises the segments one by one and expands
:data:`IMAGE_MARKER` into the model's image tokens, so segment boundaries must fall where the tokenizer would
split anyway: before a space, or right after a special token (`</s>`, `<image>`). Both templates below do.

* ``plain`` (stage 1): ``<image>`` + caption + ``\\n``; only the caption and its newline are supervised, the human
  text is dropped (LLaVA's pretraining format).
* ``vicuna_v1`` (stages 1.5 and 2): ``"{system} USER: <image>\\n{question} ASSISTANT: {answer}</s>USER: ..."``;
  only the answers and their ``</s>`` are supervised. This is the string that the `CrocProcessor` chat template
  renders at inference, so training and inference see the same tokens.

Rows are ``{"conversations": [{"from": "human" | "gpt", "value": str}, ...], "image": str | None, ...}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from modeling_croc.processing_croc import VICUNA_V1_SYSTEM

IMAGE_MARKER = "<image>"

USER, ASSISTANT = "user", "assistant"
# LLaVA files say human/gpt; chat-style files say user/assistant. Anything else is a data error.
_ROLES = {"human": USER, "user": USER, "gpt": ASSISTANT, "assistant": ASSISTANT}


class Segment(NamedTuple):
    """A piece of the rendered conversation; `supervised` pieces are the ones the loss is computed on."""

    text: str
    supervised: bool


class Template(Protocol):
    """Renders a row's turns as segments. `has_image` says whether the row carries an image: the template then
    emits exactly one :data:`IMAGE_MARKER`, wherever the row had it; a text-only row gets none."""

    def __call__(
        self, conversations: Sequence[Mapping[str, str]], has_image: bool, eos_token: str = "</s>"
    ) -> list[Segment]: ...


def _role(turn: Mapping[str, str]) -> str:
    try:
        return _ROLES[turn["from"]]
    except KeyError:
        raise ValueError(
            f"unknown conversation role {turn.get('from')!r}; expected one of {sorted(_ROLES)}"
        ) from None


def _without_marker(text: str) -> str:
    # A turn that carried the marker loses it and the whitespace around it ("<image>\nQ" and "Q\n<image>" -> "Q").
    return text.replace(IMAGE_MARKER, "").strip() if IMAGE_MARKER in text else text


@dataclass(frozen=True)
class PlainTemplate:
    """Stage 1: ``<image>`` + caption + ``\\n``. The caption is the assistant turn; a row with several assistant
    turns yields each one followed by ``\\n``, all supervised. Human text is dropped."""

    separator: str = "\n"

    def __call__(
        self, conversations: Sequence[Mapping[str, str]], has_image: bool, eos_token: str = "</s>"
    ) -> list[Segment]:
        segments = [Segment(IMAGE_MARKER, False)] if has_image else []
        for turn in conversations:
            if _role(turn) == ASSISTANT:
                segments.append(Segment(_without_marker(turn["value"]) + self.separator, True))
        return segments


@dataclass(frozen=True)
class VicunaV1Template:
    """Stages 1.5 and 2: Vicuna v1, ``"{system} USER: {q} ASSISTANT: {a}</s>USER: ..."``, with ``<image>\\n``
    at the front of the first user turn. Segments alternate: prompt text up to and including ``ASSISTANT:``
    (unsupervised), then ``" {answer}</s>"`` (supervised; the space belongs to the answer's first token)."""

    system: str = VICUNA_V1_SYSTEM

    def __call__(
        self, conversations: Sequence[Mapping[str, str]], has_image: bool, eos_token: str = "</s>"
    ) -> list[Segment]:
        turns = [(_role(turn), _without_marker(turn["value"])) for turn in conversations]
        if has_image:
            # The image opens the first user turn; a row starting with an answer gets an empty user turn for it.
            first_user = next((i for i, (role, _) in enumerate(turns) if role == USER), None)
            if first_user is None or any(role == ASSISTANT for role, _ in turns[:first_user]):
                turns.insert(0, (USER, ""))
                first_user = 0
            turns[first_user] = (USER, f"{IMAGE_MARKER}\n{turns[first_user][1]}".strip())

        segments: list[Segment] = []
        prompt = self.system + " "
        for role, text in turns:
            if role == USER:
                prompt += f"USER: {text} "
            else:
                segments.append(Segment(prompt + "ASSISTANT:", False))
                segments.append(Segment(f" {text}{eos_token}", True))
                prompt = ""
        if prompt:  # a trailing question without an answer: context only
            segments.append(Segment(prompt, False))
        return segments


TEMPLATES: dict[str, Template] = {"plain": PlainTemplate(), "vicuna_v1": VicunaV1Template()}


def get_template(template: str | Template) -> Template:
    """The registered template called `template`, or `template` itself when it is already a template."""
    if not isinstance(template, str):
        return template
    try:
        return TEMPLATES[template]
    except KeyError:
        raise ValueError(f"unknown template {template!r}; registered: {sorted(TEMPLATES)}") from None


__all__ = [
    "IMAGE_MARKER",
    "TEMPLATES",
    "PlainTemplate",
    "Segment",
    "Template",
    "VicunaV1Template",
    "get_template",
]
