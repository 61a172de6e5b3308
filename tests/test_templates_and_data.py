"""Templates, the supervised dataset, the collator and the modality-grouped sampler, with the real SentencePiece
tokenizer (mistral-common's Llama v1 model + LLaVA's <image>/<pad>): labels are checked token by token."""

from __future__ import annotations

import dataclasses
import logging

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from croc_testing.tiny import tiny_croc_processor
from data_recipes import DataError
from modeling_croc import IGNORE_INDEX, with_image_aspect_ratio
from modeling_croc.constants import IMAGE_TOKEN as IMAGE_MARKER
from modeling_croc.conversation import TEMPLATES, VICUNA_V1, VICUNA_V1_SYSTEM, Segment, get_template
from trainer import data as data_module
from trainer.collator import CrocDataCollator, build_collator
from trainer.data import CrocSupervisedDataset
from trainer.sampler import ModalityGroupedSampler

NUM_IMAGE_TOKENS = (56 // 14) ** 2  # tiny_croc_processor(): a 4x4 patch grid, CLS dropped (576 at 336 / 14)
IMAGE_TOKEN_ID = 32000


@pytest.fixture(scope="module")
def processor():
    return tiny_croc_processor()


@pytest.fixture(scope="module")
def tokenizer(processor):
    return processor.tokenizer


def _row(conversations, image=None, row_id="r"):
    turns = [
        {"from": "human" if i % 2 == 0 else "gpt", "value": value} for i, value in enumerate(conversations)
    ]
    return {"id": row_id, "image": image, "conversations": turns, "source": "test"}


def _write_png(folder, name, size=(56, 56), colour=(255, 0, 0)):
    Image.new("RGB", size, colour).save(folder / name)
    return name


def _expected(tokenizer, text, answers):
    """Oracle: the ids of the whole rendered `text` (tokenised at once, <image> expanded) and which of them fall
    inside the `answers` character spans (each given with its leading space and `</s>`)."""
    encoding = tokenizer(text, return_offsets_mapping=True)
    spans, search_from = [], 0
    for answer in answers:
        start = text.index(answer, search_from)
        spans.append((start, start + len(answer)))
        search_from = start + len(answer)
    ids, supervised = [], []
    for token, (start, end) in zip(encoding["input_ids"], encoding["offset_mapping"]):
        copies = NUM_IMAGE_TOKENS if token == IMAGE_TOKEN_ID else 1
        ids += [token] * copies
        inside = end > start and any(lo <= start and end <= hi for lo, hi in spans)
        supervised += [inside and token != IMAGE_TOKEN_ID] * copies
    return ids, supervised


def _supervised_runs(sample, tokenizer):
    """Decoded text of each maximal run of supervised positions."""
    labels = sample["labels"].tolist()
    runs, current = [], []
    for label in labels + [IGNORE_INDEX]:
        if label != IGNORE_INDEX:
            current.append(label)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return runs


# --- the tokenizer facts the dataset relies on ---------------------------------------------------------------


def test_tokenizer_facts(tokenizer):
    assert tokenizer("Hi").input_ids[0] == tokenizer.bos_token_id == 1  # BOS added by default
    assert tokenizer.encode("</s>", add_special_tokens=False) == [tokenizer.eos_token_id] == [2]
    assert tokenizer.encode("<image>", add_special_tokens=False) == [IMAGE_TOKEN_ID]
    assert tokenizer.pad_token_id == 32001
    # Metaspace prepends "▁" only at the start of the text, not after a special token: "USER" after </s> is
    # one piece, at the start it is "▁US" "ER". This is why later segments are tokenised as continuations.
    assert tokenizer.encode("</s>USER", add_special_tokens=False)[1:] != tokenizer.encode(
        "USER", add_special_tokens=False
    )


# --- templates ------------------------------------------------------------------------------------------------


def test_registry_and_lookup():
    assert set(TEMPLATES) == {"plain", "vicuna_v1", "qwen_1_5", "qwen2_vl", "qwen3_vl", "qwen3_5", "glm4v", "gemma3",
                              "gemma4", "paligemma", "internvl", "mistral3", "smolvlm", "idefics3"}
    assert get_template("plain") is TEMPLATES["plain"]
    custom = dataclasses.replace(VICUNA_V1, name="brief", system="Be brief. ")
    assert get_template(custom) is custom
    with pytest.raises(ValueError, match="unknown template"):
        get_template("llama_3")
    with pytest.raises(ValueError, match="unknown conversation role"):
        TEMPLATES["plain"].segments([{"from": "bot", "value": "x"}], has_image=False)


def test_plain_template_drops_human_text():
    conversations = _row(["Describe the image.\n<image>", "A red square."])["conversations"]
    assert TEMPLATES["plain"].segments(conversations, has_image=True) == [
        Segment("<image>", False),
        Segment("A red square.\n", True),
    ]
    assert TEMPLATES["plain"].segments(conversations, has_image=False) == [Segment("A red square.\n", True)]


def test_vicuna_v1_template_moves_marker_to_front_of_its_user_turn():
    conversations = _row(["What is it?\n<image>", "A cat.", "Sure?", "Yes."])["conversations"]
    segments = TEMPLATES["vicuna_v1"].segments(conversations, has_image=True)
    assert segments == [
        Segment(f"{VICUNA_V1_SYSTEM} USER: <image>\nWhat is it? ASSISTANT:", False),
        Segment(" A cat.</s>", True),
        Segment("USER: Sure? ASSISTANT:", False),
        Segment(" Yes.</s>", True),
    ]
    # A marker in a later turn opens that turn, as LLaVA's preprocess_multimodal keeps it; a text-only row loses
    # any stray marker.
    later = TEMPLATES["vicuna_v1"].segments(
        _row(["Hi", "Hello.", "And this?\n<image>", "A dog."])["conversations"], True
    )
    assert later[0].text == f"{VICUNA_V1_SYSTEM} USER: Hi ASSISTANT:"
    assert later[2].text == "USER: <image>\nAnd this? ASSISTANT:"
    text_only = TEMPLATES["vicuna_v1"].segments(conversations, has_image=False)
    assert IMAGE_MARKER not in "".join(segment.text for segment in text_only)
    assert text_only[0].text.endswith("USER: What is it? ASSISTANT:")


def test_vicuna_v1_renders_what_the_processor_chat_template_renders(processor):
    conversations = _row(["<image>\nWhat is it?", "A cat.", "Sure?", "Yes."])["conversations"]
    rendered = "".join(segment.text for segment in TEMPLATES["vicuna_v1"].segments(conversations, has_image=True))
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "Sure?"},
        {"role": "assistant", "content": "Yes."},
    ]
    assert rendered == processor.apply_chat_template(messages, tokenize=False)


