"""What only Gemma 4 does on the shared mechanism (the checks every family passes are `tests/test_families.py`): the
per-layer inputs of a replaced position are the parent's at an image position; its image-bidirectional mask
(sliding layers only) against stage 1.5's span "image" (every layer); audio refused in stage 1.5 and passed through
untouched at inference, videos refused; soft-capped logits and KV-shared layers as the parent computes them; what
it cannot train refused in one line.
"""

from __future__ import annotations

import pytest
import torch

from croc_testing.family_specs import SPECS_BY_NAME, inputs, language_model_inputs, layer_masks
from croc_testing.gemma4 import GEMMA4_TOKENS, tiny_croc_gemma4_config
from modeling_croc import CrocGemma4ForConditionalGeneration
from modeling_croc.configuration_croc import CrocConfigError
from modeling_croc.convert import croc_to_llava
from modeling_croc.split_attention import SPLIT_ATTENTION

SPEC = SPECS_BY_NAME["gemma4"]


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_per_layer_inputs_of_a_replaced_position_are_the_parents_at_an_image_position():
    """The parent reads every image placeholder as padding for the token part of its per-layer inputs (then adds a
    projection of the merged embeddings inside its text model). The stage-1.5 forward gives its language model the
    same token part at every position: a replaced position's is the padding token's, not the placeholder's."""
    croc = SPEC.build(croc_pretraining=True).train()
    batch = SPEC.batch(croc, 2)
    with language_model_inputs(croc) as calls, torch.no_grad():
        croc(**inputs(batch), croc_objectives=False)
        out = croc.model(**inputs(batch), labels=batch["labels"], croc_objectives=True, croc_generator=_generator())
    plain, stage15 = (call["per_layer_inputs"] for call in calls)
    assert out.replaced_token_mask.any()
    torch.testing.assert_close(stage15, plain, rtol=0, atol=0)
    text_model = croc.model.language_model
    image_positions = batch["input_ids"] == croc.config.image_token_id
    table = text_model.get_per_layer_inputs(torch.tensor([[GEMMA4_TOKENS["pad_token_id"],
                                                           croc.config.image_token_id]]))
    pad_row, placeholder_row = table[0, 0], table[0, 1]
    assert torch.equal(stage15[image_positions], pad_row.expand_as(stage15[image_positions]))
    assert not torch.equal(pad_row, placeholder_row)


def test_image_span_mask_against_gemma4s_own_image_mask():
    """Gemma 4 makes an image's placeholders bidirectional on its sliding layers only (`use_bidirectional_attention=
    "vision"` with `mm_token_type_ids`); span "image" on every layer, as Croc's method: on the sliding layer the
    stage-1.5 mask is Gemma 4's own element by element; on the global layer Gemma 4's is causal and Croc's adds the
    image blocks (the first image token sees the image's last one)."""
    croc = SPEC.build(croc_pretraining=True, bidirectional_span="image").train()
    batch = SPEC.batch(croc, 2)
    assert croc.config.text_config.layer_types == ["sliding_attention", "full_attention"]
    with torch.no_grad():
        own = layer_masks(croc, lambda: croc(**inputs(batch), croc_objectives=False))
        mixed = layer_masks(croc, lambda: croc(**batch, croc_generator=_generator()))
    real = batch["attention_mask"].bool()
    for row in range(real.shape[0]):
        assert torch.equal(mixed[0][row, 0][real[row]][:, real[row]], own[0][row, 0][real[row]][:, real[row]]), row
    first = int((batch["input_ids"][0] == croc.config.image_token_id).nonzero()[0])
    last = first + 3  # the first image's 4 tokens
    assert own[0][0, 0, first, last] == 0 and mixed[0][0, 0, first, last] == 0
    assert own[1][0, 0, first, last] != 0 and mixed[1][0, 0, first, last] == 0


def _audio_batch(config) -> dict[str, torch.Tensor]:
    # One row: <bos> <boa> 10 audio placeholders <eoa> then text; 40 frames of 8 mel bins give 10 audio tokens.
    generator = torch.Generator().manual_seed(0)
    ids = [GEMMA4_TOKENS["bos_token_id"], config.boa_token_id, *[config.audio_token_id] * 10,
           config.eoa_token_index, *torch.randint(10, 140, (5,), generator=generator).tolist()]
    input_ids = torch.tensor([ids])
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "input_features": torch.randn(1, 40, 8, generator=generator),
            "input_features_mask": torch.ones(1, 40, dtype=torch.bool)}


