"""The split mixed attention (`modeling_croc.split_attention`, `attn_implementation="croc_split"`): no L x L mask, the
queries cut into segments each computed by one dense call.

* The segments, laid out as a dense matrix, are the mixed mask element by element: against the slow reference
  (padded rows, both spans, sliding windows) and against the mask path's own mask (packed rows).
* The CPU reference of the split (sdpa per segment) equals the mask path on every backbone pair of the matrix, both
  spans, padded and packed: loss, logits and every gradient (on every model family's layer layouts too:
  `tests/test_families.py`). The CUDA kernels are checked against the same mask path by the GPU check
  (`benchmarks/gpu_check.sh`, tests marked `cuda`).
* Stages 1 and 2 go through the segments too when training (packing pays there as well); inference and generation
  take transformers' sdpa path, with equal outputs. Gemma 2's soft-capped attention is refused.
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from transformers import AttentionInterface

from croc_testing.backbones import SLIDING_WINDOW, TEXT_BACKBONES, VISION_BACKBONES, backbone_fields
from croc_testing.batches import make_batch
from croc_testing.reference_masks import reference_allowed
from modeling_croc import CrocConfig, CrocForConditionalGeneration
from modeling_croc.attention_mask import bidirectional_block_ids, build_mixed_attention_mask
from modeling_croc.constants import IGNORE_INDEX
from modeling_croc.split_attention import (
    SEGMENTS_KEY,
    SPLIT_ATTENTION,
    build_attention_segments,
    segment_mask,
    split_attention_forward,
)

SPLIT_CAPABLE = [text for text in TEXT_BACKBONES if not TEXT_BACKBONES[text].get("attn_logit_softcapping")]
PAIRS = list(itertools.product(SPLIT_CAPABLE, VISION_BACKBONES))


def dense(segments, window=None) -> torch.BoolTensor:
    """The `(B, L, L)` pattern the segments compute: each segment's allowed pairs in its rows."""
    allowed = torch.zeros(segments.batch_size, segments.length, segments.length, dtype=torch.bool)
    for row, q_start, q_end, k_start, k_end, causal in segments.segments():
        mask = segment_mask(q_start, q_end, k_start, k_end, causal, window)
        allowed[row, q_start:q_end, k_start:k_end] = True if mask is None else mask
    return allowed


def _config(text: str, vision: str, attn: str = "sdpa", **croc_fields) -> CrocConfig:
    return CrocConfig(**backbone_fields(text, vision), attn_implementation=attn, prompt_pool_size=64, **croc_fields)


def _pair(config: CrocConfig, seed: int = 0):
    """The same weights twice: on the mask path (sdpa) and on the split path."""
    torch.manual_seed(seed)
    masked = CrocForConditionalGeneration(config)
    split = copy.deepcopy(masked)
    split.set_attn_implementation(SPLIT_ATTENTION)
    return masked, split


def _padded_batch(config, right: bool = False):
    batch = make_batch(config, rows=3, left_pad=2)
    if right:  # the same rows, padding moved to the right
        for key in ("input_ids", "attention_mask", "labels"):
            value = batch[key]
            pad = {"input_ids": 127, "attention_mask": 0, "labels": IGNORE_INDEX}[key]
            out = torch.full_like(value, pad)
            for row in range(value.shape[0]):
                kept = value[row][batch["attention_mask"][row].bool()]
                out[row, :kept.numel()] = kept
            batch[key] = out
    return batch


def _packed_batch(config):
    """Two samples packed into one row, then a padding tail that is a sequence of its own (the collator's layout):
    no attention_mask, positions restarting at every sample."""
    batch = make_batch(config, rows=2)
    length = batch["input_ids"].shape[1]
    tail = 3
    input_ids = torch.cat([batch["input_ids"][0], batch["input_ids"][1], torch.full((tail,), 127)])[None]
    labels = torch.cat([batch["labels"][0], batch["labels"][1], torch.full((tail,), IGNORE_INDEX)])[None]
    labels[0, length] = IGNORE_INDEX  # a sample's first label is never a target
    position_ids = torch.cat([torch.arange(length), torch.arange(length), torch.arange(tail)])[None]
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids,
            "pixel_values": batch["pixel_values"]}