@pytest.mark.parametrize("turns", [
    ["  Hello.\n", "Hi!", "<image>\nDescribe it.", "Two circles."],  # the marker in a later turn
    [" <image>\n  What is it?  \n", "A cat."],
    ["<image>", "A caption."],
    ["", "An answer first."],
    ["What colour?\n<image>", "Red.", "  Shape? ", "Square.", "Sure?", "Yes."],
], ids=["marker_later", "whitespace", "image_only", "empty_text", "multi_turn"])
@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_trains_the_text_its_chat_template_renders(name, turns):
    """Training's segments and the chat template agree on every template, whitespace included (the test of one
    input pipeline covers a few templates on real tokenizers). Gemma 3's and Gemma 4's first user turn, which keeps
    its image block's blank lines, trained the whitespace of a row whose marker sat in a later turn ("Hello.\\n"
    before the turn's end), a token the chat template trims from the prompt."""
    from jinja2.exceptions import TemplateError
    from transformers.utils.chat_template_utils import _compile_jinja_template

    from modeling_croc.conversation import llava_row_to_messages

    template = get_template(name)
    conversations = _row(turns)["conversations"]
    chat_template = _compile_jinja_template(template.chat_template("</s>"))
    messages = llava_row_to_messages(conversations, has_image=True)
    if template.cannot_render(conversations, has_image=True) is not None:
        # A row training rejects (PaliGemma's one exchange) the chat template refuses too, in one line; `plain`'s
        # chat template is left unrestricted (training alone takes one image and one exchange a row).
        if template.single_exchange:
            with pytest.raises(TemplateError, match=f"the {name} format"):
                chat_template.render(messages=messages)
        return
    trained = "".join(segment.text for segment in template.segments(conversations, has_image=True))
    rendered = chat_template.render(messages=messages)
    if template.chat_user_suffix is not None:  # the processor writes the user suffix (PaliGemma's prefix "\n")
        prompt = chat_template.render(messages=messages[:1], add_generation_prompt=True)
        rendered = prompt + template.user_suffix + rendered[len(prompt):]
    if template.chat_image_prefix is not None:  # the placeholder the processor expands to the training block
        placeholder, block = template.chat_image_prefix, template.image_prefix
        if template.strip_image_turn:  # an image alone in its turn is trimmed with it
            placeholder, block = placeholder.strip(), block.strip()
        rendered = rendered.replace(placeholder, block)
    assert trained == rendered


