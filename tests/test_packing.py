"""Packing: the collator's layout, and a packed batch against the same samples padded, for every stage and preset.

The samples come from `CrocSupervisedDataset` with each stage's real template (the `vicuna_v1` system prompt sits
before the image, which is what the `official` preset's "prompt" span covers) and the offline Llama tokenizer;
image rows of different lengths and text-only rows are mixed, and the budget is chosen so that first-fit puts a
later image before an earlier one (asserted), so the token masks have to follow `croc_image_order`.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import modeling_croc.stage15 as modeling_module  # where the stage-1.5 forward looks the VTR loss up
from croc_testing.backbones import backbone_fields
from croc_testing.tiny import FLEX_SIZES, LLAVA_VOCAB, TINY_SIZES, tiny_croc_config, tiny_croc_processor
from modeling_croc import IGNORE_INDEX, TEMPLATES, CrocConfig, CrocForConditionalGeneration
from modeling_croc.attention_mask import prompt_block_ids
from trainer.collator import DATA_REPORT_KEY, IMAGE_ORDER_KEY, CrocDataCollator, first_fit
from trainer.data import CrocSupervisedDataset
from trainer.stages import get_stage

PAD = LLAVA_VOCAB["pad_token_id"]
# Samples in the order a sampler would deliver them: (image?, words in the answer). With the longest sample as the
# budget, first-fit packs the fourth image next to the second, before the third (both templates), and text rows
# next to images: vicuna_v1 [0], [1, 3], [2, 4], [5]; plain (image rows only: stage 1 takes no text row) [0], [1, 3],
# [2].
ROWS = [(True, 160), (True, 80), (True, 70), (True, 2), (False, 3), (False, 8)]
WORDS = "red green blue small large square circle left right top bottom middle white image shape".split()


def test_first_fit_puts_each_sample_in_the_first_row_with_room():
    assert first_fit([5, 4, 3, 2, 6, 1], budget=8) == [[0, 2], [1, 3, 5], [4]]
    assert first_fit([5, 4, 3], budget=None) == [[0, 1, 2]]
    assert first_fit([9, 2], budget=8) == [[0], [1]]  # a sample longer than the budget gets a row of its own


@pytest.fixture(scope="module")
def processor():
    return tiny_croc_processor()


def _samples(processor, template: str, folder) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    rows = []
    for index, (image, words) in enumerate(ROWS):
        answer = " ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (words,), generator=generator)) + "."
        if not image and TEMPLATES[template].image_caption_only:  # stage 1 trains image rows only
            continue
        row = {"id": f"r{index}", "image": None, "source": "test",
               "conversations": [{"from": "human", "value": f"Question {index}?"}, {"from": "gpt", "value": answer}]}
        if image:
            name = f"{index}.png"
            Image.new("RGB", (56, 56), tuple(int(v) for v in torch.randint(256, (3,), generator=generator))).save(
                folder / name)
            row["image"] = name
            row["conversations"][0]["value"] = "<image>\n" + row["conversations"][0]["value"]
        rows.append(row)
    dataset = CrocSupervisedDataset(rows, processor, template, image_root=folder, model_max_length=512)
    samples = [dataset[i] for i in range(len(rows))]
    for sample in samples:
        # A label on the first token (LLaVA's BOS has none): unpadded it is never a target (transformers shifts the
        # labels), packed it would be predicted from the previous sample's last token unless the collator drops it.
        sample["labels"][0] = sample["input_ids"][0]
    return samples


def test_packed_layout(processor, tmp_path):
    samples = _samples(processor, "vicuna_v1", tmp_path)
    lengths = [len(sample["input_ids"]) for sample in samples]
    batch = CrocDataCollator(pad_token_id=PAD, packing=True)(samples)
    assert set(batch) == {"input_ids", "labels", "position_ids", "pixel_values", IMAGE_ORDER_KEY}
    rows, width = batch["input_ids"].shape
    assert width == max(lengths) and rows < len(samples)  # budget: the longest sample; fewer rows than padded

    # Walk each packed row by its position restarts and find every sample whole, in one place.
    found, image_samples = {}, [i for i, sample in enumerate(samples) if sample["pixel_values"] is not None]
    packed_images = []
    for row in range(rows):
        starts = (batch["position_ids"][row] == 0).nonzero().flatten().tolist() + [width]
        for start, end in zip(starts[:-1], starts[1:]):
            ids = batch["input_ids"][row, start:end]
            assert torch.equal(batch["position_ids"][row, start:end], torch.arange(end - start))
            matches = [i for i, sample in enumerate(samples) if torch.equal(sample["input_ids"], ids)]
            if not matches:  # the padding tail: pad ids, nothing supervised
                assert end == width and ids.eq(PAD).all() and batch["labels"][row, start:end].eq(IGNORE_INDEX).all()
                continue
            (index,) = matches
            found[index] = (row, start)
            expected_labels = samples[index]["labels"].clone()
            expected_labels[0] = IGNORE_INDEX  # the first token of a sample is never a target
            assert torch.equal(batch["labels"][row, start:end], expected_labels)
            if index in image_samples:
                packed_images.append(index)
    assert sorted(found) == list(range(len(samples)))
    # Images follow the packed rows; croc_image_order gives each one's rank in arrival order.
    assert packed_images != image_samples, "the budget must make first-fit reorder the images"
    assert batch[IMAGE_ORDER_KEY].tolist() == [image_samples.index(i) for i in packed_images]
    for k, index in enumerate(packed_images):
        assert torch.equal(batch["pixel_values"][k], samples[index]["pixel_values"])

    # Budgets: 0 is one row; a fixed budget bounds every row.
    one = CrocDataCollator(pad_token_id=PAD, packing=True, packing_max_length=0)(samples)
    assert one["input_ids"].shape == (1, sum(lengths)) and one[IMAGE_ORDER_KEY].tolist() == [0, 1, 2, 3]
    fixed = CrocDataCollator(pad_token_id=PAD, packing=True, packing_max_length=2 * max(lengths))(samples)
    assert fixed["input_ids"].shape[1] <= 2 * max(lengths) and fixed["input_ids"].shape[0] < rows
    text_only = CrocDataCollator(pad_token_id=PAD, packing=True)([s for s in samples if s["pixel_values"] is None])
    assert "pixel_values" not in text_only and IMAGE_ORDER_KEY not in text_only
    with pytest.raises(ValueError, match="right"):
        CrocDataCollator(pad_token_id=PAD, padding_side="left", packing=True)
    # The trainer's collator says how many rows a packed batch holds (its input_ids cannot).
    reported = CrocDataCollator(pad_token_id=PAD, packing=True, report_rows=True)(samples)
    assert reported[DATA_REPORT_KEY] == {"rows": len(samples), "replaced_rows": [], "truncated_rows": []}


def test_prompt_span_is_one_block_per_packed_sample():
    # Two samples packed in a row, then a padding tail: each sample's tokens before its first target form a block
    # of their own, numbered by the sample; targets and later tokens stay causal. A label on a sample's first token
    # (never a target) does not end its block.
    labels = torch.tensor([[9, -100, 5, 6, 9, -100, -100, 7, -100, -100]])
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 0, 1]])
    blocks = prompt_block_ids(labels, None, position_ids=positions)
    assert blocks.tolist() == [[0, 0, -1, -1, 1, 1, 1, -1, 2, 2]]
    # With a 2D mask nothing is packed (as in transformers' detection): the first target ends the row's block.
    padded = prompt_block_ids(labels, torch.ones_like(labels), position_ids=positions)
    assert padded.tolist() == [[0, 0] + [-1] * 8]


def _model(stage: str, preset: str, attn: str, sizes: dict | None = None) -> CrocForConditionalGeneration:
    croc_fields = {"croc_preset": preset, "croc_pretraining": get_stage(stage).croc_pretraining}
    if preset == "official":
        # The VTR head's dropout is the one random op besides the token masks; its draws follow the order of the
        # images in the batch, which packing changes, so it is off for an exact comparison.
        croc_fields["vtr_head_dropout"] = 0.0
    config = tiny_croc_config(**LLAVA_VOCAB, **(sizes or TINY_SIZES), attn_implementation=attn, **croc_fields)
    torch.manual_seed(0)
    return CrocForConditionalGeneration(config).train()


def _assert_every_sample_matches(out, reference, packed, samples) -> None:
    """Every sample's logits, and so its loss, whatever row and offset it was packed at, against its padded row."""
    found = 0
    for row in range(packed["input_ids"].shape[0]):
        starts = (packed["position_ids"][row] == 0).nonzero().flatten().tolist() + [packed["input_ids"].shape[1]]
        for start, end in zip(starts[:-1], starts[1:]):
            matches = [i for i, s in enumerate(samples) if torch.equal(s["input_ids"], packed["input_ids"][row, start:end])]
            if not matches:  # the padding tail of a packed row
                continue
            (index,) = matches
            found += 1
            expected = reference.logits[index, :end - start]
            torch.testing.assert_close(out.logits[row, start:end], expected, rtol=1e-4, atol=1e-5)
            labels = samples[index]["labels"]
            torch.testing.assert_close(_sample_loss(out.logits[row, start:end], labels),
                                       _sample_loss(expected, labels), rtol=1e-5, atol=1e-5)
    assert found == len(samples)


