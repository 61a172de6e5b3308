"""Croc on LLaVA-OneVision (AnyRes): images with different numbers of visual tokens in one batch.

Inference equals `LlavaOnevisionForConditionalGeneration` on shared weights; stage 1.5 masks, matches (exactly,
against scipy per image or per row) and reconstructs each image with its own count, batched; the step-wide VTR count
the trainer uses equals what the forward reconstructs; Auto classes, saving and export to `llava_onevision`.
"""

from __future__ import annotations

import json

import pytest
import torch
from scipy.optimize import linear_sum_assignment
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    LlavaOnevisionForConditionalGeneration,
)

from croc_testing.backbones import backbone_fields
from croc_testing.batches import make_anyres_batch
from croc_testing.family_specs import layer_masks
from croc_testing.reference_masks import reference_allowed
from modeling_croc import CrocOnevisionConfig, CrocOnevisionForConditionalGeneration, CrocOnevisionModel
from modeling_croc.convert import croc_to_llava, export_llava_folder

# 28-px views of 14-px patches: 4 tokens per view; grids up to 2 x 2 views.
PINPOINTS = [[28, 28], [28, 56], [56, 28], [56, 56]]
# (height, width): wide, tall, square, large: 2, 3, 2 and 5 crops, unpadded to different token counts.
SIZES = [[20, 50], [60, 30], [28, 28], [90, 80]]


def _config(text: str = "qwen2", vision: str = "siglip", **croc_fields) -> CrocOnevisionConfig:
    fields = backbone_fields(text, vision)
    fields["vision_config"].update(image_size=28, patch_size=14)
    croc_fields.setdefault("prompt_pool_size", 64)
    return CrocOnevisionConfig(**fields, image_grid_pinpoints=PINPOINTS, attn_implementation="eager", **croc_fields)


def _model(config, seed: int = 0) -> CrocOnevisionForConditionalGeneration:
    torch.manual_seed(seed)
    return CrocOnevisionForConditionalGeneration(config)


def _batch(model, images_per_row=(1, 1, 1), sizes=SIZES[:3], left_pad: int = 2, seed: int = 0):
    counts = model.image_token_counts(None, len(sizes), image_sizes=torch.tensor(sizes))
    return make_anyres_batch(model.config, sizes, counts, list(images_per_row), left_pad=left_pad, seed=seed), counts


def test_images_of_one_batch_have_different_token_counts():
    model = _model(_config())
    _, counts = _batch(model)
    assert len(set(counts.tolist())) == 3, counts
    # The counts come from OneVision's own packing: the forward consumes exactly that many image tokens.
    batch, _ = _batch(model)
    features = model.model.croc_image_features(batch["pixel_values"], batch["image_sizes"])
    assert [f.shape[0] for f in features] == counts.tolist()


@pytest.mark.parametrize("text, vision", [("qwen2", "siglip"), ("llama", "clip"), ("gemma2", "siglip2")])
def test_inference_equals_llava_onevision_on_shared_weights(text, vision):
    croc = _model(_config(text, vision)).eval()
    plain = croc_to_llava(croc)
    assert type(plain) is LlavaOnevisionForConditionalGeneration
    batch, _ = _batch(croc)
    batch.pop("labels")
    with torch.no_grad():
        torch.testing.assert_close(croc(**batch).logits, plain(**batch).logits, rtol=0, atol=0)
    settings = {"max_new_tokens": 3, "do_sample": False, "pad_token_id": croc.config.text_config.pad_token_id}
    torch.testing.assert_close(croc.generate(**batch, **settings), plain.generate(**batch, **settings), rtol=0, atol=0)


def _scipy_cost(queries: torch.Tensor, pool: torch.Tensor) -> float:
    costs = torch.cdist(queries.double(), pool.double()).numpy()
    rows, cols = linear_sum_assignment(costs)
    return float(costs[rows, cols].sum())


def _assigned_cost(queries: torch.Tensor, pool: torch.Tensor, ids: torch.Tensor) -> float:
    return float((queries.double() - pool.double()[ids]).norm(dim=-1).sum())