def test_audio_passes_through_at_inference_and_is_refused_in_stage15():
    """Audio reaches the parent's audio tower untouched at inference (logits equal the parent's, and differ from
    the audio-less forward); a stage-1.5 forward with audio, as features or precomputed outputs, is refused."""
    torch.manual_seed(0)
    config = tiny_croc_gemma4_config(audio=True, croc_pretraining=True)
    config._attn_implementation = "eager"
    croc = CrocGemma4ForConditionalGeneration(config).eval()
    plain = croc_to_llava(croc)
    batch = _audio_batch(config)
    with torch.no_grad():
        logits = croc(**batch).logits
        torch.testing.assert_close(logits, plain(**batch).logits, rtol=0, atol=0)
        silent = {**batch, "input_features": torch.zeros_like(batch["input_features"])}
        assert not torch.allclose(croc(**silent).logits, logits)
    croc.train()
    with pytest.raises(ValueError, match="stage 1.5 trains on images; this batch has audio"):
        croc(**batch, labels=batch["input_ids"])
    audio_outputs = croc.model.get_audio_features(batch["input_features"], batch["input_features_mask"])
    with pytest.raises(ValueError, match="stage 1.5 trains on images; this batch has audio"):
        croc(input_ids=batch["input_ids"], mm_encoder_outputs={"audio": audio_outputs}, labels=batch["input_ids"])


def test_videos_are_refused_in_stage15():
    croc = SPEC.build(croc_pretraining=True).train()
    batch = SPEC.batch(croc, 2)
    with pytest.raises(ValueError, match="stage 1.5 trains on images"):
        croc(**batch, pixel_values_videos=batch["pixel_values"], video_position_ids=batch["image_position_ids"],
             num_frames_per_video=torch.tensor([3]))


def test_logits_are_soft_capped_as_the_parents():
    """Gemma 4 soft-caps its logits (`final_logit_softcapping`, 30 in the tiny config, as in the checkpoints): the
    Croc head does too, so the uncapped logits differ from the parent's; the fused LM loss, which has no cap, is
    refused in one line."""
    croc = SPEC.build().eval()
    batch = inputs(SPEC.batch(croc, 2))
    with torch.no_grad():
        capped = croc(**batch).logits
        croc.croc_final_logit_softcapping = False
        uncapped = croc(**batch).logits
    torch.testing.assert_close(capped, torch.tanh(uncapped / 30.0) * 30.0, rtol=0, atol=0)
    assert not torch.allclose(capped, uncapped)
    croc = SPEC.build(croc_pretraining=True).train()
    croc.fused_lm_loss = True
    with pytest.raises(ValueError, match="fused LM loss .* no final logit soft-capping"):
        croc(**SPEC.batch(croc, 2), croc_generator=_generator())


def test_kv_shared_layers_keep_the_parents_logits_and_generation():
    """With KV-shared layers (Gemma 4 E2B / E4B) the parent gives its text model `logits_to_keep`, which then computes
    only those positions from the first shared layer on: Croc passes it too, so a prefill's last logits and greedy
    generation equal the parent's exactly; a stage-1.5 step keeps every position (the VTR loss reads them)."""
    torch.manual_seed(0)
    config = tiny_croc_gemma4_config()
    config.text_config.num_hidden_layers = 4
    config.text_config.layer_types = ["sliding_attention", "full_attention"] * 2
    config.text_config.num_kv_shared_layers = 2
    config = type(config)(**config.to_dict())
    config._attn_implementation = "eager"
    croc = CrocGemma4ForConditionalGeneration(config).eval()
    plain = croc_to_llava(croc)
    batch = inputs(SPEC.batch(croc, 2))
    with torch.no_grad():
        last = croc(**batch, logits_to_keep=1).logits
        assert last.shape[1] == 1
        torch.testing.assert_close(last, plain(**batch, logits_to_keep=1).logits, rtol=0, atol=0)
    assert torch.equal(croc.generate(**batch, max_new_tokens=5, do_sample=False),
                       plain.generate(**batch, max_new_tokens=5, do_sample=False))
    croc.config.croc_pretraining = True
    out = croc.train()(**SPEC.batch(croc, 2), croc_generator=_generator())
    assert out.logits.shape[1] == batch["input_ids"].shape[1] and out.vtr_loss > 0


def test_what_it_cannot_train_is_refused_with_one_line():
    """A fully bidirectional Gemma 4 (`use_bidirectional_attention="all"`) has no causal model to pretrain; croc_split
    in stages 1 and 2 cannot keep Gemma 4's image blocks to its sliding layers. (Packed rows: the shared suite.)"""
    fields = tiny_croc_gemma4_config().to_dict()
    fields["text_config"]["use_bidirectional_attention"] = "all"
    with pytest.raises(CrocConfigError, match="use_bidirectional_attention='all' is not causal"):
        type(tiny_croc_gemma4_config())(**fields)
    croc = SPEC.build().train()
    batch = SPEC.batch(croc, 0)
    croc.set_attn_implementation(SPLIT_ATTENTION)
    with pytest.raises(ValueError, match="croc_split would make Gemma 4's image blocks bidirectional"):
        croc(**batch)
    # Without mm_token_type_ids Gemma 4's own forward is causal: croc_split trains it.
    assert croc(**{name: value for name, value in batch.items() if name != "mm_token_type_ids"}).loss > 0