# --- labels, token by token -----------------------------------------------------------------------------------


def test_vicuna_v1_multi_turn_labels_token_by_token(processor, tokenizer, tmp_path):
    questions = ["What is in the picture?\n<image>", "What colour is it?", "How many?"]
    answers = ["A cat sleeping on a mat.", "It is ginger, with white paws.", "Just one."]
    row = _row([questions[0], answers[0], questions[1], answers[1], questions[2], answers[2]], "a.png")
    _write_png(tmp_path, "a.png")
    sample = CrocSupervisedDataset([row], processor, "vicuna_v1", image_root=tmp_path)[0]

    text = (
        f"{VICUNA_V1_SYSTEM} USER: <image>\nWhat is in the picture? ASSISTANT: {answers[0]}</s>"
        f"USER: {questions[1]} ASSISTANT: {answers[1]}</s>USER: {questions[2]} ASSISTANT: {answers[2]}</s>"
    )
    ids, supervised = _expected(tokenizer, text, [f" {answer}</s>" for answer in answers])
    assert sample["input_ids"].tolist() == ids
    expected_labels = [token if keep else IGNORE_INDEX for token, keep in zip(ids, supervised)]
    assert sample["labels"].tolist() == expected_labels
    assert _supervised_runs(sample, tokenizer) == [f"{answer}</s>" for answer in answers]
    assert sample["input_ids"][0].item() == tokenizer.bos_token_id and sample["input_ids"][1:].ne(1).all()
    assert sample["pixel_values"].shape == (3, 56, 56)


def test_vicuna_v1_text_only_row(processor, tokenizer):
    row = _row(["Name a prime.", "Seven.", "Another?", "Eleven."])
    sample = CrocSupervisedDataset([row], processor, "vicuna_v1", image_root="/nonexistent")[0]
    text = (
        f"{VICUNA_V1_SYSTEM} USER: Name a prime. ASSISTANT: Seven.</s>USER: Another? ASSISTANT: Eleven.</s>"
    )
    ids, supervised = _expected(tokenizer, text, [" Seven.</s>", " Eleven.</s>"])
    assert sample["input_ids"].tolist() == ids
    assert sample["labels"].tolist() == [t if keep else IGNORE_INDEX for t, keep in zip(ids, supervised)]
    assert sample["pixel_values"] is None and IMAGE_TOKEN_ID not in ids


def test_plain_labels_token_by_token(processor, tokenizer, tmp_path):
    caption = "A small red square in the top left corner of a blue background."
    row = _row(["Describe this.\n<image>", caption], _write_png(tmp_path, "c.png"))
    dataset = CrocSupervisedDataset([row, _row(["Hi", caption])], processor, "plain", image_root=tmp_path)

    image_sample = dataset[0]
    ids, supervised = _expected(tokenizer, f"<image>{caption}\n", [f"{caption}\n"])
    assert image_sample["input_ids"].tolist() == ids
    assert image_sample["labels"].tolist() == [
        t if keep else IGNORE_INDEX for t, keep in zip(ids, supervised)
    ]
    # Everything up to the caption (BOS + image tokens) is masked; the caption and its newline are all trained.
    assert image_sample["labels"][: 1 + NUM_IMAGE_TOKENS].eq(IGNORE_INDEX).all()
    assert image_sample["labels"][1 + NUM_IMAGE_TOKENS :].ne(IGNORE_INDEX).all()
    assert _supervised_runs(image_sample, tokenizer) == [f"{caption}\n"]

    # A text row has no image to caption: stage 1 would train its bare answer, so it is not trained (it is
    # rejected before training as `template_cannot_render`, and replaced when asked for).
    assert dataset.fit_row(dataset.rows[1]) == ("rejected", "template_cannot_render",
                                                "the plain format needs an image in every row (it trains an image's "
                                                "caption: a text row would be a bare answer, its question dropped)", 0)


