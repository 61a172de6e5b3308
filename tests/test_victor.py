"""ViCToR's released checkpoints: tiny weights written in the fork's exact layout (`llava_qwen`: Qwen2 LM, SigLIP tower
with its top layer removed, `model.mm_projector`, `model.token_pool`, `model.pool_weight`, `img_head`) load into this
project's classes with the logits of a reference forward written here from the fork's code
(github.com/deepglint/Victor `llava/model/llava_arch.py`, `llava_qwen.py`, `multimodal_encoder/siglip_encoder.py`,
`mm_utils.py`), for its single-view layout (pad + flat, what its scripts train) and the OneVision layout (anyres_max_N
+ spatial_unpad). The stage-1.5 loss of the `victor` preset equals the fork's (per-row scipy Hungarian, linear head,
SmoothL1(0.01) x 10 on every image position, causal attention)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from scipy.optimize import linear_sum_assignment
from torch import nn
from transformers import (
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from croc_testing.tiny import chatml_bpe_tokenizer
from modeling_croc import CrocForConditionalGeneration, CrocOnevisionForConditionalGeneration
from modeling_croc.constants import IGNORE_INDEX
from modeling_croc.loading import load_croc

HIDDEN, TOWER_WIDTH, TOWER_LAYERS, VIEW = 32, 24, 3, 28
# The fork lists pinpoints as (width, height); an asymmetric set, so a swapped reading would show.
FORK_PINPOINTS = [[28, 28], [56, 28], [56, 56], [84, 28]]


@pytest.fixture(scope="module")
def tokenizer():
    return chatml_bpe_tokenizer()


@pytest.fixture(scope="module")
def tower_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("siglip")
    torch.manual_seed(11)
    config = SiglipVisionConfig(hidden_size=TOWER_WIDTH, intermediate_size=48, num_hidden_layers=TOWER_LAYERS,
                                num_attention_heads=4, image_size=VIEW, patch_size=14)
    SiglipVisionModel(config).save_pretrained(folder)
    SiglipImageProcessorPil(size={"height": VIEW, "width": VIEW}).save_pretrained(folder)
    return folder


def _write_fork_checkpoint(folder, tower_folder, tokenizer, layout: str, pool_rows: int = 64, seed: int = 0):
    """A checkpoint exactly as ViCToR's `safe_save_model_for_hf_trainer` writes `LlavaQwenForCausalLM`: Qwen2's own
    names for the LM, the fork's names for the rest, the tower truncated as its `load_model` leaves it."""
    torch.manual_seed(seed)
    text = Qwen2Config(vocab_size=448, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       tie_word_embeddings=False, bos_token_id=None, eos_token_id=tokenizer.eos_token_id)
    state = dict(Qwen2ForCausalLM(text).state_dict())
    tower = SiglipVisionModel.from_pretrained(tower_folder)
    for name, tensor in tower.state_dict().items():  # transformers 5 names, without the files' `vision_model.`
        layer = name.split("encoder.layers.")[1].split(".")[0] if "encoder.layers." in name else None
        if name.startswith("head.") or (layer is not None and int(layer) >= TOWER_LAYERS - 1):
            continue  # siglip_encoder.py L570-571: top layer deleted, head replaced by Identity
        state[f"model.vision_tower.vision_tower.vision_model.{name}"] = tensor.clone()
    projector = nn.Sequential(nn.Linear(TOWER_WIDTH, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, HIDDEN))
    state.update({f"model.mm_projector.{k}": v for k, v in projector.state_dict().items()})
    state["model.token_pool"] = torch.randn(pool_rows, HIDDEN)
    state.update({f"model.pool_weight.{k}": v for k, v in nn.Linear(HIDDEN, HIDDEN).state_dict().items()})
    state.update({f"img_head.{k}": v for k, v in nn.Linear(HIDDEN, HIDDEN).state_dict().items()})
    anyres = layout != "pad"
    if anyres:
        state["model.image_newline"] = torch.randn(HIDDEN) / math.sqrt(HIDDEN)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
    config = {**text.to_dict(), "model_type": "llava_qwen", "architectures": ["LlavaQwenForCausalLM"],
              "mm_vision_tower": str(tower_folder), "mm_hidden_size": TOWER_WIDTH, "mm_projector_type": "mlp2x_gelu",
              "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "use_mm_proj": True,
              "mm_patch_merge_type": "spatial_unpad" if anyres else "flat",
              "image_aspect_ratio": layout, "image_grid_pinpoints": FORK_PINPOINTS if anyres else None,
              "mm_pool_size": pool_rows, "tokenizer_padding_side": "right",
              "mm_tunable_parts": "mm_vision_tower,mm_mlp_adapter,mm_language_model"}
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(folder)
    return state, text