def _run(model, batch, vtr_calls):
    model.zero_grad(set_to_none=True)
    vtr_calls.clear()
    out = model(**batch, croc_generator=torch.Generator().manual_seed(7))
    out.loss.backward()
    grads = {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}
    return out, grads


def _sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:-1].float(), labels[1:], ignore_index=IGNORE_INDEX, reduction="sum")


@pytest.mark.parametrize("stage, preset, attn", [
    *((stage, preset, "sdpa") for stage in ("1", "1.5", "2") for preset in ("paper", "official")),
    ("1.5", "official", "eager"),
])
def test_packed_batch_equals_padded_batch(processor, tmp_path, monkeypatch, stage, preset, attn):
    samples = _samples(processor, get_stage(stage).template, tmp_path)
    padded = CrocDataCollator(pad_token_id=PAD)(samples)
    packed = CrocDataCollator(pad_token_id=PAD, packing=True)(samples)
    order = packed[IMAGE_ORDER_KEY]
    assert order.tolist() != sorted(order.tolist()), "first-fit must reorder the images for this test to bite"

    vtr_calls = []
    real_vtr_loss = modeling_module.visual_token_reconstruction_loss

    def recording_vtr_loss(predictions, targets, positions, **kwargs):
        vtr_calls.append((predictions, targets, positions, kwargs))
        return real_vtr_loss(predictions, targets, positions, **kwargs)

    monkeypatch.setattr(modeling_module, "visual_token_reconstruction_loss", recording_vtr_loss)
    model = _model(stage, preset, attn)
    reference, reference_grads = _run(model, padded, vtr_calls)
    reference_vtr = list(vtr_calls)
    out, grads = _run(model, packed, vtr_calls)

    _assert_every_sample_matches(out, reference, packed, samples)
    for name in ("loss", "lm_loss", "vtr_loss"):
        if getattr(reference, name) is None:
            assert getattr(out, name) is None
            continue
        torch.testing.assert_close(getattr(out, name), getattr(reference, name), rtol=1e-5, atol=1e-6)

    if get_stage(stage).croc_pretraining:
        # Per image: the same token mask, pool assignment and VTR loss as unpacked (packed image k is the
        # order[k]-th image of the padded batch).
        assert reference.vtr_loss > 0
        torch.testing.assert_close(out.replaced_token_mask, reference.replaced_token_mask[order])
        torch.testing.assert_close(out.pool_ids, reference.pool_ids[order])
        (ref_pred, ref_target, ref_positions, kwargs), (pred, target, positions, _) = reference_vtr[0], vtr_calls[0]
        for k, j in enumerate(order.tolist()):
            torch.testing.assert_close(
                real_vtr_loss(pred[k:k + 1], target[k:k + 1], positions[k:k + 1], **kwargs),
                real_vtr_loss(ref_pred[j:j + 1], ref_target[j:j + 1], ref_positions[j:j + 1], **kwargs),
                rtol=1e-5, atol=1e-6)

    assert set(grads) == set(reference_grads) and len(grads) > 10
    for name, grad in reference_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("preset", ["paper", "official"])