def test_image_marker_expands_to_num_image_tokens(processor, tmp_path):
    assert processor.num_image_tokens == NUM_IMAGE_TOKENS
    row = _row(["<image>\nDescribe <image> twice.", "Fine."], _write_png(tmp_path, "i.png"))
    for template in TEMPLATES:
        ids = CrocSupervisedDataset([row], processor, template, image_root=tmp_path)[0]["input_ids"]
        positions = torch.nonzero(ids == IMAGE_TOKEN_ID).flatten()
        assert len(positions) == NUM_IMAGE_TOKENS
        assert positions.tolist() == list(range(positions[0].item(), positions[0].item() + NUM_IMAGE_TOKENS))


# --- truncation and unusable rows -----------------------------------------------------------------------------


@pytest.fixture
def long_row(tmp_path):
    answers = ["A cat.", " ".join(["word"] * 60)]
    return _row(
        ["<image>\nWhat is it?", answers[0], "Tell me more.", answers[1]], _write_png(tmp_path, "t.png")
    )


def test_truncation_shortens_later_turns_and_keeps_image_tokens(processor, tokenizer, long_row, tmp_path):
    full = CrocSupervisedDataset([long_row], processor, "vicuna_v1", image_root=tmp_path)[0]
    labels = full["labels"].tolist()
    second_answer_start = max(i for i in range(1, len(labels)) if labels[i] != -100 and labels[i - 1] == -100)

    # Cut inside the second answer: that answer is shortened, everything before it kept as is.
    dataset = CrocSupervisedDataset(
        [long_row], processor, "vicuna_v1", tmp_path, model_max_length=len(labels) - 20
    )
    sample = dataset[0]
    assert len(sample["input_ids"]) == len(labels) - 20 and dataset.stats["truncated"] == 1
    assert sample["input_ids"].tolist() == full["input_ids"][: len(labels) - 20].tolist()
    assert sample["input_ids"].eq(IMAGE_TOKEN_ID).sum() == NUM_IMAGE_TOKENS

    # Cut inside the second question: the question (with no answer left) goes, the first answer ends the row.
    dataset = CrocSupervisedDataset(
        [long_row], processor, "vicuna_v1", tmp_path, model_max_length=second_answer_start - 2
    )
    sample = dataset[0]
    assert _supervised_runs(sample, tokenizer) == ["A cat.</s>"]
    assert sample["labels"][-1].item() == tokenizer.eos_token_id
    assert (
        sample["input_ids"].eq(IMAGE_TOKEN_ID).sum() == NUM_IMAGE_TOKENS and dataset.stats["truncated"] == 1
    )


@pytest.mark.parametrize("cut", ["inside_image", "before_first_answer"])
def test_row_that_cannot_fit_is_rejected_up_front_and_replaced_when_asked(processor, long_row, tmp_path, caplog,
                                                                          cut):
    full = CrocSupervisedDataset([long_row], processor, "vicuna_v1", image_root=tmp_path)[0]
    image_start = full["input_ids"].tolist().index(IMAGE_TOKEN_ID)
    first_answer = full["labels"].ne(IGNORE_INDEX).nonzero()[0].item()
    max_length = image_start + NUM_IMAGE_TOKENS - 1 if cut == "inside_image" else first_answer
    short = _row(["<image>\nWhat?", "A cat."], _write_png(tmp_path, "s.png"), "short")
    dataset = CrocSupervisedDataset([long_row, short], processor, "vicuna_v1", tmp_path, model_max_length=max_length)
    # Decided from the text alone, before training (the image is not read).
    fit = dataset.fit_row(long_row)
    assert (fit.verdict, fit.reason, fit.tokens) == ("rejected", "too_long", len(full["input_ids"]))
    assert ("its image tokens" if cut == "inside_image" else "its first answer token") in fit.detail
    if cut == "inside_image":  # no image row fits: nothing can stand in for it, and the dataset says so
        assert dataset.fit_row(short).reason == "too_long"
        with pytest.raises(DataError, match="'r' and the 1 row"):
            dataset[0]
        return
    assert dataset.fit_row(short).verdict == "truncated"  # its shorter question leaves room for an answer token
    # Asked for anyway (a row the start could not measure): replaced by the next row of its kind, never dropped.
    with caplog.at_level(logging.WARNING, logger="trainer.data"):
        sample = dataset[0]
    assert sample["replaced_row"] == {"id": "r", "index": 0, "image": "t.png", "reason": "too_long",
                                      "detail": fit.detail}
    assert torch.equal(sample["input_ids"], dataset[1]["input_ids"])
    assert dataset.stats["unusable"] == 1 and "'r'" in caplog.text


