"""Text-only source conversion, one upstream field layout at a time."""

from __future__ import annotations

import pytest

from data_recipes.catalog import TEXT_SOURCE_NAMES
from data_recipes.text_sources import (
    TEXT_CONVERTERS,
    from_input_output,
    from_instruction_context_response,
    from_instruction_input_output,
    from_kind_input_target,
    text_record_to_row,
)
from data_recipes.validation import check_conversation


def _turns(human: str, gpt: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]


def test_instruction_input_output_with_and_without_input():
    assert from_instruction_input_output({"instruction": "Translate.", "input": "bonjour", "output": "hello"}) == \
        _turns("Translate.\nbonjour", "hello")
    # Empty or absent input adds no dangling newline (MathInstruct has no input field at all).
    assert from_instruction_input_output({"instruction": "Add 2+2.", "input": "", "output": "4"}) == _turns("Add 2+2.", "4")
    assert from_instruction_input_output({"source": "x", "instruction": "Add 1+1.", "output": "2"}) == \
        _turns("Add 1+1.", "2")
    # An empty instruction with an input: the input alone (BELLE and Alpaca have such rows), not "\nbonjour".
    assert from_instruction_input_output({"instruction": " ", "input": "bonjour", "output": "hello"}) == \
        _turns("bonjour", "hello")


def test_instruction_context_response():
    assert from_instruction_context_response(
        {"instruction": "Summarise.", "context": "Some text.", "response": "Short.", "category": "summarization"}
    ) == _turns("Summarise.\nSome text.", "Short.")
    assert from_instruction_context_response({"instruction": "Why?", "context": "", "response": "Because."}) == \
        _turns("Why?", "Because.")


def test_kind_input_target_ignores_kind():
    assert from_kind_input_target({"kind": "NLI", "input": "Premise?", "target": "yes"}) == _turns("Premise?", "yes")


def test_input_output():
    assert from_input_output({"id": 3, "input": "Where?", "output": "Here."}) == _turns("Where?", "Here.")


@pytest.mark.parametrize("source,layout", [
    ("mathinstruct", from_instruction_input_output), ("alpaca", from_instruction_input_output),
    ("belle", from_instruction_input_output), ("open_platypus", from_instruction_input_output),
    ("code_alpaca", from_instruction_input_output), ("dolly", from_instruction_context_response),
    ("firefly", from_kind_input_target), ("webqa", from_input_output),
])
def test_every_text_source_has_its_layout_registered(source, layout):
    assert TEXT_CONVERTERS[source] is layout


def test_registry_covers_exactly_the_paper_text_sources():
    assert set(TEXT_SOURCE_NAMES) <= set(TEXT_CONVERTERS)
    assert len(TEXT_SOURCE_NAMES) == 8


def test_row_has_no_image_and_records_upstream_index():
    row = text_record_to_row({"kind": "QA", "input": "Q", "target": "A"}, source="firefly", index=41)
    assert row == {"id": "firefly-41", "image": None, "conversations": _turns("Q", "A"), "source": "firefly"}


def test_missing_answer_field_is_kept_for_validation_not_dropped():
    row = text_record_to_row({"instruction": "Say hi."}, source="alpaca", index=0)
    assert row["conversations"][1] == {"from": "gpt", "value": ""}
    assert check_conversation(row["conversations"], has_image=False) == "empty_turn"


def test_nan_fields_of_a_pandas_dump_are_missing_not_the_text_nan():
    # `json.dump(df.to_dict("records"))` writes a missing cell as NaN, which Python's JSON reader accepts.
    row = text_record_to_row({"instruction": "Write a loop.", "input": float("nan"), "output": float("nan")},
                             source="code_alpaca", index=0)
    assert row["conversations"] == _turns("Write a loop.", "")
    assert check_conversation(row["conversations"], has_image=False) == "empty_turn"
    dolly = {"instruction": "Who?", "context": float("inf"), "response": "Me.", "category": "open_qa"}
    assert text_record_to_row(dolly, source="dolly", index=0)["conversations"] == _turns("Who?", "Me.")


def test_unknown_source_has_a_clear_error():
    with pytest.raises(KeyError, match="no text converter registered for 'nope'"):
        text_record_to_row({}, source="nope", index=0)
