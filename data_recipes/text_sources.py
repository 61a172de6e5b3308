"""Converters from the text-only sources' field layouts to LLaVA conversations.

Rule (docs/DATA.md): one human turn made of the instruction, plus "\\n" + input/context when that is
non-empty, and one gpt turn with the output/target/response; no `image`. One small function per
upstream field layout, registered under each source name that uses it.

A missing field becomes "" rather than an exception, so the row reaches validation and is rejected
as an `empty_turn` with its id, instead of stopping a 300K-row build or vanishing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .schema import PROBLEM_COLUMN, is_missing, normalise_row, preview, text_problem

Conversation = list[dict[str, str]]
TextConverter = Callable[[Mapping[str, Any]], Conversation]


class NotText(ValueError):
    """A list or mapping where a converter reads text: the row is a `malformed_row` (a converter of a source whose
    field is a list, such as several accepted answers, takes what it needs itself and never raises it)."""


def _field(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if isinstance(value, (list, tuple, dict)):
        # str() made it its Python repr (`['red', 'blue']`), trained on as the answer; a LLaVA turn holding one is
        # rejected the same way.
        raise NotText(f"malformed_row: {key!r} is {type(value).__name__} {preview(value)}, not text")
    # NaN is pandas' missing cell, as in LLaVA turns (`schema.is_missing`): str() made it the text "nan", an input
    # appended to the instruction or an answer trained on, where a missing answer is an `empty_turn` reject.
    return "" if is_missing(value) else str(value)


def _pair(prompt: str, extra: str, answer: str) -> Conversation:
    # The non-empty of instruction and input, joined by "\n": an empty instruction does not open the turn with one.
    human = "\n".join(part for part in (prompt, extra) if part.strip()) or prompt
    return [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]


def from_instruction_input_output(record: Mapping[str, Any]) -> Conversation:
    """Alpaca-style `instruction`, optional `input`, `output` (alpaca, BELLE, Platypus, CodeAlpaca, MathInstruct)."""
    return _pair(_field(record, "instruction"), _field(record, "input"), _field(record, "output"))


def from_instruction_context_response(record: Mapping[str, Any]) -> Conversation:
    """Dolly-style `instruction`, optional `context`, `response`."""
    return _pair(_field(record, "instruction"), _field(record, "context"), _field(record, "response"))


def from_kind_input_target(record: Mapping[str, Any]) -> Conversation:
    """Firefly-style `kind` (task family, not part of the text), `input`, `target`."""
    return _pair(_field(record, "input"), "", _field(record, "target"))


def from_input_output(record: Mapping[str, Any]) -> Conversation:
    """WebQA-style `input`, `output`."""
    return _pair(_field(record, "input"), "", _field(record, "output"))


TEXT_CONVERTERS: dict[str, TextConverter] = {}


def register_text_converter(source: str, converter: TextConverter) -> None:
    """Register the converter used for a text source name (overwrites an earlier registration)."""
    TEXT_CONVERTERS[source] = converter


for _name in ("mathinstruct", "alpaca", "belle", "open_platypus", "code_alpaca"):
    register_text_converter(_name, from_instruction_input_output)
register_text_converter("dolly", from_instruction_context_response)
register_text_converter("firefly", from_kind_input_target)
register_text_converter("webqa", from_input_output)


def text_record_to_row(record: Any, *, source: str, index: int) -> dict[str, Any]:
    """Convert one upstream text record to a schema row; its id records the upstream row index."""
    try:
        convert = TEXT_CONVERTERS[source]
    except KeyError:
        raise KeyError(f"no text converter registered for {source!r}; known: {sorted(TEXT_CONVERTERS)}") from None
    row_id = f"{source}-{index}"
    if not isinstance(record, Mapping):
        # The same reject as a LLaVA record that is not an object: counted, not a crash of the whole build.
        return normalise_row(record, source=source, index=index)
    try:
        conversations = convert(record)
    except NotText as not_text:
        return {"id": row_id, "image": None, "conversations": None, "source": source, PROBLEM_COLUMN: str(not_text)}
    row = {"id": row_id, "image": None, "conversations": conversations, "source": source}
    problem = text_problem(row)  # a lone surrogate (`\ud83d` of a cut emoji): one rejected row, not a failed build
    if problem:
        row[PROBLEM_COLUMN] = problem
    return row