@pytest.mark.parametrize("text", ["mistral", "gemma3_text"])
def test_packed_batch_equals_padded_batch_on_sliding_layers(processor, tmp_path, text, preset):
    """Sliding layers (Mistral's everywhere, Gemma 3's every other layer) with both spans: every packed sample sees
    what it sees alone, its image or prompt block inside its window and nothing of the samples packed before it.
    transformers evaluates a mask's extra functions at each packed sample's restarted positions, where the block ids
    of the row's first sample sit, so the blocks are put on the row's own indices here (`attention_mask.py`)."""
    samples = _samples(processor, get_stage("1.5").template, tmp_path)
    padded = CrocDataCollator(pad_token_id=PAD)(samples)
    packed = CrocDataCollator(pad_token_id=PAD, packing=True)(samples)
    croc_fields = {"vtr_head_dropout": 0.0} if preset == "official" else {}
    config = CrocConfig(**backbone_fields(text, "clip", vocab_size=LLAVA_VOCAB["vocab_size"]), croc_preset=preset,
                        croc_pretraining=True, prompt_pool_size=64, attn_implementation="sdpa", **croc_fields)
    assert config.image_token_id == LLAVA_VOCAB["image_token_id"] and max(map(len, padded["input_ids"])) > 8
    torch.manual_seed(0)
    model = CrocForConditionalGeneration(config).train()
    with torch.no_grad():
        reference = model(**padded, croc_generator=torch.Generator().manual_seed(7))
        out = model(**packed, croc_generator=torch.Generator().manual_seed(7))
    _assert_every_sample_matches(out, reference, packed, samples)