# --- the segments ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("span", ["image", "prompt", "none"])
@pytest.mark.parametrize("window", [None, SLIDING_WINDOW])
@pytest.mark.parametrize("right", [False, True])
def test_segments_are_the_mixed_pattern_element_by_element(span, window, right):
    config = _config("llama", "clip")
    batch = _padded_batch(config, right=right)
    image_token_mask = batch["input_ids"] == config.image_token_id
    block_ids = bidirectional_block_ids(span, image_token_mask, batch["labels"], batch["attention_mask"])
    segments = build_attention_segments(batch["input_ids"].shape, block_ids, batch["attention_mask"])
    expected = reference_allowed(batch["input_ids"], batch["attention_mask"], batch["labels"], span,
                                 config.image_token_id, window)
    real = batch["attention_mask"].bool()
    got = dense(segments, window)
    # Every real query row is computed once, with exactly its keys; padded rows are in no segment.
    assert torch.equal(got[real], expected[real]) and not got[~real].any()
    rows_covered = torch.zeros_like(real, dtype=torch.long)
    for row, q_start, q_end, *_ in segments.segments():
        rows_covered[row, q_start:q_end] += 1
    assert torch.equal(rows_covered, real.long())


@pytest.mark.parametrize("span", ["image", "prompt", "none"])
@pytest.mark.parametrize("text", ["llama", "mistral", "gemma3_text"])
def test_packed_segments_are_the_mask_paths_mask(text, span):
    config = _config(text, "clip")
    batch = _packed_batch(config)
    image_token_mask = batch["input_ids"] == config.image_token_id
    block_ids = bidirectional_block_ids(span, image_token_mask, batch["labels"], None, batch["position_ids"])
    segments = build_attention_segments(batch["input_ids"].shape, block_ids, None, batch["position_ids"])
    embeds = torch.zeros(*batch["input_ids"].shape, 8)
    masks = build_mixed_attention_mask(config.text_config, embeds, None,
                                       block_ids if block_ids is not None else torch.full_like(image_token_mask, -1,
                                                                                               dtype=torch.long),
                                       batch["position_ids"])
    masks = masks if isinstance(masks, dict) else {"layer": masks}
    for kind, mask in masks.items():
        window = SLIDING_WINDOW if kind == "sliding_attention" or (kind == "layer" and text == "mistral") else None
        assert torch.equal(dense(segments, window)[0], mask[0, 0].bool()), kind


# --- the split against the mask path --------------------------------------------------------------------------


def _assert_same_step(masked, split, batch, real=None):
    out_masked = masked(**batch, croc_generator=torch.Generator().manual_seed(0))
    out_split = split(**batch, croc_generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out_split.loss, out_masked.loss, rtol=1e-5, atol=1e-6)
    for name in ("lm_loss", "vtr_loss"):
        if getattr(out_masked, name, None) is not None:
            torch.testing.assert_close(getattr(out_split, name), getattr(out_masked, name), rtol=1e-5, atol=1e-6)
    real = torch.ones(out_masked.logits.shape[:2], dtype=torch.bool) if real is None else real
    torch.testing.assert_close(out_split.logits[real], out_masked.logits[real], rtol=1e-5, atol=1e-5)
    out_masked.loss.backward()
    out_split.loss.backward()
    for (name, a), (_, b) in zip(masked.named_parameters(), split.named_parameters()):
        if a.grad is None:
            assert b.grad is None, name
            continue
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("span", ["image", "prompt"])
@pytest.mark.parametrize("text, vision", PAIRS)
def test_split_equals_the_mask_path_on_every_backbone_padded(text, vision, span):
    masked, split = _pair(_config(text, vision, croc_pretraining=True, bidirectional_span=span))
    batch = _padded_batch(masked.config)
    _assert_same_step(masked.train(), split.train(), batch, real=batch["attention_mask"].bool())


def test_split_equals_the_mask_path_with_images_back_to_back():
    """Two images with nothing between them (`<image><image>`) are two blocks that touch: the split's segments
    compute what the mask path's mask allows."""
    masked, split = _pair(_config("llama", "clip", croc_pretraining=True, bidirectional_span="image"))
    config = masked.config
    image = torch.full((config.image_seq_length,), config.image_token_id)
    input_ids = torch.cat([torch.tensor([1, 5]), image, image, torch.tensor([8, 9, 10])])[None]
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[0, -3:] = input_ids[0, -3:]
    size = config.vision_config.image_size
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels,
             "pixel_values": torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))}
    _assert_same_step(masked.train(), split.train(), batch)


