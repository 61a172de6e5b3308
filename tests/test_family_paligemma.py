"""What only the PaliGemma family does (the shared checks are `tests/test_families.py -k paligemma`): PaliGemma 1's
Gemma as well as PaliGemma 2's Gemma 2 under inference equal to the parent; `token_type_ids` honoured; span "prompt"
equal to PaliGemma's own prefix-LM mask on a global layer; span "none" causal on sdpa, where PaliGemma's text model
would otherwise attend both ways; stage 2 on croc_split keeping the prefix-LM mask."""

from __future__ import annotations

import copy

import pytest
import torch

from croc_testing.family_specs import SPECS_BY_NAME, inputs, layer_masks
from croc_testing.paligemma import make_paligemma_batch
from modeling_croc.convert import croc_to_llava
from modeling_croc.split_attention import SPLIT_ATTENTION

SPEC = SPECS_BY_NAME["paligemma"]


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("gemma", [1, 2])
def test_inference_is_the_parent_s_on_both_text_models_and_reads_token_type_ids(gemma: int):
    """Logits and greedy generate equal `PaliGemmaForConditionalGeneration`'s on Gemma (no logit soft-capping) and
    Gemma 2 (soft-capped); without `token_type_ids` the prefix is causal, so they change the logits."""
    croc = SPEC.build(config_kwargs={"gemma": gemma}).eval()
    assert (getattr(croc.config.text_config, "final_logit_softcapping", None) is None) == (gemma == 1)
    plain = croc_to_llava(croc)
    batch = inputs(SPEC.batch(croc, 2))
    with torch.no_grad():
        logits = croc(**batch).logits
        torch.testing.assert_close(logits, plain(**batch).logits, rtol=0, atol=0)
        causal = {name: value for name, value in batch.items() if name != "token_type_ids"}
        assert not torch.allclose(croc(**causal).logits, logits)
    generated = croc.generate(**batch, max_new_tokens=5, do_sample=False)
    assert torch.equal(generated, plain.generate(**batch, max_new_tokens=5, do_sample=False))


def test_prompt_span_is_the_prefix_lm_mask_on_a_global_layer():
    """On PaliGemma's rows (labels on the suffix only) span "prompt" makes exactly its prefix (token_type_ids 0) one
    block: the stage-1.5 mask of a global layer equals the one the parent builds from `token_type_ids`, at the real
    queries."""
    croc = SPEC.build(config_kwargs={"gemma": 1}, croc_pretraining=True, bidirectional_span="prompt").train()
    batch = SPEC.batch(croc, 2)
    with torch.no_grad():
        stage15 = layer_masks(croc, lambda: croc(**batch, croc_generator=_generator()))
        own = layer_masks(croc, lambda: croc(**batch, croc_objectives=False))
    real = batch["attention_mask"].bool()
    for index in stage15:
        allowed, expected = stage15[index][:, 0] == 0, own[index][:, 0] == 0
        for row in range(real.shape[0]):
            assert torch.equal(allowed[row][real[row]], expected[row][real[row]]), (index, row)
        assert torch.triu(allowed, diagonal=1)[real].any()


def test_span_none_stays_causal_on_sdpa():
    """PaliGemma's config turns its text model's `is_causal` off: sdpa given no mask would let every token see the
    later ones. Span "none" on unpadded rows hands it an explicit causal mask: a token's hidden state does not move
    when a later token changes."""
    croc = SPEC.build(config_kwargs={"gemma": 1}, croc_pretraining=True, bidirectional_span="none")
    croc.set_attn_implementation("sdpa")
    croc.train()
    batch = make_paligemma_batch(croc.config, [4, 4], [3, 3])
    assert batch["attention_mask"].all()
    changed = {**batch, "input_ids": batch["input_ids"].clone()}
    changed["input_ids"][:, -2] = 20
    with torch.no_grad():
        first = croc.model(**inputs(batch), labels=batch["labels"], croc_objectives=True,
                           croc_generator=_generator()).last_hidden_state
        second = croc.model(**inputs(changed), labels=batch["labels"], croc_objectives=True,
                            croc_generator=_generator()).last_hidden_state
    torch.testing.assert_close(second[:, :-2], first[:, :-2], rtol=0, atol=0)


def test_stage_2_on_croc_split_keeps_the_prefix_lm_mask():
    """PaliGemma 1's own forward makes its prefix (`token_type_ids` 0) bidirectional; a stage-2 training forward on
    croc_split computes the same attention as on sdpa (left-padded rows), as its inference does. PaliGemma 2's
    Gemma 2 is refused there in one line (`tests/test_families.py`'s split check)."""
    masked = SPEC.build(config_kwargs={"gemma": 1})
    masked.set_attn_implementation("sdpa")
    split = copy.deepcopy(masked)
    split.set_attn_implementation(SPLIT_ATTENTION)
    batch = SPEC.batch(masked, 1)
    real = batch["attention_mask"].bool()
    out_masked = masked.train()(**batch, croc_objectives=False)
    out_split = split.train()(**batch, croc_objectives=False)
    torch.testing.assert_close(out_split.loss, out_masked.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_split.logits[real], out_masked.logits[real], rtol=1e-5, atol=1e-5)
    causal = {name: value for name, value in batch.items() if name != "token_type_ids"}
    assert not torch.allclose(split.train()(**causal, croc_objectives=False).logits[real], out_split.logits[real])
