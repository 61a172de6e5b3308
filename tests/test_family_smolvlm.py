"""Croc on SmolVLM through the shared mechanism (`modeling_croc/stage15.py`): what holds for LLaVA-1.5, checked on a
tiny SmolVLM built in code (`croc_testing.smolvlm`: a vision tower on 16-px views, 4 tokens a view after the pixel
shuffle), with images split into different tile grids plus their global views, two of them in one row.

Registered wherever smolvlm is; inference logits and `generate` equal `SmolVLMForConditionalGeneration`'s on shared
weights; an image's visual tokens are all its views' tokens, split out of the per-row vision outputs by the token
layout; a stage-1.5 step whose two losses equal hand-computed ones and whose gradients land where they belong; the
mask every decoder layer receives against the slow reference, an image's block being its whole extent (the row /
column tokens between its views included); round trips through save / load, export to a plain folder and conversion
from one.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoConfig, AutoModelForImageTextToText, SmolVLMForConditionalGeneration
from transformers.models.auto import modeling_auto

from croc_testing.backbones import SLIDING_WINDOW
from croc_testing.reference_masks import reference_allowed
from croc_testing.smolvlm import SMOLVLM_TOKENS, make_smolvlm_batch, tiny_croc_smolvlm_config
from modeling_croc import CrocSmolVLMConfig, CrocSmolVLMForConditionalGeneration, CrocSmolVLMModel
from modeling_croc.convert import croc_to_llava
from modeling_croc.loading import load_croc

# 4 tokens a view: the images of `SMOLVLM_GRIDS` (1 x 2 tiles + global, global alone, 2 x 2 tiles + global).
COUNTS = [12, 4, 20]


def _model(seed: int = 0, text: str = "llama", **croc_fields) -> CrocSmolVLMForConditionalGeneration:
    torch.manual_seed(seed)
    config = tiny_croc_smolvlm_config(text, **croc_fields)
    config._attn_implementation = "eager"
    return CrocSmolVLMForConditionalGeneration(config)


def _inputs(batch: dict) -> dict:
    return {name: value for name, value in batch.items() if name != "labels"}


def _images_as_one_run(input_ids: torch.LongTensor) -> torch.LongTensor:
    """`input_ids` with the text tokens inside every image (between two of its views) turned into placeholders, so
    the per-run reference sees each image as one run. Inside an image the gaps hold only the separator, row / column,
    newline and global tokens, and never two `<fake_token_around_image>` in a row (which is where one image ends and
    the next begins)."""
    inner = {SMOLVLM_TOKENS["fake"], SMOLVLM_TOKENS["global"], SMOLVLM_TOKENS["newline"],
             *range(SMOLVLM_TOKENS["row_col"], SMOLVLM_TOKENS["row_col"] + 4)}
    image, fake = SMOLVLM_TOKENS["image"], SMOLVLM_TOKENS["fake"]
    out = input_ids.clone()
    for row in out:
        tokens = row.tolist()
        positions = [index for index, token in enumerate(tokens) if token == image]
        for left, right in zip(positions, positions[1:]):
            gap = tokens[left + 1:right]
            if gap and set(gap) <= inner and all(gap[k:k + 2] != [fake, fake] for k in range(len(gap) - 1)):
                row[left + 1:right] = image
    return out


def test_registered_with_every_auto_class_smolvlm_is():
    parent = {}
    for name, auto_class in vars(modeling_auto).items():
        names = getattr(getattr(auto_class, "_model_mapping", None), "_model_mapping", None)
        if name.startswith("AutoModel") and isinstance(names, dict) and "smolvlm" in names:
            parent[name] = names["smolvlm"]
    assert {"AutoModel", "AutoModelForImageTextToText"} <= set(parent)
    croc_for_parent = {"SmolVLMModel": CrocSmolVLMModel,
                       "SmolVLMForConditionalGeneration": CrocSmolVLMForConditionalGeneration}
    for auto_name, parent_class in parent.items():
        resolved = getattr(transformers, auto_name)._model_mapping[CrocSmolVLMConfig]
        assert resolved is croc_for_parent[parent_class], auto_name
    assert type(AutoConfig.for_model("croc_smolvlm")) is CrocSmolVLMConfig
    assert tiny_croc_smolvlm_config().visual_tokens_per_image() == 4


def test_an_image_is_all_its_views():
    croc = _model().eval()
    batch = make_smolvlm_batch(croc.config)
    # The trainer passes the rows of pixel_values (here the 2 batch rows) as the image count: the layout decides.
    assert croc.image_token_counts(batch["input_ids"], len(batch["pixel_values"])).tolist() == COUNTS
    assert croc.num_vtr_items(batch["input_ids"], 2) == sum(croc.config.num_masked_tokens(n) for n in COUNTS)
    with torch.no_grad():
        rows = croc.model.croc_image_features(batch["pixel_values"],
                                              pixel_attention_mask=batch["pixel_attention_mask"])
        images = croc.model.croc_images_of(rows, batch["input_ids"])
    # Per row from the parent (3 views, then 1 + 5), per image here.
    assert [row.shape[0] for row in rows] == [12, 24] and [image.shape[0] for image in images] == COUNTS
    torch.testing.assert_close(images[1], rows[1][:4], rtol=0, atol=0)
    torch.testing.assert_close(images[2], rows[1][4:], rtol=0, atol=0)
    # A layout whose rows end their images differently has no global token to read.
    broken = batch["input_ids"].clone()
    broken[0][broken[0] == SMOLVLM_TOKENS["global"]] = SMOLVLM_TOKENS["newline"]
    with pytest.raises(ValueError, match="introduced by one `<global-img>` token"):
        croc.image_token_counts(broken, 2)


def test_inference_and_generate_equal_smolvlm_on_shared_weights():
    croc = _model().eval()
    plain = croc_to_llava(croc)
    assert type(plain) is SmolVLMForConditionalGeneration
    batch = _inputs(make_smolvlm_batch(croc.config))
    with torch.no_grad():
        expected = plain(**batch).logits
        torch.testing.assert_close(croc(**batch).logits, expected, rtol=0, atol=0)
        # Positional arguments follow the parent's order (input_ids, attention_mask, position_ids, ...).
        torch.testing.assert_close(croc(batch["input_ids"], batch["attention_mask"],
                                        pixel_values=batch["pixel_values"],
                                        pixel_attention_mask=batch["pixel_attention_mask"]).logits,
                                   expected, rtol=0, atol=0)
    generated = croc.generate(**batch, max_new_tokens=5, do_sample=False)
    assert torch.equal(generated, plain.generate(**batch, max_new_tokens=5, do_sample=False))
    with torch.no_grad():
        as_tuple = croc(**batch, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], expected, rtol=0, atol=0)


def test_stage15_step_losses_and_gradients():
    croc = _model(croc_pretraining=True).train()
    batch = make_smolvlm_batch(croc.config, left_pad=1)
    out = croc(**batch, croc_generator=torch.Generator().manual_seed(0))
    assert out.lm_loss > 0 and out.vtr_loss > 0
    torch.testing.assert_close(out.loss, out.lm_loss + croc.config.vtr_loss_weight * out.vtr_loss)
    assert out.visual_token_mask.sum(-1).tolist() == COUNTS
    assert out.replaced_token_mask.sum(-1).tolist() == [croc.config.num_masked_tokens(n) for n in COUNTS]
    with torch.no_grad():  # both terms by hand (the paper preset: linear head, standardised targets, MSE)
        base = croc.model(**_inputs(batch), labels=batch["labels"], croc_objectives=True,
                          croc_generator=torch.Generator().manual_seed(0))
        # Only the <image> positions carry visual tokens: the row / column, separator and global tokens are text.
        assert torch.equal(base.image_token_mask, batch["input_ids"] == SMOLVLM_TOKENS["image"])
        num_images, num_tokens, hidden = base.visual_tokens.shape
        states = base.last_hidden_state.new_zeros(num_images, num_tokens, hidden)
        states[base.visual_token_mask] = base.last_hidden_state[base.image_token_mask]
        targets = base.visual_tokens.float()
        targets = (targets - targets.mean(-1, keepdim=True)) / (targets.var(-1, unbiased=False, keepdim=True)
                                                                + 1e-6).sqrt()
        per_token = ((croc.vtr_head(states).float() - targets) ** 2).mean(-1)
        torch.testing.assert_close(out.vtr_loss, per_token[base.replaced_token_mask].mean(), rtol=1e-4, atol=1e-5)
        lm = F.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(),
                             ignore_index=-100)
        torch.testing.assert_close(out.lm_loss, lm, rtol=1e-4, atol=1e-5)
        # The targets are the connector's outputs the plain forward scatters, in their order.
        features = croc.model.croc_image_features(batch["pixel_values"],
                                                  pixel_attention_mask=batch["pixel_attention_mask"])
        torch.testing.assert_close(base.visual_tokens[base.visual_token_mask], torch.cat(features))
    out.loss.backward()
    assigned = torch.zeros(croc.config.prompt_pool_size, dtype=torch.bool)
    assigned[out.pool_ids[out.pool_ids >= 0]] = True
    pool_grad = croc.prompt_pool.weight.grad.abs().sum(-1)
    assert assigned.any() and pool_grad[assigned].gt(0).all() and pool_grad[~assigned].eq(0).all()
    assert croc.model.connector.modality_projection.proj.weight.grad.abs().sum() > 0
    assert croc.vtr_head.proj.weight.grad.abs().sum() > 0
    assert croc.model.text_model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("text", ["llama", "qwen2"])
@pytest.mark.parametrize("span", ["image", "prompt"])
def test_every_layer_gets_the_mixed_mask(span, text):
    """SmolVLM's Llama text model (global layers only) and a Qwen2 one with a global and a sliding layer: each
    layer's mask checked element by element against the slow reference, for which an image is one run from its first
    to its last placeholder (the text tokens between its views counted as the image's)."""
    croc = _model(text=text, croc_pretraining=True, bidirectional_span=span).train()
    batch = make_smolvlm_batch(croc.config)
    assert batch["input_ids"].shape[1] > SLIDING_WINDOW
    received: dict[int, torch.Tensor] = {}
    hooks = [layer.register_forward_pre_hook(
        lambda module, args, kwargs, index=index: received.__setitem__(index, kwargs["attention_mask"]),
        with_kwargs=True) for index, layer in enumerate(croc.model.text_model.layers)]
    try:
        with torch.no_grad():
            croc(**batch, croc_generator=torch.Generator().manual_seed(0))
    finally:
        for hook in hooks:
            hook.remove()
    assert sorted(received) == [0, 1]
    layer_types = getattr(croc.config.text_config, "layer_types", None) or ["full_attention"] * 2
    assert set(layer_types) == ({"full_attention"} if text == "llama" else {"full_attention", "sliding_attention"})
    as_one_run = _images_as_one_run(batch["input_ids"])
    real = batch["attention_mask"].bool()
    for index, mask in received.items():
        window = SLIDING_WINDOW if layer_types[index] == "sliding_attention" else None
        expected = reference_allowed(as_one_run, batch["attention_mask"], batch["labels"], span,
                                     croc.config.image_token_id, window)
        if span == "image":  # the per-view runs would be a different mask: the test tells the two apart
            runs = reference_allowed(batch["input_ids"], batch["attention_mask"], batch["labels"], span,
                                     croc.config.image_token_id, window)
            assert not torch.equal(runs, expected)
        allowed = mask[:, 0] == 0  # eager: additive float mask
        for row in range(real.shape[0]):
            assert torch.equal(allowed[row][real[row]], expected[row][real[row]]), (index, row)


def test_pool_tokens_enter_the_language_model_as_the_visual_tokens_do():
    croc = _model(croc_pretraining=True, bidirectional_span="none", vtr_positions="all").train()
    batch = _inputs(make_smolvlm_batch(croc.config))
    with torch.no_grad():
        features = torch.cat(croc.model.croc_image_features(batch["pixel_values"],
                                                            pixel_attention_mask=batch["pixel_attention_mask"]))
        croc.prompt_pool.weight.zero_()
        croc.prompt_pool.weight[: features.shape[0]] = features
        plain = croc.model(**batch, croc_objectives=False).last_hidden_state
        out = croc.model(**batch, croc_objectives=True, croc_generator=torch.Generator().manual_seed(0))
    assert out.replaced_token_mask.any()
    torch.testing.assert_close(out.last_hidden_state, plain, rtol=1e-5, atol=1e-5)


def test_save_load_export_and_conversion_round_trips(tmp_path):
    croc = _model().eval()
    batch = _inputs(make_smolvlm_batch(croc.config))
    with torch.no_grad():
        expected = croc(**batch).logits

    croc.save_pretrained(tmp_path / "croc")
    saved = json.loads((tmp_path / "croc" / "config.json").read_text())
    assert saved["model_type"] == "croc_smolvlm"
    assert saved["auto_map"]["AutoModelForImageTextToText"].endswith("CrocSmolVLMForConditionalGeneration")
    assert saved["auto_map"]["AutoModel"].endswith("CrocSmolVLMModel")
    loaded, info = AutoModelForImageTextToText.from_pretrained(tmp_path / "croc", output_loading_info=True,
                                                               attn_implementation="eager")
    assert type(loaded) is CrocSmolVLMForConditionalGeneration
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**batch).logits, expected, rtol=0, atol=0)

    # Export: a plain smolvlm folder (no pool, no head) that the parent class loads with the same logits.
    croc_to_llava(croc).save_pretrained(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["model_type"] == "smolvlm"
    plain, info = SmolVLMForConditionalGeneration.from_pretrained(tmp_path / "plain", output_loading_info=True,
                                                                  attn_implementation="eager")
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(**batch).logits, expected, rtol=0, atol=0)

    # Conversion: Croc from the plain folder, the same weights plus a fresh pool and head, ready for stage 1.5.
    converted, processor = load_croc(tmp_path / "plain", croc_fields={"croc_pretraining": True},
                                     attn_implementation="eager")
    assert type(converted) is CrocSmolVLMForConditionalGeneration and processor is None  # weights-only folder
    assert converted.config.croc_pretraining and converted.config.scale_factor == 2
    with torch.no_grad():
        torch.testing.assert_close(converted.eval()(**batch).logits, expected, rtol=0, atol=0)