@pytest.mark.parametrize("span", ["image", "prompt"])
@pytest.mark.parametrize("text", SPLIT_CAPABLE)
def test_split_equals_the_mask_path_on_every_language_model_packed(text, span):
    masked, split = _pair(_config(text, "clip", croc_pretraining=True, bidirectional_span=span))
    _assert_same_step(masked.train(), split.train(), _packed_batch(masked.config))


@pytest.mark.parametrize("packed", [False, True])
def test_split_equals_the_mask_path_under_gradient_checkpointing(packed):
    """Every decoder layer recomputed in the backward pass (gradient checkpointing) gets the segments again: the
    split path with checkpointing gives the mask path's step without it, on a sliding and a global layer."""
    masked, split = _pair(_config("qwen2", "siglip", croc_pretraining=True, bidirectional_span="image"))
    split.activation_checkpointing_enable()
    batch = _packed_batch(masked.config) if packed else _padded_batch(masked.config)
    recomputed = []
    AttentionInterface.register(SPLIT_ATTENTION, lambda *args, **kwargs: (
        recomputed.append(SEGMENTS_KEY in kwargs), split_attention_forward(*args, **kwargs))[1])
    try:
        _assert_same_step(masked.train(), split.train(), batch,
                          real=None if packed else batch["attention_mask"].bool())
    finally:
        AttentionInterface.register(SPLIT_ATTENTION, split_attention_forward)
    # Each layer ran twice (forward, then recomputed in backward), each time with the segments.
    layers = masked.config.text_config.num_hidden_layers
    assert recomputed.count(True) == 2 * layers


@pytest.mark.parametrize("packed", [False, True])
def test_stage_2_training_forwards_use_the_segments_and_build_no_mask(packed):
    masked, split = _pair(_config("qwen2", "siglip"))  # a sliding layer and a global one
    batch = _packed_batch(masked.config) if packed else _padded_batch(masked.config)
    calls = []

    def recording(module, query, key, value, attention_mask, **kwargs):
        shape = None if attention_mask is None else tuple(attention_mask.shape)
        calls.append((shape, SEGMENTS_KEY in kwargs, kwargs.get("sliding_window")))
        return split_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register(SPLIT_ATTENTION, recording)
    try:
        split.train()(**batch)
    finally:
        AttentionInterface.register(SPLIT_ATTENTION, split_attention_forward)
    # Every language-model layer got the segments and an empty placeholder, never an L x L mask; the vision tower
    # (which runs the same implementation, with no segments) got no mask at all.
    text_calls = [call for call in calls if call[1]]
    assert len(text_calls) == masked.config.text_config.num_hidden_layers
    assert all(shape[2:] == (0, 0) for shape, _, _ in text_calls)
    assert {window for _, _, window in text_calls} == {None, SLIDING_WINDOW}
    _assert_same_step(masked.train(), split, batch,
                      real=None if packed else batch["attention_mask"].bool())


def test_inference_and_generate_take_the_sdpa_path_with_equal_outputs():
    masked, split = _pair(_config("gemma3_text", "siglip2"))
    batch = {k: v for k, v in make_batch(masked.config, rows=2, left_pad=2).items() if k != "labels"}
    with torch.no_grad():
        torch.testing.assert_close(split.eval()(**batch).logits, masked.eval()(**batch).logits, rtol=0, atol=0)
        generated = split.generate(**batch, max_new_tokens=4, do_sample=False)
        assert torch.equal(generated, masked.generate(**batch, max_new_tokens=4, do_sample=False))


def test_soft_capped_attention_is_refused_in_one_line():
    """Gemma 2 caps its attention logits, which no croc_split path does: refused in training, and in inference and
    generation too (their sdpa path would silently drop the cap)."""
    config = _config("gemma2", "clip", attn="eager", croc_pretraining=True)
    torch.manual_seed(0)
    model = CrocForConditionalGeneration(config)
    model.set_attn_implementation(SPLIT_ATTENTION)
    batch = make_batch(model.config)
    with pytest.raises(ValueError, match="gemma2 soft-caps its attention logits"):
        model.train()(**batch, croc_generator=torch.Generator().manual_seed(0))
    plain = {key: value for key, value in batch.items() if key != "labels"}
    with torch.no_grad(), pytest.raises(ValueError, match="caps its attention logits"):
        model.eval()(**plain, croc_objectives=False)
    with torch.no_grad(), pytest.raises(ValueError, match="caps its attention logits"):
        model.generate(**plain, max_new_tokens=2, do_sample=False)