def test_packed_batch_without_cache_and_refused_on_flash_with_several_rows(processor, tmp_path):
    samples = _samples(processor, "vicuna_v1", tmp_path)
    packed = CrocDataCollator(pad_token_id=PAD, packing=True)(samples)
    model = _model("2", "paper", "sdpa")
    with pytest.raises(ValueError, match="cannot use a cache"):
        model(**packed, use_cache=True)
    model.config.text_config._attn_implementation_internal = "flash_attention_2"
    with pytest.raises(ValueError, match="one-row batch"):
        model(**packed)



@pytest.mark.parametrize("preset", ["paper", "official"])
def test_flex_attention_packed_forward_equals_sdpa_padded(processor, tmp_path, preset):
    """flex_attention builds its own BlockMask from the same packed layout (positions + blocks); its forward runs
    on the CPU (its backward does not: the CUDA test below covers it), so the mask it builds is checked here."""
    samples = _samples(processor, "vicuna_v1", tmp_path)
    padded = CrocDataCollator(pad_token_id=PAD)(samples)
    packed = CrocDataCollator(pad_token_id=PAD, packing=True)(samples)
    with torch.no_grad():
        reference = _model("1.5", preset, "sdpa")(**padded, croc_generator=torch.Generator().manual_seed(7))
        out = _model("1.5", preset, "flex_attention")(**packed, croc_generator=torch.Generator().manual_seed(7))
    for name in ("loss", "lm_loss", "vtr_loss"):
        torch.testing.assert_close(getattr(out, name), getattr(reference, name), rtol=1e-5, atol=1e-5)
    _assert_every_sample_matches(out, reference, packed, samples)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex_attention has no backward on CPU")