def test_row_with_nothing_supervised_is_rejected(processor):
    unanswered = {"id": "no-answer", "image": None, "conversations": [{"from": "human", "value": "Hello?"}]}
    dataset = CrocSupervisedDataset([unanswered], processor, "vicuna_v1")
    fit = dataset.fit_row(unanswered)
    assert (fit.verdict, fit.reason) == ("rejected", "nothing_supervised")
    # The only text row, unusable: nothing can replace it, and the dataset says so in one line.
    with pytest.raises(DataError, match="'no-answer' and the 0 row"):
        dataset[0]


def test_fit_bound_agrees_with_exact_tokenisation(processor, tmp_path):
    """The byte bound decides most rows without tokenising; on rows near the limit both ways must agree."""
    rows = [_row(["<image>\nDescribe.", " ".join(["word"] * n)], "x.png", f"r{n}") for n in range(0, 120, 7)]
    rows += [_row(["Say " + "a " * n, "ok " * n], None, f"t{n}") for n in range(0, 120, 9)]
    for max_length in (40, 80, 120, 200):
        dataset = CrocSupervisedDataset(rows, processor, "vicuna_v1", tmp_path, model_max_length=max_length)
        for row in rows:
            with_image = row.get("image") is not None
            segments = dataset.template.segments(row["conversations"], has_image=with_image,
                                                 eos_token=processor.tokenizer.eos_token)
            ids, labels, image_end = dataset._tokenize(segments, with_image, row,
                                                       NUM_IMAGE_TOKENS if with_image else 0)
            assert dataset.fit_row(row).verdict == dataset._fit_verdict(ids, labels, image_end).verdict, row["id"]


def test_fit_bound_counts_the_bytes_the_tokenizer_normalises_to(tmp_path):
    """Qwen2's NFC normaliser writes U+095B (a Devanagari letter, 3 bytes) as two code points (6 bytes, up to 6 tokens):
    a row the bytes as written called whole is longer than model_max_length, cut or replaced mid-run instead of being
    counted at the start."""
    from croc_testing.families import qwen2_bpe_tokenizer, tiny_qwen2_5_vl_processor

    processor = tiny_qwen2_5_vl_processor(qwen2_bpe_tokenizer())
    rows = [_row(["What?", "\u095b" * n], None, f"hi{n}") for n in (20, 40, 60, 80)]
    for max_length in (150, 250, 350):
        dataset = CrocSupervisedDataset(rows, processor, "qwen2_vl", tmp_path, model_max_length=max_length)
        for row in rows:
            segments = dataset.template.segments(row["conversations"], has_image=False,
                                                 eos_token=processor.tokenizer.eos_token)
            ids, labels, image_end = dataset._tokenize(segments, False, row, 0)
            assert dataset.fit_row(row).verdict == dataset._fit_verdict(ids, labels, image_end).verdict, \
                (row["id"], max_length)


# --- images ---------------------------------------------------------------------------------------------------


def test_pad_to_square_uses_mean_colour(processor, tmp_path):
    row = _row(
        ["<image>\nWhat?", "Red."], _write_png(tmp_path, "wide.png", size=(56, 28), colour=(255, 0, 0))
    )
    mean = torch.tensor(processor.image_processor.image_mean)[:, None, None]
    std = torch.tensor(processor.image_processor.image_std)[:, None, None]
    red = (torch.tensor([1.0, 0.0, 0.0])[:, None, None] - mean) / std

    padded = CrocSupervisedDataset([row], with_image_aspect_ratio(processor, "pad"), image_root=tmp_path)[0]
    pixels = padded["pixel_values"]  # 56x56: image rows 14..41, mean-colour bands above and below
    assert pixels.shape == (3, 56, 56)
    # Mean colour normalises to ~0 (up to its 8-bit truncation, as LLaVA's: 1 / 255 / std < 0.016).
    assert pixels[:, :12].abs().max() < 0.016 and pixels[:, -12:].abs().max() < 0.016
    assert torch.allclose(pixels[:, 18:38], red.expand(3, 20, 56), atol=0.02)

    # "square" crops the centre instead: no padding, red everywhere.
    cropped = CrocSupervisedDataset([row], with_image_aspect_ratio(processor, "square"), image_root=tmp_path)[0]
    assert torch.allclose(cropped["pixel_values"], red.expand(3, 56, 56), atol=0.02)
    with pytest.raises(ValueError, match="image_aspect_ratio"):
        with_image_aspect_ratio(processor, "anyres")