def test_non_contiguous_padding_is_refused():
    mask = torch.tensor([[1, 0, 1, 1]])
    with pytest.raises(ValueError, match="contiguous"):
        build_attention_segments(mask.shape, None, mask)


# --- the kernel path ------------------------------------------------------------------------------------------


def _varlen_as_documented(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1),
                          enable_gqa=False):
    """`torch.nn.attention.varlen.varlen_attn` written from its documentation, on any device: sequence i is queries
    [cu_seq_q[i], cu_seq_q[i+1]) against keys [cu_seq_k[i], cu_seq_k[i+1]), aligned bottom-right; `window_size`
    (left, right) keeps the keys from `left` before to `right` after each query's aligned position (-1: no limit)."""
    out = torch.empty_like(query)
    for i in range(len(cu_seq_q) - 1):
        q_start, q_end, k_start, k_end = (int(cu_seq_q[i]), int(cu_seq_q[i + 1]), int(cu_seq_k[i]),
                                          int(cu_seq_k[i + 1]))
        aligned = torch.arange(q_end - q_start)[:, None] + (k_end - k_start) - (q_end - q_start)
        keys = torch.arange(k_end - k_start)[None, :]
        allowed = torch.ones(q_end - q_start, k_end - k_start, dtype=torch.bool)
        if window_size[0] >= 0:
            allowed &= keys >= aligned - window_size[0]
        if window_size[1] >= 0:
            allowed &= keys <= aligned + window_size[1]
        attended = torch.nn.functional.scaled_dot_product_attention(
            query[q_start:q_end].transpose(0, 1)[None], key[k_start:k_end].transpose(0, 1)[None],
            value[k_start:k_end].transpose(0, 1)[None], attn_mask=allowed, scale=scale, enable_gqa=enable_gqa)
        out[q_start:q_end] = attended[0].transpose(0, 1)
    return out


def _varlen_without_gqa_flag(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
                             window_size=(-1, -1)):
    """The same semantics under PyTorch 2.11's signature, which has no `enable_gqa` (its kernel groups the query
    heads over fewer key/value heads by itself)."""
    assert return_aux is None
    return _varlen_as_documented(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, scale=scale,
                                 window_size=window_size, enable_gqa=key.shape[1] != query.shape[1])


@pytest.mark.parametrize("kernel", [_varlen_as_documented, _varlen_without_gqa_flag], ids=["torch2.13", "torch2.11"])
@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_the_kernel_plan_gathers_and_scatters_every_segment(layout, window, kernel, monkeypatch):
    """The varlen path's plumbing (token gathers, cumulative lengths, the two groups, window sizes, GQA, the scatter
    back) on the CPU, with the kernel replaced by its documented semantics, under the signature of PyTorch 2.13
    (`enable_gqa`) and of 2.11 (no such argument); the real kernel is checked on CUDA below."""
    from modeling_croc import split_attention

    monkeypatch.setattr("torch.nn.attention.varlen.varlen_attn", kernel)
    config = _config("llama", "clip")
    batch = _packed_batch(config) if layout == "packed" else _padded_batch(config)
    mask, positions = batch.get("attention_mask"), batch.get("position_ids")
    image_token_mask = batch["input_ids"] == config.image_token_id
    block_ids = bidirectional_block_ids("prompt", image_token_mask, batch["labels"], mask, positions)
    segments = build_attention_segments(batch["input_ids"].shape, block_ids, mask, positions)
    batch_size, length = batch["input_ids"].shape
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(batch_size, 4, length, 8, generator=generator)
    key, value = (torch.randn(batch_size, 2, length, 8, generator=generator) for _ in range(2))
    kernel = split_attention._varlen_kernels(query, key, value, segments, 0.3, window, 0.0)
    reference = split_attention._segment_reference(query, key, value, segments, 0.3, window, 0.0)
    torch.testing.assert_close(kernel, reference, rtol=1e-5, atol=1e-6)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="the varlen kernels run on CUDA")