class ForkReference:
    """The fork's inference path, written from its code's description (not imported: the fork is not installable)."""

    def __init__(self, state, text_config, tower_folder, aspect: str):
        self.lm = Qwen2ForCausalLM(text_config).eval()
        self.lm.load_state_dict({k: v for k, v in state.items() if k.startswith(("model.embed", "model.layers",
                                                                                  "model.norm", "lm_head"))})
        tower_config = SiglipVisionConfig.from_pretrained(tower_folder)
        tower_config.num_hidden_layers = TOWER_LAYERS - 1
        self.tower = SiglipVisionModel(tower_config).eval()
        prefix = "model.vision_tower.vision_tower.vision_model."
        self.tower.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)},
                                   strict=False)
        self.projector = [state[f"model.mm_projector.{i}.{kind}"] for i in (0, 2) for kind in ("weight", "bias")]
        self.newline = state.get("model.image_newline")
        self.img_head = (state["img_head.weight"], state["img_head.bias"])
        self.pool = state["model.token_pool"]
        self.aspect = aspect

    def encode(self, pixel_values):
        """llava_arch.py `encode_images` L197-200: tower, projector, L2 normalisation per token."""
        hidden = self.tower(pixel_values, output_hidden_states=True).hidden_states[-1]  # siglip_encoder.py L585-586
        w1, b1, w2, b2 = self.projector
        projected = F.linear(F.gelu(F.linear(hidden, w1, b1)), w2, b2)
        return F.normalize(projected, p=2, dim=-1)

    def image_tokens(self, crops, size_wh):
        """One image's tokens: the single view (pad + flat), or llava_arch.py L359-415 for anyres_max_N + unpad."""
        features = self.encode(crops)
        if self.aspect == "pad":
            return features[0]
        base, rest = features[0], features[1:]
        side = int(math.isqrt(base.shape[0]))
        grid_w, grid_h = (value // VIEW for value in _best_resolution(size_wh, FORK_PINPOINTS))
        rest = rest.view(grid_h, grid_w, side, side, -1).permute(4, 0, 2, 1, 3).contiguous()
        rest = _unpad(rest.flatten(1, 2).flatten(2, 3), size_wh)
        _, height, width = rest.shape
        times = math.sqrt(height * width / (int(self.aspect.split("_")[-1]) * side ** 2))
        if times > 1.1:
            rest = F.interpolate(rest[None], [int(height // times), int(width // times)], mode="bilinear")[0]
        rest = torch.cat([rest, self.newline[:, None, None].expand(*rest.shape[:-1], 1)], dim=-1)
        return torch.cat([base, rest.flatten(1, 2).transpose(0, 1)])

    def embeds(self, pieces):
        """prepare_inputs_labels_for_multimodal L472-515: text embeddings with each image's tokens spliced in."""
        embed = self.lm.get_input_embeddings()
        return torch.cat([embed(piece) if piece.dtype == torch.long else piece for piece in pieces])

    def logits(self, rows):
        with torch.no_grad():
            return [self.lm(inputs_embeds=self.embeds(pieces)[None]).logits[0] for pieces in rows]


def _best_resolution(size_wh, candidates_wh):
    """mm_utils.py `select_best_resolution`: the candidate (width, height) keeping the most of the image, then
    wasting the least."""
    width, height = size_wh
    best, best_key = None, None
    for cand_w, cand_h in candidates_wh:
        scale = min(cand_w / width, cand_h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        key = (effective, -(cand_w * cand_h - effective))
        if best_key is None or key > best_key:
            best, best_key = (cand_w, cand_h), key
    return best


def _unpad(tensor, size_wh):
    """llava_arch.py `unpad_image` L133-165: crop the padding the resize-and-pad put around the image."""
    width, height = size_wh
    _, current_h, current_w = tensor.shape
    if width / height > current_w / current_h:
        new_h = int(height * (current_w / width))
        pad = (current_h - new_h) // 2
        return tensor[:, pad:current_h - pad, :]
    new_w = int(width * (current_h / height))
    pad = (current_w - new_w) // 2
    return tensor[:, :, pad:current_w - pad]


def _inputs(model, tokenizer, images_wh, crops, seed: int = 0):
    """Our model's batch (one row per image, `<image>` expanded to its count) and the fork's rows (text ids and the
    image's tokens), from the same random prompt and answer."""
    generator = torch.Generator().manual_seed(seed)
    image_id = model.config.image_token_id
    ours, fork_rows, lengths = [], [], []
    sizes_hw = torch.tensor([[h, w] for w, h in images_wh])
    if isinstance(model, CrocOnevisionForConditionalGeneration):
        counts = model.image_token_counts(None, len(images_wh), image_sizes=sizes_hw).tolist()
    else:
        counts = [model.config.image_seq_length] * len(images_wh)
    for count in counts:
        before = torch.randint(3, 390, (4,), generator=generator)
        after = torch.randint(3, 390, (6,), generator=generator)
        ours.append(torch.cat([before, torch.full((count,), image_id), after]))
        fork_rows.append((before, after))
        lengths.append(len(ours[-1]))
    width = max(lengths)
    input_ids = torch.full((len(ours), width), tokenizer.pad_token_id)
    attention = torch.zeros(len(ours), width, dtype=torch.long)
    labels = torch.full((len(ours), width), IGNORE_INDEX)
    for row, ids in enumerate(ours):  # right padding, as the fork (tokenizer_padding_side "right")
        input_ids[row, :len(ids)] = ids
        attention[row, :len(ids)] = 1
        labels[row, len(ids) - 6:len(ids)] = ids[-6:]
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "pixel_values": crops}
    if isinstance(model, CrocOnevisionForConditionalGeneration):
        batch["image_sizes"] = sizes_hw
    return batch, fork_rows, lengths


def _crops(images_wh, anyres: bool, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    if not anyres:
        return torch.randn(len(images_wh), 3, VIEW, VIEW, generator=generator)
    counts = [1 + (w // VIEW) * (h // VIEW) for w, h in (_best_resolution(s, FORK_PINPOINTS) for s in images_wh)]
    return torch.randn(len(images_wh), max(counts), 3, VIEW, VIEW, generator=generator), counts


LAYOUTS = {"pad": CrocForConditionalGeneration, "anyres_max_9": CrocOnevisionForConditionalGeneration,
           "anyres_max_1": CrocOnevisionForConditionalGeneration}
IMAGES_WH = [(50, 20), (30, 60), (28, 28)]  # (width, height), as the fork's image_sizes


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_fork_layout_loads_with_the_reference_logits(tmp_path, tower_folder, tokenizer, layout):
    state, text = _write_fork_checkpoint(tmp_path / "fork", tower_folder, tokenizer, layout)
    model, processor = load_croc(tmp_path / "fork", attn_implementation="eager")
    assert type(model) is LAYOUTS[layout]
    assert model.config.croc_preset == "victor" and model.config.normalize_visual_tokens
    assert model.config.vision_config.num_hidden_layers == TOWER_LAYERS - 1
    assert model.config.prompt_pool_size == 64 and model.config.prompt_pool_calibrated
    torch.testing.assert_close(model.prompt_pool.weight, state["model.token_pool"], rtol=0, atol=0)
    torch.testing.assert_close(model.vtr_head.proj.weight, state["img_head.weight"], rtol=0, atol=0)
    assert processor.chat_template.startswith("{%- if messages[0]['role'] == 'system'")

    anyres = layout != "pad"
    reference = ForkReference(state, text, tower_folder, layout)
    if anyres:
        crops, counts = _crops(IMAGES_WH, True)
        assert model.config.image_grid_pinpoints == [[h, w] for w, h in FORK_PINPOINTS]
    else:
        crops = _crops(IMAGES_WH, False)
    batch, fork_rows, lengths = _inputs(model, tokenizer, IMAGES_WH, crops)
    with torch.no_grad():
        ours = model.eval()(**{k: v for k, v in batch.items() if k != "labels"}).logits
    fork_pieces = []
    for index, (before, after) in enumerate(fork_rows):
        image = crops[index, :counts[index]] if anyres else crops[index:index + 1]
        fork_pieces.append([before, reference.image_tokens(image, IMAGES_WH[index]), after])
    for row, (expected, length) in enumerate(zip(reference.logits(fork_pieces), lengths)):
        assert expected.shape[0] == length, "the fork spliced in as many image tokens as our <image> run holds"
        # Float rounding only (~2e-7): the reference runs each row alone, the model the padded batch.
        torch.testing.assert_close(ours[row, :length], expected, rtol=0, atol=1e-6)


def test_victor_stage15_loss_equals_the_forks(tmp_path, tower_folder, tokenizer):
    """The fork's stage-1.5 objective on our replaced positions: per-row `linear_sum_assignment` on `cdist` between
    the normalised masked tokens and `token_pool` (llava_arch.py L602-615), causal LM, `img_head` on the final hidden
    states at every image position, `SmoothL1Loss(beta=0.01)(targets, prediction) * 10` (llava_qwen.py L115-129),
    plus the LM loss."""
    state, text = _write_fork_checkpoint(tmp_path / "fork", tower_folder, tokenizer, "pad")
    model, _ = load_croc(tmp_path / "fork", attn_implementation="eager", croc_fields={"croc_pretraining": True})
    model.train()
    reference = ForkReference(state, text, tower_folder, "pad")
    images = [(50, 20), (30, 60)]
    crops = _crops(images, False)
    batch, fork_rows, lengths = _inputs(model, tokenizer, images, crops)
    out = model(**batch, croc_generator=torch.Generator().manual_seed(5))
    tokens = model.config.image_seq_length
    assert out.replaced_token_mask.sum(1).tolist() == [tokens - tokens // 4] * 2  # llava_arch.py L206-207

    predictions, targets, lm_losses, supervised = [], [], [], 0
    for row, (before, after) in enumerate(fork_rows):
        features = reference.encode(crops[row:row + 1])[0]
        masked = out.replaced_token_mask[row]
        costs = torch.cdist(features[masked].detach(), reference.pool).numpy()
        _, columns = linear_sum_assignment(costs)
        replaced = features.clone()
        replaced[masked] = reference.pool[torch.as_tensor(columns)]
        embeds = reference.embeds([before, replaced, after])[None]
        result = reference.lm(inputs_embeds=embeds, output_hidden_states=True)
        final = result.hidden_states[-1][0]
        image_states = final[len(before):len(before) + tokens]
        predictions.append(F.linear(image_states, *reference.img_head))
        targets.append(features.detach())
        logits = result.logits[0]
        labels = torch.cat([torch.full((len(before) + tokens,), IGNORE_INDEX), after])
        lm_losses.append(F.cross_entropy(logits[:-1], labels[1:], reduction="sum"))
        supervised += int((labels[1:] != IGNORE_INDEX).sum())
    im_loss = torch.nn.SmoothL1Loss(beta=0.01)(torch.cat(targets), torch.cat(predictions)) * 10
    torch.testing.assert_close(model.config.vtr_loss_weight * out.vtr_loss, im_loss, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.lm_loss, torch.stack(lm_losses).sum() / supervised, rtol=1e-4, atol=1e-6)


def test_stage2_checkpoint_gets_a_fresh_pool(tmp_path, tower_folder, tokenizer, caplog):
    """ViCToR's stage 2 recreates the pool with `--mm_pool_size 1` (stage2_finetune_siglip_qwen.sh L55): one untrained
    row cannot serve one-to-one matching, so a fresh pool of the preset's size replaces it; `pool_weight` is dropped."""
    _write_fork_checkpoint(tmp_path / "fork", tower_folder, tokenizer, "pad", pool_rows=1)
    with caplog.at_level("WARNING"):
        model, _ = load_croc(tmp_path / "fork", attn_implementation="eager")
    assert model.config.prompt_pool_size == 2048 and not model.config.prompt_pool_calibrated
    assert "fresh" in caplog.text
    assert not any("pool_weight" in name for name in model.state_dict())


def test_from_victor_cli_writes_a_croc_folder(tmp_path, tower_folder, tokenizer):
    from transformers import AutoModelForImageTextToText

    from modeling_croc.convert.__main__ import main

    _write_fork_checkpoint(tmp_path / "fork", tower_folder, tokenizer, "anyres_max_9")
    main(["from-victor", str(tmp_path / "fork"), str(tmp_path / "croc")])
    saved = json.loads((tmp_path / "croc" / "config.json").read_text())
    assert saved["model_type"] == "croc_onevision" and saved["croc_preset"] == "victor"
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "croc")
    assert type(loaded) is CrocOnevisionForConditionalGeneration
    with pytest.raises(SystemExit, match="convert error: .*normalize_visual_tokens"):
        main(["to-llava", str(tmp_path / "croc"), str(tmp_path / "plain")])


def test_transformers_4_config_keeps_its_rope_theta(tmp_path, tower_folder, tokenizer):
    """The released checkpoints' config.json comes from transformers 4.x: Qwen2.5's `rope_theta: 1000000.0` is a
    top-level key there, not `rope_parameters`. The converted model runs the same RoPE (the same text logits)."""
    state, text = _write_fork_checkpoint(tmp_path / "fork", tower_folder, tokenizer, "pad")
    saved = json.loads((tmp_path / "fork" / "config.json").read_text())
    saved.pop("rope_parameters", None)
    saved["rope_theta"] = 1000000.0
    (tmp_path / "fork" / "config.json").write_text(json.dumps(saved))
    reference = Qwen2ForCausalLM(Qwen2Config(**{**text.to_dict(), "rope_parameters": {
        "rope_type": "default", "rope_theta": 1000000.0}})).eval()
    reference.load_state_dict({k: v for k, v in state.items()
                               if k.startswith(("model.embed", "model.layers", "model.norm", "lm_head"))})
    model, _ = load_croc(tmp_path / "fork", vision_tower=tower_folder)
    assert model.config.text_config.rope_parameters["rope_theta"] == 1000000.0
    ids = torch.arange(5, 5 + 300).remainder(400)[None]
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(input_ids=ids).logits[..., :448], reference(input_ids=ids).logits,
                                   rtol=0, atol=0)