# --- collator -------------------------------------------------------------------------------------------------


def test_collator_mixed_batch_keeps_images_in_row_order(processor, tmp_path):
    rows = [
        _row(["<image>\nColour?", "Red."], _write_png(tmp_path, "red.png", colour=(255, 0, 0)), "img-red"),
        _row(["Say hi.", "Hi there, nice to meet you."], None, "text"),
        _row(["<image>\nColour?", "Blue."], _write_png(tmp_path, "blue.png", colour=(0, 0, 255)), "img-blue"),
    ]
    dataset = CrocSupervisedDataset(rows, processor, "vicuna_v1", image_root=tmp_path)
    samples = [dataset[i] for i in range(3)]
    batch = build_collator(processor)(samples)

    lengths = [len(sample["input_ids"]) for sample in samples]
    assert (
        batch["input_ids"].shape
        == batch["labels"].shape
        == batch["attention_mask"].shape
        == (3, max(lengths))
    )
    assert batch["pixel_values"].shape == (2, 3, 56, 56)
    assert torch.equal(batch["pixel_values"][0], samples[0]["pixel_values"])
    assert torch.equal(batch["pixel_values"][1], samples[2]["pixel_values"])
    assert batch["attention_mask"].sum(1).tolist() == lengths
    for row, sample in enumerate(samples):
        size = lengths[row]
        assert torch.equal(batch["input_ids"][row, :size], sample["input_ids"])
        assert torch.equal(batch["labels"][row, :size], sample["labels"])
        assert batch["input_ids"][row, size:].eq(processor.tokenizer.pad_token_id).all()
        assert batch["labels"][row, size:].eq(IGNORE_INDEX).all()

    # Left padding, rounding to a multiple; a text-only batch carries no pixel_values.
    left = CrocDataCollator(pad_token_id=0, padding_side="left", pad_to_multiple_of=64)([samples[1], samples[0]])
    assert left["input_ids"].shape == (2, 64) and "pixel_values" in left
    assert torch.equal(left["input_ids"][0, 64 - lengths[1] :], samples[1]["input_ids"])
    assert left["attention_mask"][0, : 64 - lengths[1]].eq(0).all()
    assert "pixel_values" not in build_collator(processor)([samples[1]])
    # The dataset replaces every row it cannot use; the collator never drops a row (a batch keeps its size).
    with pytest.raises(ValueError, match="returned None"):
        build_collator(processor)([samples[1], None])


# --- sampler --------------------------------------------------------------------------------------------------


def _mixed_lengths(count=203, seed=0):
    rng = np.random.default_rng(seed)
    return [
        int(n) if image else -int(n) for n, image in zip(rng.integers(1, 500, count), rng.random(count) < 0.6)
    ]


@pytest.mark.parametrize("world_size", [1, 2])
def test_sampler_never_mixes_modalities_and_covers_every_row(world_size):
    lengths, batch_size = _mixed_lengths(), 8
    sampler = ModalityGroupedSampler(lengths, batch_size, world_size, torch.Generator().manual_seed(0))
    order = list(sampler)
    assert len(order) == len(sampler) and len(order) % (batch_size * world_size) == 0
    assert set(order) == set(range(len(lengths)))
    assert (
        len(order) - len(lengths) < 2 * batch_size * world_size
    )  # only the last step of each modality is topped up
    for start in range(0, len(order), batch_size * world_size):  # one step = world_size device batches
        modalities = {lengths[index] > 0 for index in order[start : start + batch_size * world_size]}
        assert len(modalities) == 1