@cuda
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("span", ["image", "prompt"])
@pytest.mark.parametrize("text", ["llama", "mistral", "qwen2", "gemma3_text"])
def test_cuda_varlen_kernels_equal_the_mask_path_in_bf16(text, span, packed):
    """The CUDA kernels (PyTorch's varlen FlashAttention) against the sdpa mask path, both in bf16: loss, logits and
    gradients within bf16 tolerance; GQA (Mistral, Qwen2, Gemma 3 have fewer KV heads) and sliding layers included."""
    config = CrocConfig(**backbone_fields(text, "clip", hidden_size=64), attn_implementation="sdpa",
                        prompt_pool_size=64, croc_pretraining=True, bidirectional_span=span)
    masked, split = _pair(config)
    masked, split = (model.to("cuda", torch.bfloat16).train() for model in (masked, split))
    batch = _packed_batch(config) if packed else _padded_batch(config)
    batch = {k: v.to("cuda") if v.dtype != torch.float32 else v.to("cuda", torch.bfloat16) for k, v in batch.items()}
    outs = [model(**batch, croc_generator=torch.Generator().manual_seed(0)) for model in (masked, split)]
    torch.testing.assert_close(outs[1].loss.float(), outs[0].loss.float(), rtol=2e-2, atol=2e-2)
    real = batch["attention_mask"].bool() if "attention_mask" in batch else slice(None)
    torch.testing.assert_close(outs[1].logits[real].float(), outs[0].logits[real].float(), rtol=5e-2, atol=5e-2)
    for out in outs:
        out.loss.backward()
    for (name, a), (_, b) in zip(masked.named_parameters(), split.named_parameters()):
        if a.grad is not None:
            error = (b.grad.float() - a.grad.float()).norm() / a.grad.float().norm().clamp_min(1e-6)
            assert error < 5e-2, (name, float(error))


# --- generation on a model left in train mode; Gemma 3's own image blocks outside stage 1.5 -------------------


@pytest.mark.parametrize("attn", ["sdpa", SPLIT_ATTENTION])
def test_generate_in_train_mode_runs_the_plain_model(attn):
    """`Trainer.train` leaves the model in train mode: a `generate` right after it (or in a callback) must be the
    plain model's, not the stage-1.5 forward (pool replacement, mixed attention; on croc_split a traceback at the
    first decode step)."""
    masked, split = _pair(_config("llama", "clip", croc_pretraining=True))
    model = split if attn == SPLIT_ATTENTION else masked
    batch = {k: v for k, v in make_batch(model.config, rows=2, left_pad=2).items() if k != "labels"}
    with torch.no_grad():
        expected = model.eval().generate(**batch, max_new_tokens=4, do_sample=False)
        assert torch.equal(model.train().generate(**batch, max_new_tokens=4, do_sample=False), expected)
        assert torch.equal(model.train().generate(**batch, max_new_tokens=4, do_sample=False, use_cache=False),
                           expected)
        assert torch.equal(model.train().generate(**batch, max_new_tokens=4, do_sample=False,
                                                  cache_implementation="static"), expected)


def test_a_training_forward_given_a_cache_keeps_the_objectives():
    """A labelled train-mode forward with a cache (PEFT's prefix tuning passes one) is training, not generation: the
    stage-1.5 path runs, with the loss of the same forward without the cache."""
    from transformers import DynamicCache

    model, _ = _pair(_config("llama", "clip", croc_pretraining=True))
    batch = make_batch(model.config, rows=2, left_pad=2)
    model.train()
    plain = model(**batch, croc_generator=torch.Generator().manual_seed(0))
    cached = model(**batch, cache=DynamicCache(config=model.config.text_config),
                   croc_generator=torch.Generator().manual_seed(0))
    assert cached.vtr_loss is not None and torch.equal(cached.replaced_token_mask, plain.replaced_token_mask)
    assert torch.allclose(cached.loss, plain.loss)


def test_gemma3_stage_2_split_keeps_gemma3s_image_blocks():
    """Gemma 3's own forward makes each image's tokens bidirectional (`token_type_ids`); a stage-2 training forward
    on croc_split computes the same attention as on sdpa, as its inference does."""
    from croc_testing.gemma3 import make_gemma3_batch, randomize_gemma3_projector, tiny_croc_gemma3_config
    from modeling_croc.modeling_croc_gemma3 import CrocGemma3ForConditionalGeneration

    torch.manual_seed(0)
    config = tiny_croc_gemma3_config(croc_pretraining=False)
    masked = CrocGemma3ForConditionalGeneration(config)
    randomize_gemma3_projector(masked)
    masked.set_attn_implementation("sdpa")
    split = copy.deepcopy(masked)
    split.set_attn_implementation(SPLIT_ATTENTION)
    batch = make_gemma3_batch(config, [1, 2], [5, 3], left_pad=1)
    _assert_same_step(masked.train(), split.train(), {**batch, "croc_objectives": False},
                      real=batch["attention_mask"].bool())