@pytest.mark.parametrize("stage, preset", [("1.5", "paper"), ("1.5", "official"), ("2", "paper")])
def test_flex_packed_batch_equals_sdpa_padded_batch_on_cuda(processor, tmp_path, stage, preset):
    """The GPU path of a packed run: flex_attention's BlockMask for packed samples with the image / prompt blocks,
    against sdpa on the padded batch (the reference the CPU tests pin down); float32 on the GPU."""
    samples = _samples(processor, get_stage(stage).template, tmp_path)
    batches = {"sdpa": CrocDataCollator(pad_token_id=PAD)(samples),
               "flex_attention": CrocDataCollator(pad_token_id=PAD, packing=True, packing_max_length=0)(samples)}
    results = {}
    for attn, batch in batches.items():
        model = _model(stage, preset, attn, FLEX_SIZES).cuda()
        out, grads = _run(model, {key: value.cuda() for key, value in batch.items()}, [])
        results[attn] = (out, grads)
    (reference, reference_grads), (out, grads) = results["sdpa"], results["flex_attention"]
    for name in ("loss", "lm_loss", "vtr_loss"):
        if getattr(reference, name) is not None:
            torch.testing.assert_close(getattr(out, name), getattr(reference, name), rtol=1e-4, atol=1e-4)
    for name, grad in reference_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.parametrize("pool", [20, 24])
@pytest.mark.parametrize("packing_max_length", [None, 0])
def test_row_scope_matching_stays_per_sample_when_packed(processor, tmp_path, packing_max_length, pool):
    """`matching_scope="row"` (the `victor` preset: one Hungarian problem per sample, as ViCToR's llava_arch.py)
    solves each sample's problem on its own in a packed row too: packed with others (one row per micro-batch on
    FlashAttention or with `packing_max_length=0`), the samples' masked tokens must not become one one-to-one problem,
    which assigns differently and is refused outright once they outnumber the pool."""
    samples = _samples(processor, get_stage("1.5").template, tmp_path)
    padded = CrocDataCollator(pad_token_id=PAD)(samples)
    packed = CrocDataCollator(pad_token_id=PAD, packing=True, packing_max_length=packing_max_length)(samples)
    order = packed[IMAGE_ORDER_KEY]
    # 12 masked tokens per image: a pool of 20 holds one image's, not two images'; in a pool of 24 two images
    # compete for the same pool tokens.
    config = tiny_croc_config(**LLAVA_VOCAB, **TINY_SIZES, attn_implementation="sdpa", croc_preset="victor",
                              croc_pretraining=True, prompt_pool_size=pool)
    torch.manual_seed(0)
    model = CrocForConditionalGeneration(config).train()
    generator = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    with torch.no_grad():
        reference = model(**padded, croc_generator=generator())
        out = model(**packed, croc_generator=generator())
    torch.testing.assert_close(out.pool_ids, reference.pool_ids[order])
    torch.testing.assert_close(out.loss, reference.loss, rtol=1e-5, atol=1e-6)


def test_packed_tokens_mask_drops_only_the_padding_tail(processor, tmp_path):
    """What `include_num_input_tokens_seen=non_padding` counts of a packed batch (it has no attention_mask): every
    sample's tokens, the padding tail of each row not. A sample ending in an EOS that is also the pad id (Vicuna's
    `</s>` where a conversion set pad = EOS) keeps it: read off the pad id alone, that token went uncounted."""
    from trainer.croc_trainer import packed_tokens_mask

    samples = _samples(processor, "vicuna_v1", tmp_path)
    eos = processor.tokenizer.eos_token_id
    assert all(sample["input_ids"][-1] == eos for sample in samples)
    for budget in (None, 70, 100):
        collator = CrocDataCollator(pad_token_id=eos, packing=True, packing_max_length=budget, pad_to_multiple_of=64)
        batch = collator(samples)
        mask = packed_tokens_mask(batch["input_ids"], batch["position_ids"], eos)
        assert int(mask.sum()) == sum(len(sample["input_ids"]) for sample in samples), budget
        assert batch["input_ids"].numel() > int(mask.sum())  # there is a tail to leave out