@pytest.mark.parametrize("scope", ["image", "row"])
def test_stage15_with_different_token_counts(scope):
    """Each image: its own masked count (from its own token count), replaced positions only among its tokens,
    an exact one-to-one assignment per matching group (scipy's optimum on the unpadded problem), and the VTR over
    every image position; all in one batched forward."""
    config = _config(croc_preset="victor", matching_scope=scope, croc_pretraining=True)
    croc = _model(config).train()
    # Two images in the first row, so "row" groups differ from "image" groups.
    batch, counts = _batch(croc, images_per_row=(2, 1, 1), sizes=SIZES)
    out = croc(**batch, croc_generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(out.loss) and out.vtr_loss > 0 and out.lm_loss > 0

    masked = torch.tensor([count - count // 4 for count in counts.tolist()])  # ViCToR: a quarter kept, floored
    assert config.num_masked_tokens_per_image(counts).tolist() == masked.tolist()
    assert out.visual_token_mask.sum(1).tolist() == counts.tolist()
    assert out.replaced_token_mask.sum(1).tolist() == masked.tolist()
    assert not (out.replaced_token_mask & ~out.visual_token_mask).any()
    assert ((out.pool_ids >= 0).sum(1) == masked).all()

    pool = croc.prompt_pool.weight.detach()
    queries = [tokens[replaced].detach() for tokens, replaced in zip(out.visual_tokens, out.replaced_token_mask)]
    ids = [row[row >= 0] for row in out.pool_ids]
    groups = [[0, 1], [2], [3]] if scope == "row" else [[0], [1], [2], [3]]
    for group in groups:
        group_queries = torch.cat([queries[i] for i in group])
        group_ids = torch.cat([ids[i] for i in group])
        assert len(set(group_ids.tolist())) == len(group_ids), "one-to-one within the group"
        assert _assigned_cost(group_queries, pool, group_ids) == pytest.approx(_scipy_cost(group_queries, pool),
                                                                               rel=1e-5)
    # The step-wide count the trainer normalises by: every image position ("all"), image by image.
    layout = {"image_sizes": batch["image_sizes"]}
    assert croc.num_vtr_items(batch["input_ids"], len(SIZES), **layout) == int(counts.sum()) == int(out.vtr_norm_sums[2])

    out.loss.backward()
    assigned = torch.zeros(config.prompt_pool_size, dtype=torch.bool)
    assigned[torch.cat(ids)] = True
    grads = croc.prompt_pool.weight.grad.abs().sum(-1)
    assert grads[assigned].gt(0).all() and grads[~assigned].eq(0).all()
    assert croc.vtr_head.proj.weight.grad.abs().sum() > 0


def test_images_back_to_back_are_each_their_own_block():
    """`<image><image>` leaves nothing between two images' placeholders: each image is still its own bidirectional
    block (`span="image"`), element by element against the slow reference told each image's token count; a run of
    placeholders made both one block, image 1 reading image 2's later tokens."""
    croc = _model(_config(croc_pretraining=True, bidirectional_span="image")).train()
    sizes = SIZES[:3]
    counts = croc.image_token_counts(None, len(sizes), image_sizes=torch.tensor(sizes))
    batch = make_anyres_batch(croc.config, sizes, counts, [2, 1], left_pad=2, adjacent=True)
    with torch.no_grad():
        received = layer_masks(croc, lambda: croc(**batch, croc_generator=torch.Generator().manual_seed(0)))
    text_config = croc.config.text_config
    real = batch["attention_mask"].bool()
    for index, mask in received.items():  # a full and a sliding layer (qwen2's window of 8)
        window = text_config.sliding_window if text_config.layer_types[index] == "sliding_attention" else None
        expected = reference_allowed(batch["input_ids"], batch["attention_mask"], batch["labels"], "image",
                                     croc.config.image_token_id, window, image_token_counts=counts.tolist())
        allowed = mask[:, 0] == 0  # eager: additive float mask
        for row in range(real.shape[0]):
            assert torch.equal(allowed[row][real[row]], expected[row][real[row]]), (index, row)
    start = int((batch["input_ids"][0] == croc.config.image_token_id).nonzero()[0])
    image_1, image_2 = range(start, start + int(counts[0])), range(start + int(counts[0]),
                                                                    start + int(counts[0] + counts[1]))
    allowed = received[0][0, 0] == 0
    assert allowed[image_1[0], image_1[-1]] and allowed[image_2[0], image_2[-1]]
    assert not allowed[image_1[0], image_2[0]] and allowed[image_2[0], image_1[0]]  # earlier tokens: causal


def test_masked_positions_count_per_image_for_the_trainer():
    """With `vtr_positions="masked"` the step count is the sum of each image's own masked count, as reconstructed."""
    config = _config(croc_pretraining=True)  # paper: masked positions, Hungarian per image
    croc = _model(config).train()
    batch, counts = _batch(croc, images_per_row=(1, 1, 2), sizes=SIZES)
    out = croc(**batch, croc_generator=torch.Generator().manual_seed(0))
    expected = sum(round(0.75 * count) for count in counts.tolist())  # the paper: 75% masked, rounded half to even
    assert croc.num_vtr_items(batch["input_ids"], len(SIZES), image_sizes=batch["image_sizes"]) == expected
    assert int(out.vtr_norm_sums[2]) == expected


def test_padded_vtr_prediction_is_read_at_each_images_own_positions():
    """The predictions gathered into the padded layout are the hidden states at each image's tokens, in order."""
    croc = _model(_config(croc_pretraining=True, vtr_positions="all", vtr_head="linear")).train()
    batch, counts = _batch(croc)
    outputs = croc.model(**batch, croc_objectives=True, croc_generator=torch.Generator().manual_seed(0))
    states = outputs.vtr_source_states[outputs.image_token_mask]
    start = 0
    padded_states = []
    for count in counts.tolist():
        padded_states.append(states[start:start + count])
        start += count
    captured = {}
    croc.vtr_head.register_forward_pre_hook(lambda module, args: captured.setdefault("input", args[0]))
    croc._vtr_loss(outputs, None)
    for image, own in enumerate(padded_states):
        torch.testing.assert_close(captured["input"][image, :len(own)], own, rtol=0, atol=0)
        assert captured["input"][image, len(own):].abs().sum() == 0


def test_normalisation_is_per_crop_before_packing():
    """ViCToR normalises each crop's projected tokens before OneVision-style packing: the base view's tokens are
    unit vectors, the newline token (appended after) is not normalised."""
    croc = _model(_config(croc_preset="victor")).eval()
    batch, counts = _batch(croc, sizes=[[20, 50]], images_per_row=(1,))
    features = croc.model.croc_image_features(batch["pixel_values"], batch["image_sizes"])[0]
    base = 4  # one 2 x 2 view
    torch.testing.assert_close(features[:base].norm(dim=-1), torch.ones(base))
    newline = croc.model.image_newline.detach()
    newline_rows = (features == newline).all(-1)
    assert newline_rows.any() and not torch.allclose(newline.norm(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="normalize_visual_tokens"):
        croc_to_llava(croc)


def test_bert_head_is_refused_for_anyres():
    with pytest.raises(ValueError, match="position embedding per visual token"):
        _config(croc_preset="official")


def test_auto_classes_save_and_export(tmp_path):
    croc = _model(_config())
    croc.save_pretrained(tmp_path / "croc")
    saved = json.loads((tmp_path / "croc" / "config.json").read_text())
    assert saved["model_type"] == "croc_onevision" and "AutoModelForImageTextToText" in saved["auto_map"]
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "croc"), CrocOnevisionConfig)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "croc", attn_implementation="eager")
    assert type(loaded) is CrocOnevisionForConditionalGeneration
    for name, tensor in croc.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)
    base, info = AutoModel.from_pretrained(tmp_path / "croc", output_loading_info=True, attn_implementation="eager")
    assert type(base) is CrocOnevisionModel and not info["missing_keys"], info
    for name, tensor in croc.model.state_dict().items():  # the pool too
        torch.testing.assert_close(base.state_dict()[name], tensor, rtol=0, atol=0, msg=name)

    export_llava_folder(tmp_path / "croc", tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["model_type"] == "llava_onevision"
    plain, info = LlavaOnevisionForConditionalGeneration.from_pretrained(
        tmp_path / "plain", output_loading_info=True, attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"]
    batch, _ = _batch(croc)
    batch.pop("labels")
    with torch.no_grad():
        torch.testing.assert_close(plain(**batch).logits, croc.eval()(**batch).logits, rtol=0, atol=0)


def test_text_only_batch_keeps_the_pool_in_the_graph():
    croc = _model(_config(croc_pretraining=True)).train()
    input_ids = torch.randint(3, 100, (2, 7))
    out = croc(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=input_ids)
    assert out.vtr_loss == 0
    out.loss.backward()
    assert croc.prompt_pool.weight.grad is not None and croc.prompt_pool.weight.grad.abs().sum() == 0


def test_padded_hungarian_matches_scipy_per_group():
    """Groups of different sizes padded to one batch (padded query rows cost 0 everywhere) give every group the
    optimum scipy finds on its own unpadded rows."""
    from modeling_croc.matching import assign_pool_tokens

    generator = torch.Generator().manual_seed(0)
    sizes = [7, 3, 12, 1]
    pool = torch.randn(16, 5, generator=generator)
    groups = [torch.randn(size, 5, generator=generator) for size in sizes]
    queries = torch.zeros(len(sizes), max(sizes), 5)
    valid = torch.zeros(len(sizes), max(sizes), dtype=torch.bool)
    for index, group in enumerate(groups):
        queries[index, :len(group)] = group
        valid[index, :len(group)] = True
    for solver_ids in (assign_pool_tokens(queries, pool, "hungarian", valid),):
        assert (solver_ids[~valid] == -1).all()
        for index, group in enumerate(groups):
            ids = solver_ids[index, :len(group)]
            assert len(set(ids.tolist())) == len(group)
            assert _assigned_cost(group, pool, ids) == pytest.approx(_scipy_cost(group, pool), rel=1e-6)
    # The padded batch assigns each group exactly what the group alone gets: the padding changes nothing.
    padded_ids = assign_pool_tokens(queries, pool, "hungarian", valid)
    for index, group in enumerate(groups):
        alone = assign_pool_tokens(group[None], pool, "hungarian")[0]
        assert torch.equal(padded_ids[index, :len(group)], alone)


def test_registered_with_every_auto_class_llava_onevision_is_and_in_the_saved_auto_map(tmp_path):
    """Transformers registers llava_onevision with AutoModel, AutoModelForImageTextToText, AutoModelForPreTraining
    and AutoModelForMultimodalLM: the OneVision Croc classes are registered with each, and a saved folder's
    `auto_map` names each, so `trust_remote_code` finds the copied code through any of them."""
    import transformers
    from transformers.models.auto import modeling_auto

    from modeling_croc import ONEVISION_AUTO_MODEL_CLASSES

    onevision = {name for name, auto in vars(modeling_auto).items() if name.startswith("AutoModel")
                 and "llava_onevision" in getattr(getattr(auto, "_model_mapping", None), "_model_mapping", {})}
    assert {"AutoModel", "AutoModelForImageTextToText", "AutoModelForPreTraining"} <= onevision
    assert {name for name in ONEVISION_AUTO_MODEL_CLASSES if hasattr(transformers, name)} == onevision
    for auto_name in onevision:
        resolved = getattr(transformers, auto_name)._model_mapping[CrocOnevisionConfig]
        assert resolved.__name__ == ONEVISION_AUTO_MODEL_CLASSES[auto_name], auto_name
    _model(_config()).save_pretrained(tmp_path / "croc")
    auto_map = json.loads((tmp_path / "croc" / "config.json").read_text())["auto_map"]
    assert {name: target for name, target in auto_map.items() if name != "AutoConfig"} == {
        auto: f"modeling_croc_onevision.{name}" for auto, name in ONEVISION_AUTO_MODEL_CLASSES.items()}


def test_return_dict_false_gives_the_dict_outputs_tuple():
    """`return_dict=False` (transformers' tuple outputs) on both OneVision classes: `to_tuple()` of the dict output,
    in stage 1.5 too (it crashed: the output class was built from a tuple)."""
    for croc_pretraining in (False, True):
        croc = _model(_config(croc_pretraining=croc_pretraining)).train()
        batch, _ = _batch(croc)
        for model in (croc, croc.model):
            inputs = dict(batch) if model is croc else {k: v for k, v in batch.items() if k != "labels"}
            with torch.no_grad():
                as_dict = model(**inputs, croc_generator=torch.Generator().manual_seed(0))
                as_tuple = model(**inputs, croc_generator=torch.Generator().manual_seed(0), return_dict=False)
            assert isinstance(as_tuple, tuple) and len(as_tuple) == len(as_dict.to_tuple())
            for left, right in zip(as_tuple, as_dict.to_tuple()):
                if isinstance(left, torch.Tensor):
                    torch.testing.assert_close(left, right, rtol=0, atol=0)


def test_processor_bounds_every_image_and_a_small_pool_is_refused_before_the_data():
    """`max_visual_tokens` (what the trainer checks the pool against before reading data) bounds the token count of
    every image size, at LLaVA-OneVision's own settings (384-px views of 729 tokens, its 36 grids, the anyres_max_9
    cap, under which a trimmed grid can gain newline tokens), and is reached within 1%; a 2048 pool is refused."""
    import random

    from transformers import LlavaOnevisionImageProcessorPil

    from croc_testing.tiny import llama_sentencepiece_tokenizer
    from modeling_croc.processing_croc_onevision import CrocOnevisionProcessor
    from trainer.cli import ConfigError
    from trainer.model_loading import fit_images_to_pool

    processor = CrocOnevisionProcessor(image_processor=LlavaOnevisionImageProcessorPil(),
                                       tokenizer=llama_sentencepiece_tokenizer(), num_image_tokens=729,
                                       vision_feature_select_strategy="full")
    most = processor.max_visual_tokens
    rng = random.Random(0)
    sizes = [(rng.randint(1, 4000), rng.randint(1, 4000)) for _ in range(20000)]
    sizes += [(height, width) for height in range(1, 4000, 13) for width in (1, 100, 384, 1152, 2304)]
    seen = max(processor._get_number_of_features(height, width, 384, 384) for height, width in sizes)
    assert 0.99 * most <= seen <= most
    with pytest.raises(ConfigError, match="outnumber the 2048-token prompt pool"):
        fit_images_to_pool(processor, _config(croc_pretraining=True, prompt_pool_size=2048))
    fit_images_to_pool(processor, _config(croc_pretraining=True, prompt_pool_size=most))
