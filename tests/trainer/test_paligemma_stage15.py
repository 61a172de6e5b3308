"""What the trainer feeds PaliGemma (its end-to-end path, plain folder -> stage 1.5 -> stage 2 -> exported plain
folder, is one case of `test_family_training.py`): samples and collated batches equal, element by element, what
`PaliGemmaProcessor` builds from a prefix and a suffix (`<bos>` after the image, labels on the suffix only,
`token_type_ids` 0 on the prefix and 1 from the suffix's first token to the end, which its model's prefix-LM mask
reads: a wrong one is silent); rows its format cannot express rejected in one line each; the chat path prompting and
scoring in the same layout."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from transformers import PaliGemmaProcessor

from croc_testing.paligemma import PALIGEMMA_TOKENS_PER_IMAGE, save_tiny_paligemma
from modeling_croc import CrocPaliGemmaProcessor
from modeling_croc.constants import IGNORE_INDEX
from trainer.collator import build_collator
from trainer.data import CrocSupervisedDataset


@pytest.fixture(scope="module")
def paligemma_folder(tmp_path_factory):
    return save_tiny_paligemma(tmp_path_factory.mktemp("paligemma") / "plain")


def _rows(data_dir) -> list[dict]:
    rows = json.loads((data_dir / "detailed.json").read_text()) + json.loads((data_dir / "qa.json").read_text())
    return [row for row in rows if "image" in row]


def _prefix_and_suffix(row: dict) -> tuple[str, str]:
    question, answer = (turn["value"] for turn in row["conversations"])
    return question.replace("<image>", "").strip(), answer


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_collated_batch_is_the_processors_prefix_and_suffix(paligemma_folder, data_dir, padding_side):
    """input_ids, attention_mask, labels, token_type_ids and pixel_values of a collated batch (rows of different
    lengths, the data's `<image>` before or after the question) equal `PaliGemmaProcessor(text=<image> + prefix,
    suffix=answer, images=...)`'s, element by element, with both paddings."""
    processor = CrocPaliGemmaProcessor.from_pretrained(paligemma_folder)
    rows = _rows(data_dir)[6:11]  # detailed and qa rows: long and short answers, the marker before and after
    dataset = CrocSupervisedDataset(rows, processor, template="paligemma", image_root=data_dir, model_max_length=512)
    assert all(fit.verdict == "whole" for fit in dataset.fit_rows(rows))
    batch = build_collator(processor, padding_side=padding_side)([dataset[index] for index in range(len(rows))])

    parent = PaliGemmaProcessor.from_pretrained(paligemma_folder)
    parent.tokenizer.padding_side = padding_side
    prefixes, suffixes = zip(*map(_prefix_and_suffix, rows))
    expected = parent(text=[f"<image>{prefix}" for prefix in prefixes], suffix=list(suffixes),
                      images=[Image.open(data_dir / row["image"]) for row in rows], padding=True, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "labels", "token_type_ids"):
        assert torch.equal(batch[key], expected[key].long()), key
    torch.testing.assert_close(batch["pixel_values"], expected["pixel_values"])
    # What the processor's layout is, read off one row: the image, `<bos>`, the prefix and "\n" of type 0, the
    # suffix and `<eos>` of type 1, supervised.
    tokenizer = processor.tokenizer
    first = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    assert first[:PALIGEMMA_TOKENS_PER_IMAGE + 1] == [processor.image_token_id] * 4 + [tokenizer.bos_token_id]
    assert first.count(tokenizer.bos_token_id) == 1 and first[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(batch["input_ids"][0][batch["token_type_ids"][0].bool()]) == suffixes[0] + "<eos>"
    assert int(batch["token_type_ids"][(batch["input_ids"] == processor.image_token_id)].sum()) == 0


def test_rows_its_format_cannot_express_are_rejected(paligemma_folder, data_dir):
    """A text-only row (its processor needs an image) and a second exchange are rejected at the start in one line
    (`template_cannot_render`), and replaced and counted when asked for, before any compute."""
    processor = CrocPaliGemmaProcessor.from_pretrained(paligemma_folder)
    image_row = _rows(data_dir)[0]
    text_row = {"id": "text", "conversations": [{"from": "human", "value": "What is 2 plus 2?"},
                                                {"from": "gpt", "value": "4."}]}
    two_turns = dict(image_row, id="two", conversations=image_row["conversations"] * 2)
    answer_only = dict(image_row, id="answer-only", conversations=image_row["conversations"][1:])
    rows = [image_row, text_row, two_turns, answer_only]
    dataset = CrocSupervisedDataset(rows, processor, template="paligemma", image_root=data_dir)
    fits = dataset.fit_rows(rows)
    assert fits[0].verdict == "whole"
    for fit in fits[1:]:
        assert (fit.verdict, fit.reason) == ("rejected", "template_cannot_render")
        assert "\n" not in fit.detail and "paligemma" in fit.detail
    assert "needs an image" in fits[1].detail and "4 turns" in fits[2].detail and "1 turns" in fits[3].detail
    replaced = dataset[2]
    assert replaced["replaced_row"]["reason"] == "template_cannot_render"
    assert torch.equal(replaced["input_ids"], dataset[0]["input_ids"])


def test_chat_prompts_and_scores_in_the_training_layout(paligemma_folder, data_dir):
    """The chat template renders the image and the question alone; the processor adds `<bos>` and "\\n" as training
    writes them, so `answer_batch` prompts with the training sample's prefix and `continuation_logprob` scores the
    answer as its suffix (`token_type_ids` 1, what the processor gives a suffix), not as part of the bidirectional
    prefix. A system message, a text-only question and a second image are refused in one line."""
    from jinja2.exceptions import TemplateError

    from modeling_croc.chat import answer_batch, continuation_logprob
    from modeling_croc.loading import load_croc

    model, processor = load_croc(paligemma_folder)
    model.eval()
    row = _rows(data_dir)[0]
    prefix, suffix = _prefix_and_suffix(row)
    image = Image.open(data_dir / row["image"]).convert("RGB")
    sample = CrocSupervisedDataset([row], processor, template="paligemma", image_root=data_dir)[0]
    expected = PaliGemmaProcessor.from_pretrained(paligemma_folder)(text=[f"<image>{prefix}"], suffix=[suffix],
                                                                      images=[image], return_tensors="pt")
    assert torch.equal(expected["input_ids"][0], sample["input_ids"])
    seen = []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs), with_kwargs=True)
    answer_batch(model, processor, [([image], prefix)], max_new_tokens=1)
    prompt_length = int((sample["labels"] == IGNORE_INDEX).sum())
    assert seen[0]["input_ids"][0].tolist() == sample["input_ids"][:prompt_length].tolist()
    assert not seen[0]["token_type_ids"].any()
    seen.clear()
    continuation_logprob(model, processor, [image], prefix, suffix)
    assert torch.equal(seen[0]["input_ids"][0], expected["input_ids"][0])
    assert torch.equal(seen[0]["token_type_ids"][0], expected["token_type_ids"][0].long())
    for messages, why in (
            ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "image"}]}],
             "no system message"),
            ([{"role": "user", "content": [{"type": "text", "text": "Hi."}]}], "exactly one image"),
            ([{"role": "user", "content": [{"type": "image"}, {"type": "image"}]}], "exactly one image")):
        with pytest.raises(TemplateError, match=why):
            processor.apply_chat_template(messages, add_generation_prompt=True)
