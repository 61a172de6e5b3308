"""One spec per Croc family on the shared mechanism (`modeling_croc/stage15.py`): what the parametrized conformance
suite (`tests/test_families.py`) needs to know of a family to check it, and nothing it can read from the model.

Adding a family to the suite is one `FamilySpec` entry in `SPECS`; what only that family does stays in its own
`tests/test_family_<name>.py`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import (
    Gemma3ForConditionalGeneration,
    Gemma3Model,
    Gemma4ForConditionalGeneration,
    Gemma4Model,
    Glm4vForConditionalGeneration,
    Glm4vModel,
    Glm46VForConditionalGeneration,
    Glm46VModel,
    Idefics3ForConditionalGeneration,
    Idefics3Model,
    InternVLForConditionalGeneration,
    InternVLModel,
    Lfm2VlForConditionalGeneration,
    Lfm2VlModel,
    LlavaNextForConditionalGeneration,
    LlavaNextModel,
    LlavaOnevision15ForConditionalGeneration,
    LlavaOnevision15Model,
    Mistral3ForConditionalGeneration,
    Mistral3Model,
    PaliGemmaForConditionalGeneration,
    PaliGemmaModel,
    PreTrainedConfig,
    PreTrainedModel,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLModel,
    Qwen2VLForConditionalGeneration,
    Qwen2VLModel,
    Qwen3_5ForConditionalGeneration,
    Qwen3_5Model,
    Qwen3_5MoeForConditionalGeneration,
    Qwen3_5MoeModel,
    Qwen3VLForConditionalGeneration,
    Qwen3VLModel,
    Qwen3VLMoeForConditionalGeneration,
    Qwen3VLMoeModel,
    SmolVLMForConditionalGeneration,
    SmolVLMModel,
)

from modeling_croc import (
    CrocGemma3Config,
    CrocGemma3ForConditionalGeneration,
    CrocGemma3Model,
    CrocGemma4Config,
    CrocGemma4ForConditionalGeneration,
    CrocGemma4Model,
    CrocGlm4vForConditionalGeneration,
    CrocGlm46VForConditionalGeneration,
    CrocIdefics3ForConditionalGeneration,
    CrocInternVLConfig,
    CrocInternVLForConditionalGeneration,
    CrocInternVLModel,
    CrocLfm2VlConfig,
    CrocLfm2VlForConditionalGeneration,
    CrocLfm2VlModel,
    CrocLlavaNextConfig,
    CrocLlavaNextForConditionalGeneration,
    CrocLlavaNextModel,
    CrocLlavaOnevision15ForConditionalGeneration,
    CrocMistral3Config,
    CrocMistral3ForConditionalGeneration,
    CrocMistral3Model,
    CrocPaliGemmaForConditionalGeneration,
    CrocQwen2_5_VLConfig,
    CrocQwen2_5_VLForConditionalGeneration,
    CrocQwen2_5_VLModel,
    CrocQwen2VLForConditionalGeneration,
    CrocQwen3_5ForConditionalGeneration,
    CrocQwen3_5MoeForConditionalGeneration,
    CrocQwen3VLConfig,
    CrocQwen3VLForConditionalGeneration,
    CrocQwen3VLModel,
    CrocQwen3VLMoeForConditionalGeneration,
    CrocSmolVLMConfig,
    CrocSmolVLMForConditionalGeneration,
    CrocSmolVLMModel,
)
from modeling_croc.attention_mask import RECURRENT_LAYER_TYPES

from .backbones import SLIDING_WINDOW
from .batches import views_as_one_run
from .families import QWEN_SLIDING_WINDOW, make_qwen_batch, tiny_croc_qwen2_5_vl_config
from .gemma3 import (
    GEMMA3_SLIDING_WINDOW,
    GEMMA3_TOKENS_PER_IMAGE,
    make_gemma3_batch,
    randomize_gemma3_projector,
    tiny_croc_gemma3_config,
)
from .gemma4 import GEMMA4_SLIDING_WINDOW, make_gemma4_batch, tiny_croc_gemma4_config
from .glm4v import tiny_croc_glm4v_config
from .idefics3 import tiny_croc_idefics3_config
from .internvl import make_internvl_batch, tiny_croc_internvl_config
from .lfm2_vl import lfm2_vl_images_as_one_run, make_lfm2_vl_batch, tiny_croc_lfm2_vl_config
from .llava_next import make_llava_next_batch, tiny_croc_llava_next_config
from .mistral3 import MISTRAL3_TOKENS, make_mistral3_batch, tiny_croc_mistral3_config
from .paligemma import PALIGEMMA_SLIDING_WINDOW, make_paligemma_batch, tiny_croc_paligemma_config
from .qwen3_vl import make_qwen3_vl_batch, tiny_croc_qwen3_vl_config
from .smolvlm import SMOLVLM_TOKENS, make_smolvlm_batch, tiny_croc_smolvlm_config

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class MaskVariant:
    """One language-model layout the layer-mask check runs on.

    Attributes:
        name: the test id.
        config_kwargs: the family's config-builder arguments that make this layout (besides croc fields).
        window: the sliding window of the sliding layers, None where every layer is global.
        mixed_layer_types: the text config's `layer_types` mixes sliding and global layers (the window applies to
            the sliding ones only); otherwise the window, if any, applies to every layer (no `layer_types`).
        recurrent_layers: the text config's `layer_types` mixes recurrent layers (`RECURRENT_LAYER_TYPES`: causal by
            construction, reading the padding mask only; Qwen3.5's Gated DeltaNet, LFM2's short convolution) and
            global ones: the mixed mask is the global layers', a recurrent layer takes its parent's padding mask
            (`is_recurrent`).
    """

    name: str
    config_kwargs: dict[str, Any] = field(default_factory=dict)
    window: int | None = None
    mixed_layer_types: bool = False
    recurrent_layers: bool = False

    def is_recurrent(self, config: PreTrainedConfig, index: int) -> bool:
        """Whether decoder layer `index` is a recurrent layer, which no attention mask reaches."""
        return self.recurrent_layers and config.text_config.layer_types[index] in RECURRENT_LAYER_TYPES

    def layer_window(self, config: PreTrainedConfig, index: int) -> int | None:
        """The window of decoder layer `index`, None for a global layer."""
        if not self.mixed_layer_types:
            return self.window
        return self.window if config.text_config.layer_types[index] == "sliding_attention" else None


@dataclass(frozen=True)
class FamilySpec:
    """What the conformance suite needs of one family.

    Attributes:
        name: the test id (the parent's `model_type`).
        config: builds the tiny Croc config from the builder's own arguments and croc fields.
        batch: `(model, left_pad) -> batch`, left-padded, rows of different lengths, images of different sizes or
            counts where the family allows, `labels` included.
        token_counts: the visual tokens of each image of `batch(model, 2)` and `batch(model, 1)`.
        config_class, model_class, generation_class: the Croc classes.
        parent_model, parent_generation: the parent's base and generation classes.
        auto_classes: Auto classes the parent must be found in (the check covers every one it is in).
        unmapped_parent_classes: the parent's classes in an Auto class with no Croc counterpart.
        processor_mro: the leading class names of the processor mapped for the Croc config.
        mask_variants: the language-model layouts the layer-mask check runs on.
        grad_reaches: parameters (besides the pool, the VTR head and the first decoder layer) that the stage-1.5
            step must give a gradient; grad_stays_zero: parameters it must give exactly none.
        assigned_pool_rows: the distinct pool rows the stage-1.5 step assigns, where the family pins it.
        conversion_kept: dotted config fields a Croc converted from the plain export must keep.
        tied_head: the generation head is the input embedding (after a save / load too).
        mrope: positions are M-RoPE (computed per sample from image grids): kept in stage 1.5, packing refused.
        videos: the parent takes videos, which stage 1.5 refuses.
        prepare: a quirk applied after building (Gemma 3's zero-initialised projector randomised).
        image_features: `(model, batch) -> per-image visual tokens` as the parent's forward scatters them.
        mask_batch: the batch of the layer-mask check, where it needs another layout than `batch(model, 2)`.
        reference_layout: rewrites `input_ids` for the slow mask reference, whose image block is a run of image
            tokens (Pixtral's break tokens, SmolVLM's tokens between an image's views are inside the image's block).
        bidirectional_inputs: batch entries that make the parent's plain forward bidirectional over images,
            dropped where a causal plain forward is compared with span "none".
        text_embed_scale: the factor on the text embeddings the first decoder layer receives.
        copy_pool_size: the pool size of the pool-copy check.
        withhold_replaced: a context manager `(model, replaced) -> ...` making the plain forward withhold what a
            pool token does not carry (Qwen3-VL's DeepStack residuals at replaced tokens), or None.
        attn_implementation: the attention backend the checks build with (eager: additive float masks to read).
    """

    name: str
    config: Callable[..., PreTrainedConfig]
    batch: Callable[[PreTrainedModel, int], Batch]
    token_counts: tuple[int, ...]
    config_class: type[PreTrainedConfig]
    model_class: type[PreTrainedModel]
    generation_class: type[PreTrainedModel]
    parent_model: type[PreTrainedModel]
    parent_generation: type[PreTrainedModel]
    processor_mro: tuple[str, ...]
    mask_variants: tuple[MaskVariant, ...]
    grad_reaches: tuple[str, ...]
    conversion_kept: tuple[str, ...]
    auto_classes: frozenset[str] = frozenset({"AutoModel", "AutoModelForImageTextToText"})
    unmapped_parent_classes: frozenset[str] = frozenset()
    grad_stays_zero: tuple[str, ...] = ()
    assigned_pool_rows: int | None = None
    tied_head: bool = False
    mrope: bool = False
    videos: bool = False
    prepare: Callable[[PreTrainedModel, int], None] | None = None
    image_features: Callable[[PreTrainedModel, Batch], list[torch.Tensor]] | None = None
    mask_batch: Callable[[PreTrainedModel], Batch] | None = None
    reference_layout: Callable[[torch.LongTensor], torch.LongTensor] | None = None
    bidirectional_inputs: tuple[str, ...] = ()
    text_embed_scale: Callable[[PreTrainedConfig], float] | None = None
    copy_pool_size: int = 64
    withhold_replaced: Callable[[PreTrainedModel, torch.BoolTensor], Any] | None = None
    attn_implementation: str = "eager"

    def __str__(self) -> str:
        return self.name

    @property
    def parent_type(self) -> str:
        return self.parent_generation.config_class.model_type

    def build(self, seed: int = 0, config_kwargs: dict[str, Any] | None = None,
              **croc_fields: Any) -> PreTrainedModel:
        """The family's tiny Croc generation model, seeded, with `croc_fields` and the spec's attention."""
        torch.manual_seed(seed)
        config = self.config(**(config_kwargs or {}), **croc_fields)
        config._attn_implementation = self.attn_implementation
        model = self.generation_class(config)
        if self.prepare is not None:
            self.prepare(model, seed)
        return model

    def features(self, model: PreTrainedModel, batch: Batch) -> list[torch.Tensor]:
        """Each image's visual tokens: the spec's own way, else the mechanism's `croc_image_features` with the
        batch's `croc_image_inputs`, regrouped into images by `croc_images_of` (InternVL's tiles joined, SmolVLM's
        rows split; one entry per image already elsewhere)."""
        if self.image_features is not None:
            return self.image_features(model, batch)
        image_inputs = {name: batch[name] for name in model.model.croc_image_inputs if name in batch}
        features = model.model.croc_image_features(batch["pixel_values"], **image_inputs)
        return model.model.croc_images_of(features, batch["input_ids"])


def inputs(batch: Batch) -> Batch:
    """The batch without its labels: what inference takes."""
    return {name: value for name, value in batch.items() if name != "labels"}


def layer_masks(model: PreTrainedModel, run: Callable[[], Any]) -> dict[int, torch.Tensor]:
    """The `attention_mask` each decoder layer receives while `run()` runs, by layer index."""
    received: dict[int, torch.Tensor] = {}
    hooks = [layer.register_forward_pre_hook(
        lambda module, args, kwargs, index=index: received.__setitem__(index, kwargs["attention_mask"]),
        with_kwargs=True) for index, layer in enumerate(model.model.croc_language_model.layers)]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return received


@contextmanager
def language_model_inputs(model: PreTrainedModel) -> Iterator[list[dict]]:
    """Records the keyword arguments the language model ran with, one dict per forward: a forward hook sees them
    after every pre-hook (Croc's stage-1.5 inputs among them) has edited them."""
    calls: list[dict] = []
    handle = model.model.croc_language_model.register_forward_hook(
        lambda module, args, kwargs, output: calls.append(dict(kwargs)), with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


@contextmanager
def withhold_deepstack(model: PreTrainedModel, replaced: torch.BoolTensor) -> Iterator[None]:
    """Qwen3-VL's plain forward with the DeepStack features of the `replaced` visual tokens (flattened over the
    batch's visual positions) zeroed: what a pool token, which has no DeepStack features, enters with."""

    def zero_replaced(module, args, kwargs):
        kwargs["deepstack_visual_embeds"] = [level.masked_fill(replaced[:, None], 0)
                                             for level in kwargs["deepstack_visual_embeds"]]
        return args, kwargs

    handle = model.model.language_model.register_forward_pre_hook(zero_replaced, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def sharing_declarations(spec: FamilySpec, name: str, config: Callable[..., PreTrainedConfig],
                         generation_class: type[PreTrainedModel], parent_model: type[PreTrainedModel],
                         parent_generation: type[PreTrainedModel], **changes: Any) -> FamilySpec:
    """The spec of a family whose declarations, batches and checks are `spec`'s family's (mixins shared, as
    Qwen2-VL's are Qwen2.5-VL's and Qwen3-VL-MoE's Qwen3-VL's) on parent classes of its own: its Croc config and
    base model are read from `generation_class`, and `changes` replaces what else differs."""
    return dataclasses.replace(
        spec, name=name, config=config, config_class=generation_class.config_class,
        model_class=generation_class.croc_base_model_class, generation_class=generation_class,
        parent_model=parent_model, parent_generation=parent_generation, **changes)


def _pixtral_image_as_one_run(input_ids: torch.LongTensor) -> torch.LongTensor:
    # Pixtral closes every row of [IMG] with [IMG_BREAK]: the image's block spans them, so the reference (whose block
    # is a run of image tokens) reads the breaks as image tokens.
    breaks = input_ids == MISTRAL3_TOKENS["image_break"]
    return input_ids.masked_fill(breaks, MISTRAL3_TOKENS["image"])


def _smolvlm_images_as_one_run(input_ids: torch.LongTensor) -> torch.LongTensor:
    """`input_ids` with the text tokens inside every image (between two of its views) turned into placeholders, so
    the per-run reference sees each image as one run. Inside an image the gaps hold only the separator, row / column,
    newline and global tokens, and never two `<fake_token_around_image>` in a row (which is where one image ends and
    the next begins)."""
    inner = {SMOLVLM_TOKENS["fake"], SMOLVLM_TOKENS["global"], SMOLVLM_TOKENS["newline"],
             *range(SMOLVLM_TOKENS["row_col"], SMOLVLM_TOKENS["row_col"] + 4)}
    fake = SMOLVLM_TOKENS["fake"]
    return views_as_one_run(input_ids, SMOLVLM_TOKENS["image"], lambda gap: set(gap) <= inner and all(
        gap[k:k + 2] != [fake, fake] for k in range(len(gap) - 1)))


def _gemma3_image_features(model: PreTrainedModel, batch: Batch) -> list[torch.Tensor]:
    # The parent's own image path (projector output), not Croc's: the reference the targets are checked against.
    return list(model.model.get_image_features(batch["pixel_values"]).pooler_output)


# Two Qwen images of different native resolutions (16 and 12 patches: 4 and 3 merged tokens).
QWEN2_5_VL_GRIDS = [(1, 4, 4), (1, 2, 6)]
# Two images in Gemma 3's first row (say a picture and its pan-and-scan crop), one in the second.
GEMMA3_IMAGES_PER_ROW = [2, 1]
TEXT_LENGTHS = [5, 7]

QWEN3_VL_SPEC = FamilySpec(
    name="qwen3_vl",
    config=tiny_croc_qwen3_vl_config,
    batch=lambda model, left_pad: make_qwen3_vl_batch(model.config, left_pad=left_pad),
    token_counts=(4, 3),
    config_class=CrocQwen3VLConfig, model_class=CrocQwen3VLModel,
    generation_class=CrocQwen3VLForConditionalGeneration,
    parent_model=Qwen3VLModel, parent_generation=Qwen3VLForConditionalGeneration,
    processor_mro=("CrocQwen3VLProcessor", "Qwen3VLProcessor"),  # Qwen3-VL's own, subclassed
    mask_variants=(MaskVariant("global"),),  # global layers only
    # The first DeepStack level, added after decoder layer 0, feeds layer 1 and so both losses. The second is
    # added after the tiny model's last layer, at kept positions only, which no loss reads (the VTR loss reads
    # replaced positions, where DeepStack is zero; the LM loss text positions): its merger gets exactly no
    # gradient, as in the parent on the same loss.
    grad_reaches=("model.visual.merger.linear_fc1.weight",
                  "model.visual.deepstack_merger_list.0.linear_fc1.weight"),
    grad_stays_zero=("model.visual.deepstack_merger_list.1.linear_fc1.weight",),
    conversion_kept=("text_config.vocab_size",),
    mrope=True, videos=True, copy_pool_size=16, withhold_replaced=withhold_deepstack,
)

QWEN2_5_VL_SPEC = FamilySpec(
    name="qwen2_5_vl",
    config=tiny_croc_qwen2_5_vl_config,
    batch=lambda model, left_pad: make_qwen_batch(model.config, QWEN2_5_VL_GRIDS, TEXT_LENGTHS,
                                                  left_pad=left_pad),
    token_counts=(4, 3),
    config_class=CrocQwen2_5_VLConfig, model_class=CrocQwen2_5_VLModel,
    generation_class=CrocQwen2_5_VLForConditionalGeneration,
    parent_model=Qwen2_5_VLModel, parent_generation=Qwen2_5_VLForConditionalGeneration,
    # Qwen2.5-VL's own processor without its video part (which needs torchvision).
    processor_mro=("CrocQwen2_5_VLProcessor", "Qwen2_5_VLProcessor"),
    # Its top layer slides (`use_sliding_window`, `max_window_layers=1`).
    mask_variants=(MaskVariant("sliding", {"sliding": True}, QWEN_SLIDING_WINDOW, mixed_layer_types=True),),
    grad_reaches=("model.visual.merger.mlp.0.weight",),
    conversion_kept=("text_config.vocab_size",),
    mrope=True, videos=True, copy_pool_size=16,
)

SPECS: tuple[FamilySpec, ...] = (
    QWEN2_5_VL_SPEC,
    # Qwen2.5-VL's text model, batches, M-RoPE positions and sliding layers on Qwen2-VL's own vision tower, whose merger
    # (LayerNorm, then a GELU MLP) is what the step must train besides.
    sharing_declarations(
        QWEN2_5_VL_SPEC, "qwen2_vl", functools.partial(tiny_croc_qwen2_5_vl_config, qwen2_vl=True),
        CrocQwen2VLForConditionalGeneration, Qwen2VLModel, Qwen2VLForConditionalGeneration,
        processor_mro=("CrocQwen2VLProcessor", "Qwen2VLProcessor"),
        grad_reaches=("model.visual.merger.mlp.0.weight", "model.visual.merger.ln_q.weight")),
    # Qwen2.5-VL's declarations, batches and sliding layers on LLaVA-OneVision-1.5's own vision tower (RICE-ViT, one
    # frame per patch) and a Qwen3 text model on 1D positions: no M-RoPE to keep, packed rows not refused. The step
    # must train its merger (LayerNorm, then an MLP) besides.
    sharing_declarations(
        QWEN2_5_VL_SPEC, "llava_onevision1_5", functools.partial(tiny_croc_qwen2_5_vl_config, llava_onevision1_5=True),
        CrocLlavaOnevision15ForConditionalGeneration, LlavaOnevision15Model, LlavaOnevision15ForConditionalGeneration,
        processor_mro=("CrocLlavaOnevision15Processor", "Exaone4_5_Processor"),
        grad_reaches=("model.visual.merger.linear_fc1.weight", "model.visual.merger.norm.weight",
                      "model.visual.cls_embeddings.class_embedding"),
        mrope=False),
    # Qwen2.5-VL's declarations, batches (GLM-4.1V's image wrapper tokens) and M-RoPE positions on GLM-4.1V's own
    # vision tower and text model (global layers only), whose downsampling and SwiGLU merger are what the step must
    # train besides.
    GLM4V_SPEC := sharing_declarations(
        QWEN2_5_VL_SPEC, "glm4v", tiny_croc_glm4v_config,
        CrocGlm4vForConditionalGeneration, Glm4vModel, Glm4vForConditionalGeneration,
        processor_mro=("CrocGlm4vProcessor", "Glm4vProcessor"), mask_variants=(MaskVariant("global"),),
        grad_reaches=("model.visual.merger.gate_proj.weight", "model.visual.downsample.weight")),
    # GLM-4.1V's declarations, batches and checks on GLM-4.6V's config and classes (its dense text model).
    sharing_declarations(
        GLM4V_SPEC, "glm46v", functools.partial(tiny_croc_glm4v_config, glm46v=True),
        CrocGlm46VForConditionalGeneration, Glm46VModel, Glm46VForConditionalGeneration,
        processor_mro=("CrocGlm46VProcessor", "Glm46VProcessor")),
    QWEN3_VL_SPEC,
    # Qwen3-VL's vision side, DeepStack and batches on a mixture-of-experts text model: what the step must train
    # besides Qwen3-VL's is the routed experts and the router of a decoder layer.
    sharing_declarations(
        QWEN3_VL_SPEC, "qwen3_vl_moe", functools.partial(tiny_croc_qwen3_vl_config, moe=True),
        CrocQwen3VLMoeForConditionalGeneration, Qwen3VLMoeModel, Qwen3VLMoeForConditionalGeneration,
        grad_reaches=(*QWEN3_VL_SPEC.grad_reaches, "model.language_model.layers.0.mlp.experts.gate_up_proj",
                      "model.language_model.layers.0.mlp.experts.down_proj",
                      "model.language_model.layers.0.mlp.gate.weight")),
    # Qwen3-VL's images, batches, processor and M-RoPE positions without DeepStack, on a hybrid text model: a Gated
    # DeltaNet layer (causal by construction: the span applies on the full-attention layer only), then a
    # full-attention one. The step must train the merger and the linear layer's projections and decay.
    QWEN3_5_SPEC := sharing_declarations(
        QWEN3_VL_SPEC, "qwen3_5", functools.partial(tiny_croc_qwen3_vl_config, qwen3_5=True),
        CrocQwen3_5ForConditionalGeneration, Qwen3_5Model, Qwen3_5ForConditionalGeneration,
        # Its text-only causal LM, classification heads and a decision head: no Croc class stands for them.
        unmapped_parent_classes=frozenset({"Qwen3_5ForCausalLM", "Qwen3_5ForSequenceClassification",
                                           "Qwen3_5ForTokenClassification", "JevForDecision"}),
        mask_variants=(MaskVariant("hybrid", recurrent_layers=True),),
        grad_reaches=("model.visual.merger.linear_fc1.weight",
                      "model.language_model.layers.0.linear_attn.in_proj_qkv.weight",
                      "model.language_model.layers.0.linear_attn.conv1d.weight",
                      "model.language_model.layers.0.linear_attn.A_log"),
        grad_stays_zero=(), withhold_replaced=None),
    # Qwen3.5's images, batches, hybrid layers and masks on a mixture-of-experts text model: what the step must train
    # besides Qwen3.5's is a decoder layer's routed experts, router and shared expert.
    sharing_declarations(
        QWEN3_5_SPEC, "qwen3_5_moe", functools.partial(tiny_croc_qwen3_vl_config, moe=True, qwen3_5=True),
        CrocQwen3_5MoeForConditionalGeneration, Qwen3_5MoeModel, Qwen3_5MoeForConditionalGeneration,
        # Its text-only causal LM and a decision head: no Croc class stands for them.
        unmapped_parent_classes=frozenset({"Qwen3_5MoeForCausalLM", "JevForDecision"}),
        grad_reaches=(*QWEN3_5_SPEC.grad_reaches, "model.language_model.layers.0.mlp.experts.gate_up_proj",
                      "model.language_model.layers.0.mlp.experts.down_proj",
                      "model.language_model.layers.0.mlp.gate.weight",
                      "model.language_model.layers.0.mlp.shared_expert.up_proj.weight")),
    GEMMA3_SPEC := FamilySpec(
        name="gemma3",
        config=tiny_croc_gemma3_config,
        batch=lambda model, left_pad: make_gemma3_batch(model.config, GEMMA3_IMAGES_PER_ROW, TEXT_LENGTHS,
                                                        left_pad=left_pad),
        token_counts=(GEMMA3_TOKENS_PER_IMAGE,) * 3,
        config_class=CrocGemma3Config, model_class=CrocGemma3Model,
        generation_class=CrocGemma3ForConditionalGeneration,
        parent_model=Gemma3Model, parent_generation=Gemma3ForConditionalGeneration,
        auto_classes=frozenset({"AutoModel", "AutoModelForImageTextToText", "AutoModelForCausalLM"}),
        # Gemma 3's sequence-classification head: no Croc class stands for it.
        unmapped_parent_classes=frozenset({"Gemma3ForSequenceClassification"}),
        processor_mro=("CrocGemma3Processor", "Gemma3Processor"),  # Gemma 3's own, subclassed
        # Its first layer slides, its second is global, as Gemma 3 alternates them.
        mask_variants=(MaskVariant("sliding_global", {}, GEMMA3_SLIDING_WINDOW, mixed_layer_types=True),),
        grad_reaches=("model.multi_modal_projector.mm_input_projection_weight",
                      "model.vision_tower.encoder.layers.0.mlp.fc1.weight"),
        conversion_kept=("mm_tokens_per_image",),
        tied_head=True,
        # Each of the 9 replaced tokens (3 of 4 per image) takes a pool row of its own.
        assigned_pool_rows=9,
        # Gemma 3 initialises its projector to zeros: every visual token would be zero, and checks pass on zeros.
        prepare=randomize_gemma3_projector,
        image_features=_gemma3_image_features,
        # token_type_ids make Gemma 3's image blocks bidirectional; without them its plain forward is causal.
        bidirectional_inputs=("token_type_ids",),
        # Gemma 3 scales its text embeddings by sqrt(hidden); its image features enter unscaled.
        text_embed_scale=lambda config: config.text_config.hidden_size ** 0.5,
        copy_pool_size=16,
    ),
    # Gemma 3's checks (tied head, sqrt(hidden) text scale, token_type_ids dropped for a causal plain forward) on
    # PaliGemma's classes, batches (prefix and suffix, one image a row, labels on the suffix), linear projector and
    # two text models: PaliGemma 2's Gemma 2 (a sliding layer, then a global one; attention soft-capped, so croc_split
    # is refused) and PaliGemma 1's Gemma (global layers).
    sharing_declarations(
        GEMMA3_SPEC, "paligemma", tiny_croc_paligemma_config, CrocPaliGemmaForConditionalGeneration,
        PaliGemmaModel, PaliGemmaForConditionalGeneration,
        batch=lambda model, left_pad: make_paligemma_batch(model.config, [3, 5], [4, 2], left_pad=left_pad),
        token_counts=(4, 4), auto_classes=FamilySpec.auto_classes, unmapped_parent_classes=frozenset(),
        processor_mro=("CrocPaliGemmaProcessor", "PaliGemmaProcessor"),  # PaliGemma's own, subclassed
        mask_variants=(MaskVariant("gemma2", {"gemma": 2}, PALIGEMMA_SLIDING_WINDOW, mixed_layer_types=True),
                       MaskVariant("gemma", {"gemma": 1})),
        grad_reaches=("model.multi_modal_projector.linear.weight",
                      "model.vision_tower.encoder.layers.0.mlp.fc1.weight"),
        conversion_kept=("text_config.final_logit_softcapping", "text_config.num_image_tokens"),
        assigned_pool_rows=None, prepare=None, image_features=None),
    FamilySpec(
        name="gemma4",
        config=tiny_croc_gemma4_config,
        batch=lambda model, left_pad: make_gemma4_batch(model.config, left_pad=left_pad),
        token_counts=(4, 3, 6),  # pooled patch grids 2 x 2, 1 x 3, 3 x 2 (`GEMMA4_GRIDS`)
        config_class=CrocGemma4Config, model_class=CrocGemma4Model,
        generation_class=CrocGemma4ForConditionalGeneration,
        parent_model=Gemma4Model, parent_generation=Gemma4ForConditionalGeneration,
        auto_classes=frozenset({"AutoModel", "AutoModelForImageTextToText", "AutoModelForCausalLM"}),
        # A decision head transformers maps Gemma 4 checkpoints to: no Croc class stands for it.
        unmapped_parent_classes=frozenset({"JevForDecision"}),
        processor_mro=("CrocGemma4Processor", "Gemma4Processor"),  # Gemma 4's own, subclassed
        # Its first layer slides, its second is global, as Gemma 4 alternates them.
        mask_variants=(MaskVariant("sliding_global", {}, GEMMA4_SLIDING_WINDOW, mixed_layer_types=True),),
        # The vision side, and the per-layer inputs: their token table and the projection of the embeddings (the
        # pool tokens' among them).
        grad_reaches=("model.embed_vision.embedding_projection.weight",
                      "model.vision_tower.encoder.layers.0.mlp.gate_proj.linear.weight",
                      "model.language_model.embed_tokens_per_layer.weight",
                      "model.language_model.per_layer_model_projection.weight"),
        conversion_kept=("vision_config.pooling_kernel_size", "text_config.hidden_size_per_layer_input"),
        tied_head=True,
        # mm_token_type_ids make Gemma 4's image blocks bidirectional (sliding layers); without them it is causal.
        bidirectional_inputs=("mm_token_type_ids",),
        # Gemma 4 scales its text embeddings by sqrt(hidden); its image features enter unscaled.
        text_embed_scale=lambda config: config.text_config.hidden_size ** 0.5,
        copy_pool_size=16,
    ),
    FamilySpec(
        name="llava_next",
        config=tiny_croc_llava_next_config,
        batch=lambda model, left_pad: make_llava_next_batch(model, left_pad=left_pad),
        token_counts=(14, 16, 24),  # AnyRes: wide, tall and large images
        config_class=CrocLlavaNextConfig, model_class=CrocLlavaNextModel,
        generation_class=CrocLlavaNextForConditionalGeneration,
        parent_model=LlavaNextModel, parent_generation=LlavaNextForConditionalGeneration,
        processor_mro=("CrocLlavaNextProcessor", "LlavaNextProcessor"),
        # LLaVA-NeXT-Mistral slides on every layer (no `layer_types`: one windowed mask for all); Llama is global.
        # An image's packed tokens are one uninterrupted run of `<image>` tokens, so the reference's run is the image.
        mask_variants=(MaskVariant("mistral", {"text": "mistral"}, SLIDING_WINDOW),
                       MaskVariant("llama", {"text": "llama"})),
        grad_reaches=("model.multi_modal_projector.linear_1.weight",),
        conversion_kept=("image_grid_pinpoints",),
    ),
    FamilySpec(
        name="mistral3",
        config=tiny_croc_mistral3_config,
        batch=lambda model, left_pad: make_mistral3_batch(model.config, left_pad=left_pad),
        token_counts=(6, 12, 2),  # Pixtral at native resolution: 2 x 3, 3 x 4, 1 x 2 merged tokens
        config_class=CrocMistral3Config, model_class=CrocMistral3Model,
        generation_class=CrocMistral3ForConditionalGeneration,
        parent_model=Mistral3Model, parent_generation=Mistral3ForConditionalGeneration,
        processor_mro=("CrocMistral3Processor", "PixtralProcessor"),
        # Every layer slides when `sliding_window` is set, else every layer is global (Mistral-Small-3.1).
        mask_variants=(MaskVariant("sliding", {"sliding": True}, SLIDING_WINDOW),
                       MaskVariant("global", {"sliding": False})),
        grad_reaches=("model.multi_modal_projector.linear_1.weight",
                      "model.multi_modal_projector.patch_merger.merging_layer.weight"),
        conversion_kept=("text_config.sliding_window",),
        tied_head=True,  # the tiny Mistral text model ties its head (`croc_testing.backbones`)
        # Two images back to back in the first row ([IMG_END] between them), one in the second.
        mask_batch=lambda model: make_mistral3_batch(model.config, images_per_row=(2, 1)),
        reference_layout=_pixtral_image_as_one_run,
    ),
    FamilySpec(
        name="internvl",
        config=tiny_croc_internvl_config,
        batch=lambda model, left_pad: make_internvl_batch(model.config, left_pad=left_pad),
        # 4 tokens a tile: images of 1, 3 and 2 tiles (`INTERNVL_TILES`), the per-tile outputs joined by
        # `croc_images_of`. Each image is one run of `<IMG_CONTEXT>` (`<img>` and `</img>` outside it): the runs are
        # the reference's blocks as they are.
        token_counts=(4, 12, 8),
        config_class=CrocInternVLConfig, model_class=CrocInternVLModel,
        generation_class=CrocInternVLForConditionalGeneration,
        parent_model=InternVLModel, parent_generation=InternVLForConditionalGeneration,
        processor_mro=("CrocInternVLProcessor", "InternVLProcessor"),
        # Its Qwen2 text model: a global layer, then a sliding one.
        mask_variants=(MaskVariant("qwen2", {}, SLIDING_WINDOW, mixed_layer_types=True),),
        grad_reaches=("model.multi_modal_projector.linear_1.weight",),
        conversion_kept=("downsample_ratio",),
        tied_head=True,  # the tiny Qwen2 text model ties its head (`croc_testing.internvl`)
    ),
    SMOLVLM_SPEC := FamilySpec(
        name="smolvlm",
        config=tiny_croc_smolvlm_config,
        batch=lambda model, left_pad: make_smolvlm_batch(model.config, left_pad=left_pad),
        # 4 tokens a view: 1 x 2 tiles + global, the global view alone, 2 x 2 tiles + global (`SMOLVLM_GRIDS`), the
        # last two in one row; the per-row outputs split into images by `croc_images_of`.
        token_counts=(12, 4, 20),
        config_class=CrocSmolVLMConfig, model_class=CrocSmolVLMModel,
        generation_class=CrocSmolVLMForConditionalGeneration,
        parent_model=SmolVLMModel, parent_generation=SmolVLMForConditionalGeneration,
        processor_mro=("CrocSmolVLMProcessor", "SmolVLMProcessor"),  # SmolVLM's own, subclassed
        # Llama as SmolVLM ships (global layers only), and Qwen2 for a global and a sliding layer.
        mask_variants=(MaskVariant("llama", {"text": "llama"}),
                       MaskVariant("qwen2", {"text": "qwen2"}, SLIDING_WINDOW, mixed_layer_types=True)),
        grad_reaches=("model.connector.modality_projection.proj.weight",),
        conversion_kept=("scale_factor",),
        # An image's block is its whole extent: the row / column, newline, separator and global tokens between its
        # views are inside it.
        reference_layout=_smolvlm_images_as_one_run,
    ),
    # SmolVLM's declarations, batches (Idefics3's token layout is SmolVLM's), text models and checks on Idefics3's
    # config and classes.
    sharing_declarations(
        SMOLVLM_SPEC, "idefics3", tiny_croc_idefics3_config,
        CrocIdefics3ForConditionalGeneration, Idefics3Model, Idefics3ForConditionalGeneration,
        processor_mro=("CrocIdefics3Processor", "Idefics3Processor")),
    FamilySpec(
        name="lfm2_vl",
        config=tiny_croc_lfm2_vl_config,
        batch=lambda model, left_pad: make_lfm2_vl_batch(model.config, left_pad=left_pad),
        # 4 tokens a 4 x 4-patch tile: 1 x 2 tiles + a 4 x 2 thumbnail, a small 4 x 4 image whole, 2 x 2 tiles + a 2 x 4
        # thumbnail (`LFM2_VL_IMAGES`), the last two in one row; the per-view outputs joined by `croc_images_of`.
        token_counts=(10, 4, 18),
        config_class=CrocLfm2VlConfig, model_class=CrocLfm2VlModel,
        generation_class=CrocLfm2VlForConditionalGeneration,
        parent_model=Lfm2VlModel, parent_generation=Lfm2VlForConditionalGeneration,
        processor_mro=("Lfm2VlProcessor",),  # transformers' own (its image processor needs torchvision)
        # A short-convolution layer (causal by construction: the span applies on the full-attention layer only), then
        # a full-attention one, as LFM2 interleaves them.
        mask_variants=(MaskVariant("hybrid", recurrent_layers=True),),
        grad_reaches=("model.multi_modal_projector.linear_1.weight",
                      "model.language_model.layers.0.conv.in_proj.weight",
                      "model.language_model.layers.0.conv.conv.weight"),
        conversion_kept=("downsample_factor", "text_config.layer_types"),
        tied_head=True,
        # An image's block is its whole extent: the tile and thumbnail markers between its views are inside it.
        reference_layout=lfm2_vl_images_as_one_run,
    ),
)

SPECS_BY_NAME: dict[str, FamilySpec] = {spec.name: spec for spec in SPECS}


__all__ = ["QWEN2_5_VL_SPEC", "QWEN3_VL_SPEC", "SPECS", "SPECS_BY_NAME", "FamilySpec", "MaskVariant", "inputs",
           "language_model_inputs", "layer_masks", "sharing_declarations", "withhold_deepstack"]