def test_sampler_is_deterministic_by_seed():
    lengths = _mixed_lengths()

    def order(seed, **kwargs):
        return list(
            ModalityGroupedSampler(lengths, 4, generator=torch.Generator().manual_seed(seed), **kwargs)
        )

    assert order(1) == order(1) and order(1) != order(2)
    sampler = ModalityGroupedSampler(lengths, 4, generator=torch.Generator().manual_seed(1))
    assert list(sampler) != list(sampler)  # the generator advances: a new order each epoch
    torch.manual_seed(3)
    first = list(ModalityGroupedSampler(lengths, 4))
    torch.manual_seed(3)
    assert list(ModalityGroupedSampler(lengths, 4)) == first
    # Length grouping: with megabatches of several steps, batches hold rows of similar length.
    grouped = order(1, megabatch_mult=8)
    spread = [np.ptp([abs(lengths[i]) for i in grouped[s : s + 4]]) for s in range(0, len(grouped), 4)]
    random = [np.ptp([abs(lengths[i]) for i in order(1)[s : s + 4]]) for s in range(0, len(grouped), 4)]
    assert np.mean(spread) < 0.5 * np.mean(random)


def test_sampler_balances_lengths_across_processes():
    lengths = [1000, 900, 10, 10, 5, 5, 1, 1]
    order = list(ModalityGroupedSampler(lengths, 4, world_size=2, generator=torch.Generator().manual_seed(0)))
    per_process = [sum(lengths[i] for i in order[:4]), sum(lengths[i] for i in order[4:])]
    # Longest first, each to the lighter process with room: {1000, 5, 1, 1} and {900, 10, 10, 5}, where a
    # contiguous split of the sorted step would give 1920 vs 12.
    assert sorted(per_process) == [925, 1007]


# --- laziness and modality lengths ----------------------------------------------------------------------------


def test_construction_is_lazy_over_100k_rows(processor, monkeypatch):
    def no_image_io(*args, **kwargs):
        raise AssertionError("image I/O during construction")

    monkeypatch.setattr(data_module, "load_image", no_image_io)  # the one image reader of the dataset
    count = 100_000
    table = datasets.Dataset.from_dict(
        {
            "id": [str(i) for i in range(count)],
            "image": [f"images/{i}.jpg" if i % 4 else None for i in range(count)],
            "conversations": [
                [
                    {"from": "human", "value": "<image>\nDescribe."},
                    {"from": "gpt", "value": "one two three" * (i % 3)},
                ]
                for i in range(count)
            ],
            "source": ["synthetic"] * count,
        }
    )
    dataset = CrocSupervisedDataset(table, processor, "vicuna_v1", image_root="/nonexistent/images")
    assert len(dataset) == count
    lengths = dataset.modality_lengths
    assert len(lengths) == count and sum(length > 0 for length in lengths) == count - count // 4
    # Words over all turns (the marker counts as one, as in LLaVA), + the image tokens for image rows.
    assert lengths[:4] == [-2, 5 + NUM_IMAGE_TOKENS, 7 + NUM_IMAGE_TOKENS, 2 + NUM_IMAGE_TOKENS]
    words = [(2, 5, 7)[i % 3] for i in range(count)]  # across Arrow batches (65536 rows each) too
    assert lengths == [w + NUM_IMAGE_TOKENS if i % 4 else -w for i, w in enumerate(words)]
    assert dataset[0]["pixel_values"] is None  # text rows never touch the disk
    with pytest.raises(AssertionError, match="image I/O"):
        dataset[1]


def test_modality_lengths_same_for_lists_and_arrow(processor):
    rows = [
        _row(["<image>\nA  b\tc", "d e"], "x.png"),
        _row(["", ""]),
        _row(["one", "two three"], ""),
        {"id": "none", "image": None, "conversations": []},
    ] * 5
    from_list = CrocSupervisedDataset(rows, processor).modality_lengths
    assert from_list[:4] == [6 + NUM_IMAGE_TOKENS, -1, -3, -1]
    table = datasets.Dataset.from_list(rows).shuffle(seed=0)  # an indices mapping, as after shuffle/select
    shuffled_rows = [table[i] for i in range(len(table))]
    assert CrocSupervisedDataset(table, processor).modality_lengths == (
        CrocSupervisedDataset(shuffled_rows, processor).modality_lengths
    )
