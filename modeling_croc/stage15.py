"""The stage-1.5 path shared by every Croc family (`families.py`: LLaVA-1.5, OneVision, Qwen2.5-VL, Gemma 3, ...): the
prompt-pool replacement, the mixed attention, the VTR loss, the output fields and the step-wide VTR count, attached
to the parent family's own forward (`CrocModelMixin`). Each family only declares where its images' visual tokens
come from and what differs (its modelling file); how its classes are wired into transformers is
`parent_wiring.py`.

Images may have different token counts (AnyRes crops): the visual tokens travel as a `(num_images, T, D)` tensor
padded to the longest image, with a `(num_images, T)` validity mask; with equal counts nothing is padded.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import PreTrainedModel, slice_logits_to_keep
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from .attention_mask import (
    RECURRENT_LAYER_TYPES,
    attention_layer_types,
    bidirectional_block_ids,
    build_mixed_attention_mask,
    image_extent_block_ids,
    is_packed_batch,
    packed_segment_ids,
    prepare_packed_forward,
    recurrent_layer_mask,
    text_position_ids,
)
from .constants import CROC_ONLY_PATTERNS
from .losses import fused_language_model_loss, normalize_vtr_targets, visual_token_reconstruction_loss
from .parent_wiring import forward_with_parent_signature, parent_function
from .profiling import croc_region
from .prompt_pool import CrocPromptPool
from .split_attention import (
    SEGMENTS_KEY,
    SPLIT_ATTENTION,
    build_attention_segments,
    mask_placeholder,
    split_attention_problem,
)
from .vtr_head import CrocVTRHead, build_vtr_head


@dataclass
class CrocModelOutputFields:
    """What the stage-1.5 losses need, next to a base model's own output fields (all None outside stage-1.5
    forwards).

    Attributes:
        visual_tokens: `(num_images, T, D)` projected (and, if configured, normalised) visual tokens before any
            replacement: the VTR targets; zero-padded after each image's own tokens when counts differ.
        visual_token_mask: `(num_images, T)` bool, True at an image's own (not padding) tokens.
        vtr_source_states: `(B, L, D)` the hidden states the VTR prediction is read from.
        image_token_mask: `(B, L)` bool, True at visual-token positions.
        replaced_token_mask: `(num_images, T)` bool, True where a pool token replaced the visual token.
        pool_ids: `(num_images, M)` long, the pool row assigned to each replaced token (-1 pads shorter images).
    """

    visual_tokens: torch.FloatTensor | None = None
    visual_token_mask: torch.BoolTensor | None = None
    vtr_source_states: torch.FloatTensor | None = None
    image_token_mask: torch.BoolTensor | None = None
    replaced_token_mask: torch.BoolTensor | None = None
    pool_ids: torch.LongTensor | None = None


@dataclass
class CrocCausalLMOutputFields:
    """The two Croc loss terms and the pool assignment, next to a generation model's own output fields.

    Attributes:
        lm_loss: next-token loss on the supervised tokens (DCG in stage 1.5).
        vtr_loss: visual-token reconstruction loss (stage-1.5 forwards only).
        visual_tokens: `(num_images, T, D)` the VTR targets (stage-1.5 forwards only).
        visual_token_mask: `(num_images, T)` bool, True at an image's own tokens.
        vtr_norm_sums: `(3,)` detached: the summed L2 norms of the VTR predictions and of the (normalised)
            targets at the reconstructed positions, and their count; the trainer logs the means, so a scale
            mismatch between the two shows in the first logging step.
        pool_ids: `(num_images, M)` pool rows assigned in this forward (-1 pads shorter images).
        replaced_token_mask: `(num_images, T)` bool, which visual tokens were replaced.
    """

    lm_loss: torch.FloatTensor | None = None
    vtr_loss: torch.FloatTensor | None = None
    visual_tokens: torch.FloatTensor | None = None
    visual_token_mask: torch.BoolTensor | None = None
    vtr_norm_sums: torch.FloatTensor | None = None
    pool_ids: torch.LongTensor | None = None
    replaced_token_mask: torch.BoolTensor | None = None


def fields_declared_by(output: ModelOutput, output_class: type[ModelOutput]) -> dict:
    """The set entries of `output` that `output_class` declares too, by name: how an upstream output is carried
    into a Croc output without naming (and so without depending on) the upstream field names."""
    # `__dataclass_fields__`, not `dataclasses.fields()`: the call breaks a `torch.compile(fullgraph=True)` graph.
    declared = output_class.__dataclass_fields__
    return {name: value for name, value in output.items() if name in declared}


def pad_visual_tokens(features: list[torch.Tensor], dtype: torch.dtype) -> tuple[torch.Tensor, torch.LongTensor | None]:
    """Per-image `(T_i, D)` features as `(num_images, max T_i, D)` and the per-image counts (None when all are
    equal: then nothing is padded and the tensor is a plain stack)."""
    lengths = [feature.shape[0] for feature in features]
    if len(set(lengths)) <= 1:
        return torch.stack(features).to(dtype), None
    counts = torch.tensor(lengths, dtype=torch.long, device=features[0].device)
    return pad_sequence(features, batch_first=True).to(dtype), counts


def token_mask(counts: torch.LongTensor | None, num_images: int, num_tokens: int, device) -> torch.BoolTensor:
    """`(num_images, num_tokens)` True at each image's own tokens (all, when `counts` is None)."""
    if counts is None:
        return torch.ones(num_images, num_tokens, dtype=torch.bool, device=device)
    return torch.arange(num_tokens, device=device)[None, :] < counts.to(device)[:, None]


def image_rows(image_token_mask: torch.BoolTensor, token_counts: torch.LongTensor,
               samples: torch.LongTensor | None = None) -> torch.LongTensor:
    """The batch row of each image, from where its tokens fall in `image_token_mask` (images fill the image
    positions in order, as `masked_scatter` places them). With `samples` (`(B, L)`, each token's packed sample
    within its row: `attention_mask.packed_segment_ids`), the sample of each image instead, one non-decreasing id
    per (row, sample): a packed row holds several samples, and a sample is what `matching_scope="row"` means."""
    if samples is not None:
        length = image_token_mask.shape[1]
        rows = torch.arange(image_token_mask.shape[0], device=image_token_mask.device)[:, None]
        keys = (rows * length + samples.to(image_token_mask.device))[image_token_mask]
        starts = torch.cumsum(token_counts, dim=0) - token_counts
        return keys[starts.to(keys.device).clamp_max(max(keys.numel() - 1, 0))]
    row_ends = torch.cumsum(image_token_mask.sum(dim=1), dim=0)
    starts = torch.cumsum(token_counts, dim=0) - token_counts
    return torch.searchsorted(row_ends, starts.to(row_ends.device), right=True)


def normalized_image_features(parent_get_image_features: Callable) -> Callable:
    """The parent's `get_image_features` (its signature kept), with every image's tokens L2-normalised when
    `config.normalize_visual_tokens` (the released code does this at inference too) and the family normalises
    there (`CrocModelMixin.croc_normalize_features`)."""

    @functools.wraps(parent_get_image_features)
    def get_image_features(self, *args, **kwargs):
        outputs = parent_get_image_features(self, *args, **kwargs)
        if self.config.normalize_visual_tokens and self.croc_normalize_features:
            pooled = outputs.pooler_output
            # Kept in the parent's container: a family stacking equal-count images in one tensor (Gemma 3) reads
            # it back as a tensor (`.to`), the others take a list or tuple of per-image tensors.
            outputs.pooler_output = (F.normalize(pooled, dim=-1) if isinstance(pooled, torch.Tensor)
                                     else [F.normalize(features, dim=-1) for features in pooled])
        return outputs

    return get_image_features


class CrocPreTrainedMixin:
    """Initialisation of the Croc-only modules, and the saved folder's `auto_map`, for every Croc pre-trained model
    class."""

    # Parent checkpoints (stage 1, or any conversion of the parent family) have no pool and no VTR head: they
    # start here.
    _keys_to_ignore_on_load_missing = list(CROC_ONLY_PATTERNS)

    # Auto class name -> the name of this family's class it resolves to (`AutoModel` -> the base model, the others
    # -> the generation model); each family sets it.
    croc_auto_classes: dict[str, str] = {}

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, with every Auto class of `croc_auto_classes` in the saved `auto_map`.

        transformers writes only the one Auto class a model class was registered for (`register_for_auto_class`
        holds one name), so `AutoModel` or `AutoModelForPreTraining` with `trust_remote_code=True` would not find
        the copied code. Only a class registered for remote code (`_auto_class` set) writes them: the code is then
        copied next to the weights under this module's name.
        """
        if self._auto_class is not None and self.croc_auto_classes:
            module = type(self).__module__.split(".")[-1]
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.update({auto: f"{module}.{name}" for auto, name in self.croc_auto_classes.items()})
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def is_custom_code(cls) -> bool:
        """False: these classes initialise weights the way transformers' own classes do.

        transformers treats a class defined outside its package as custom code and then marks every module without
        parameters of its own as initialised without calling `_init_weights` on it, guarding against remote code
        that writes weights in place. That skips the parent-level rules of the towers (CLIP's attention blocks
        scale their projections by depth and width), so weights missing from a checkpoint came out at std 0.02
        instead of CLIP's. `_init_weights` here goes through `torch.nn.init`, which `initialize_weights` guards, so
        the parent classes' rules apply unchanged (pinned by `tests/test_transformers_contract.py`)."""
        return False

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, CrocPromptPool):
            module.reset_parameters()
        elif isinstance(module, CrocVTRHead):
            nn.init.normal_(module.position_embedding.weight, std=self.config.text_config.initializer_range)


class CrocModelMixin:
    """A Croc base model: the parent family's base model (`LlavaModel`, `LlavaOnevisionModel`, `Qwen2_5_VLModel`,
    ...) with the prompt pool, whose stage-1.5 forward replaces visual tokens by pool tokens and runs the language
    model under mixed attention.

    The parent's own forward runs in every case; Croc attaches at the points every transformers image-text-to-text
    family shares: the image features per image (`croc_image_features`), the image placeholder positions
    (`config.image_token_id`), the inputs of its language model (a forward pre-hook replaces the visual tokens and
    the attention mask there, after the parent has embedded the text and computed its positions, M-RoPE included),
    and the final hidden states. A family declares:

    * `croc_output_class`: the parent's base-model output with `CrocModelOutputFields`;
    * `croc_image_inputs`: the forward arguments besides `pixel_values` its image features need (`image_sizes`,
      `image_grid_thw`, ...);
    * `croc_normalize_features`: whether `normalize_visual_tokens` applies to `get_image_features`' per-image
      output (False where the family normalises elsewhere, as OneVision per crop);
    * `croc_packing_refusal`: the one line refusing packed rows, for a family whose positions cannot be packed;
    * `croc_explicit_causal_mask`, for a family whose language model is not causal without a mask (PaliGemma);
    * `croc_image_outputs` and `croc_language_model_kwargs`, for a family whose language model reads more of the
      vision outputs than the visual tokens (Qwen3-VL's DeepStack features);
    * `croc_language_model`, for a family whose language model is not at `.language_model` (SmolVLM);
    * `croc_final_norm`, for a family whose language model's final norm is not at `.norm` (LFM2's);
    * `croc_images_of`, for a family whose vision outputs are not one entry per image (InternVL's tiles,
      SmolVLM's samples);
    * `croc_image_block_ids`, the `"image"` span's blocks, for a family whose image is not one block from its first
      placeholder to its last;
    * `image_token_counts` on the generation class, when images have different token counts.
    """

    croc_output_class: type[ModelOutput]
    croc_image_inputs: tuple[str, ...] = ()
    croc_normalize_features: bool = True
    # Why the family cannot take packed rows (position_ids restarting per sample), or None where it can.
    croc_packing_refusal: str | None = None
    # The language model attends non-causally where it is given no mask (PaliGemma's Gemma, whose config turns its
    # attention modules' `is_causal` off; sdpa skips a plain causal mask): span "none" builds the causal one itself.
    croc_explicit_causal_mask: bool = False

    def __init_subclass__(cls, **kwargs):
        # The parent's signatures stay visible: `generate` encodes images before prefill with the arguments it
        # finds in `get_image_features`' signature, and reads `forward`'s to accept `image_sizes` and the like.
        super().__init_subclass__(**kwargs)
        if (parent_forward := parent_function(cls, "forward", CROC_MIXINS)) is not None:
            cls.forward = forward_with_parent_signature(CrocModelMixin.forward, parent_forward)
        if (parent_features := parent_function(cls, "get_image_features", CROC_MIXINS)) is not None:
            cls.get_image_features = normalized_image_features(parent_features)

    def __init__(self, config):
        super().__init__(config)
        self.prompt_pool = CrocPromptPool(config)
        self.post_init()

    def croc_image_features(self, pixel_values: torch.Tensor, **image_inputs) -> list[torch.Tensor]:
        """One `(T_i, D)` visual-token tensor per image, as the stage-1.5 path and the pool calibration take them.

        Args:
            image_inputs: the batch's `croc_image_inputs` entries (`image_sizes`, `image_grid_thw`, ...).
        """
        return list(self.get_image_features(pixel_values, **image_inputs, return_dict=True).pooler_output)

    def croc_image_outputs(self, pixel_values: torch.Tensor, **image_inputs) -> ModelOutput:
        """The vision outputs the stage-1.5 forward reads, as `mm_encoder_outputs["image"]` holds them:
        `pooler_output` is one `(T_i, D)` visual-token tensor per image. By default only those
        (`croc_image_features`); a family whose language model reads more of its vision outputs (Qwen3-VL's
        DeepStack features) returns them whole, for `croc_language_model_kwargs`."""
        return BaseModelOutputWithPooling(pooler_output=self.croc_image_features(pixel_values, **image_inputs))

    def croc_language_model_kwargs(self, image_outputs: ModelOutput, image_token_mask: torch.BoolTensor,
                                   replaced_token_mask: torch.BoolTensor, visual_token_mask: torch.BoolTensor) -> dict:
        """Keyword arguments, besides the embeddings and the mask, that the stage-1.5 forward gives the language
        model from the images: what the parent's forward would have derived from them, had it seen them (it runs
        without images there). None by default; Qwen3-VL passes its DeepStack features.

        Args:
            image_outputs: the vision outputs (`croc_image_outputs`, or the precomputed `mm_encoder_outputs`).
            image_token_mask: `(B, L)` True at the visual-token positions.
            replaced_token_mask: `(num_images, T)` True where a pool token replaced the visual token.
            visual_token_mask: `(num_images, T)` True at an image's own (not padding) tokens.
        """
        return {}

    @property
    def croc_language_model(self) -> nn.Module:
        """The language model the parent's forward calls with the text embeddings, where the stage-1.5 inputs go:
        `language_model` in most families; a family naming it otherwise (SmolVLM's `text_model`) returns it here."""
        return self.language_model

    @property
    def croc_final_norm(self) -> nn.Module | None:
        """The language model's final norm (its input is the last decoder layer's output, what
        `vtr_prediction="last_layer"` reads): `norm` in most families; a family naming it otherwise (LFM2's
        `embedding_norm`) returns it here."""
        return getattr(self.croc_language_model, "norm", None)

    def croc_images_of(self, features: list[torch.Tensor], input_ids: torch.LongTensor) -> list[torch.Tensor]:
        """The vision outputs' `pooler_output` entries regrouped into one `(T_i, D)` tensor per image, the unit the
        pool masks, matches and reconstructs. By default each entry is an image; a family whose vision outputs come
        per tile (InternVL) or per sample (SmolVLM) joins or splits them here, reading the placeholder layout of
        `input_ids` (the parent's outputs say nothing of which tiles make an image).

        Args:
            features: the `pooler_output` entries, `(T_k, D)` each, in the order they fill the visual positions.
            input_ids: `(B, L)` the batch's token ids.
        """
        return features

    def croc_image_block_ids(self, image_token_mask: torch.BoolTensor, token_counts: torch.LongTensor
                             ) -> torch.LongTensor:
        """The bidirectional blocks of `bidirectional_span="image"`: `(B, L)` long, a block id at the positions of
        each image's block, -1 elsewhere. Each image's whole extent, told apart by `token_counts`
        (`attention_mask.image_extent_block_ids`), not by runs of placeholders: two images with nothing between
        them (`<image><image>` in a LLaVA prompt) are two blocks, and an image whose processor puts other tokens
        among its placeholders (Pixtral's row breaks, SmolVLM's view markers) is one.

        Args:
            image_token_mask: `(B, L)` True at the visual-token positions.
            token_counts: `(num_images,)` visual tokens of each image, in the order they fill the positions.
        """
        return image_extent_block_ids(image_token_mask, token_counts)

    def croc_native_block_ids(self, forward_kwargs: dict) -> torch.LongTensor | None:
        """The bidirectional blocks the parent family's own forward puts into its mask outside stage 1.5 (stages 1
        and 2, inference), `(B, L)` as `croc_image_block_ids`, or None where it is plain causal (the default). The
        `croc_split` path computes them in training forwards, where the parent's own mask is not built.

        Args:
            forward_kwargs: the parent's other forward arguments (`token_type_ids`, ...).
        """
        return None

    # `can_return_tuple` takes `return_dict` (the argument, else `config.return_dict`) off the call and turns the
    # output into `to_tuple()` when it is False: the body below always works on output objects.
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        mm_encoder_outputs: dict | None = None,
        croc_objectives: bool = False,
        croc_generator: torch.Generator | None = None,
        croc_image_order: torch.LongTensor | None = None,
        **kwargs,
    ) -> ModelOutput:
        """The parent's forward, or with `croc_objectives` the stage-1.5 forward.

        Args:
            labels: `(B, L)` aligned with `input_ids`; only read to place the `"prompt"` bidirectional span.
            mm_encoder_outputs: precomputed vision outputs (`{"image": BaseModelOutputWithPooling}`), as the
                parent takes them.
            croc_objectives: run the stage-1.5 path (pool replacement and mixed attention).
            croc_generator: seeded generator for the random token mask.
            croc_image_order: `(num_images,)` for a packed batch, each image's rank in the order the batch arrived
                (the collator's `croc_image_order`): the token masks are drawn in that order.
            kwargs: the rest of the parent's forward arguments (the cache under the installed transformers' name
                for it, `image_sizes`, `image_grid_thw`, ...), passed on unchanged.
        """
        shape = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        if is_packed_batch(attention_mask, position_ids, shape[0]):
            if self.croc_packing_refusal:
                raise ValueError(self.croc_packing_refusal)
            prepare_packed_forward(self.config.text_config, shape[0], kwargs)
        if croc_objectives:
            return self._croc_forward(input_ids, pixel_values, mm_encoder_outputs, attention_mask, position_ids,
                                      labels, croc_generator, croc_image_order, kwargs)
        language_model_inputs = None
        if self._uses_split_attention(kwargs):
            language_model_inputs = self._split_attention_inputs(shape, attention_mask, text_position_ids(position_ids),
                                                                 self.croc_native_block_ids(kwargs))
        with self._language_model_inputs(language_model_inputs):
            outputs = super().forward(
                input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                position_ids=position_ids, inputs_embeds=inputs_embeds, mm_encoder_outputs=mm_encoder_outputs,
                # Explicit: with `config.return_dict=False` the parent would otherwise hand back a tuple.
                return_dict=True, **kwargs,
            )
        return self.croc_output_class(**fields_declared_by(outputs, self.croc_output_class))

    def _croc_forward(
        self,
        input_ids: torch.LongTensor | None,
        pixel_values: torch.Tensor | None,
        mm_encoder_outputs: dict | None,
        attention_mask: torch.Tensor | None,
        position_ids: torch.LongTensor | None,
        labels: torch.LongTensor | None,
        generator: torch.Generator | None,
        image_order: torch.LongTensor | None,
        kwargs: dict,
    ) -> ModelOutput:
        """The stage-1.5 forward: the parent's forward on the text, with the (partly replaced) visual tokens and the
        mixed attention put into its language model's inputs; the output carries the `CrocModelOutputFields`.

        Args:
            pixel_values, mm_encoder_outputs: the images, as pixels or as precomputed vision outputs
                (`{"image": ...}` whose `pooler_output` holds one `(T_i, D)` tensor per image); neither for a
                text-only batch.
            image_order: for a packed batch, each image's rank in the order the batch arrived (the collator's
                `croc_image_order`): the token masks are drawn in that order.
            kwargs: the parent's other forward arguments, its `croc_image_inputs` among them.
        """
        if input_ids is None:
            raise ValueError("the stage-1.5 forward locates visual tokens by `input_ids`; pass input_ids")
        if kwargs.get("pixel_values_videos") is not None or (mm_encoder_outputs or {}).get("video") is not None:
            raise ValueError("stage 1.5 trains on images; this batch has videos (pixel_values_videos)")
        if kwargs.get("input_features") is not None or (mm_encoder_outputs or {}).get("audio") is not None:
            raise ValueError("stage 1.5 trains on images; this batch has audio (input_features)")
        image_outputs = (mm_encoder_outputs or {}).get("image")
        if pixel_values is not None and image_outputs is None:
            image_inputs = {name: kwargs[name] for name in self.croc_image_inputs if kwargs.get(name) is not None}
            with croc_region("vision"):
                image_outputs = self.croc_image_outputs(pixel_values, **image_inputs)
        image_features = (None if image_outputs is None
                          else self.croc_images_of(list(image_outputs.pooler_output), input_ids))
        embeddings = self.get_input_embeddings().weight
        image_token_mask = input_ids == self.config.image_token_id
        counts = None
        if image_features:
            visual_tokens, counts = pad_visual_tokens(list(image_features), embeddings.dtype)
        else:
            # A text-only batch still runs the pool on zero images, so the pool takes part in the graph on every
            # rank (DDP and ZeRO expect each parameter's gradient on every step) without a dummy image.
            visual_tokens = embeddings.new_zeros(0, 0, embeddings.shape[-1])
        num_images, num_tokens = visual_tokens.shape[:2]
        valid = token_mask(counts, num_images, num_tokens, visual_tokens.device)
        expected = int(valid.sum())
        if int(image_token_mask.sum()) != expected:
            raise ValueError(f"{int(image_token_mask.sum())} image tokens in input_ids but {num_images} images with "
                             f"{expected} visual tokens in all")
        # Matching groups of `matching_scope="row"`: the samples, which in a packed batch share rows.
        samples = packed_segment_ids(text_position_ids(position_ids) if attention_mask is None else None,
                                     image_token_mask.shape)
        rows = image_rows(image_token_mask, valid.sum(dim=1), samples) if num_images else None

        prompted = self.prompt_pool(visual_tokens, generator=generator, token_counts=counts, image_rows=rows,
                                    draw_order=image_order)
        tokens = prompted.tokens if counts is None else prompted.tokens[valid]
        extra_inputs = {} if image_outputs is None else self.croc_language_model_kwargs(
            image_outputs, image_token_mask, prompted.replaced, valid)
        with croc_region("mask building"):
            # Where the samples of a packed row start (M-RoPE positions read as the parent's text model reads them).
            sample_positions = text_position_ids(position_ids)
            span = self.config.bidirectional_span
            if span == "image":  # the family decides what one image's block is (`croc_image_block_ids`)
                block_ids = self.croc_image_block_ids(image_token_mask, valid.sum(dim=1))
            else:
                block_ids = bidirectional_block_ids(span, image_token_mask, labels, attention_mask, sample_positions)
            if block_ids is None and self.croc_explicit_causal_mask:
                # No block, but a mask all the same: the language model would read its absence as non-causal.
                block_ids = torch.full_like(input_ids, -1)
            split_inputs = None
            if self.config.text_config._attn_implementation == SPLIT_ATTENTION:
                split_inputs = self._split_attention_inputs(input_ids.shape, attention_mask, sample_positions,
                                                            block_ids)

        def stage15_inputs(language_model_kwargs: dict) -> None:
            # The parent embedded the placeholders: the visual tokens go where its own image features would.
            embeds = language_model_kwargs["inputs_embeds"]
            embeds = embeds.masked_scatter(image_token_mask.unsqueeze(-1).to(embeds.device), tokens.to(embeds.dtype))
            language_model_kwargs["inputs_embeds"] = embeds
            language_model_kwargs.update(extra_inputs)
            if split_inputs is not None:
                language_model_kwargs.update(split_inputs)
                return
            with croc_region("mask building"):
                language_model_kwargs["attention_mask"] = build_mixed_attention_mask(
                    self.config.text_config, embeds, attention_mask, block_ids, sample_positions)

        with (croc_region("language model"), self._language_model_inputs(stage15_inputs),
              self._vtr_source_capture() as before_final_norm):
            # No images for the parent: the visual tokens reach its language model through `stage15_inputs`.
            outputs = super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                      return_dict=True, **kwargs)
        return self.croc_output_class(
            **fields_declared_by(outputs, self.croc_output_class),
            visual_tokens=visual_tokens,
            visual_token_mask=valid,
            vtr_source_states=before_final_norm[0] if before_final_norm else outputs.last_hidden_state,
            image_token_mask=image_token_mask,
            replaced_token_mask=prompted.replaced,
            pool_ids=prompted.pool_ids,
        )

    @contextlib.contextmanager
    def _language_model_inputs(self, edit: Callable[[dict], None] | dict | None):
        """While the parent's forward runs, change the keyword arguments its language model is called with:
        `edit(kwargs)` edits them in place, a dict is merged into them (None: nothing changes).

        Every family calls its language model with keyword arguments once per forward, after the image features
        are scattered and the positions computed, so this is the one place the mask and the visual tokens of every
        family can be set without copying its forward."""
        if edit is None:
            yield
            return
        if isinstance(edit, dict):
            extra = edit
            edit = lambda language_model_kwargs: language_model_kwargs.update(extra)  # noqa: E731

        def hook(module, args, kwargs):
            if args:
                raise TypeError(f"{type(module).__name__} was called with positional arguments; Croc sets its "
                                "inputs by keyword")
            edit(kwargs)
            return args, kwargs

        handle = self.croc_language_model.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()

    def _split_attention_inputs(self, shape, attention_mask, position_ids,
                                block_ids: torch.LongTensor | None = None) -> dict:
        """For the `croc_split` attention: the language model's inputs that carry the batch's query segments (they
        reach every layer) and the placeholder it takes as its mask: no L x L mask is built. `position_ids` are the
        sample positions (`text_position_ids`), not M-RoPE ones."""
        text_config = self.config.text_config
        problem = split_attention_problem(text_config)
        if problem is not None:
            raise ValueError(problem)
        mask = mask_placeholder(shape[0], self.croc_language_model.device)
        layer_types, keyed = attention_layer_types(text_config)
        if keyed and set(layer_types) & set(RECURRENT_LAYER_TYPES):
            # A recurrent layer (Gated DeltaNet, LFM2's convolution) reads no segments, only the padding mask (the
            # placeholder would read as none, and padding would enter its state): its parent's, as on the mask path.
            recurrent = recurrent_layer_mask(text_config, shape, attention_mask)
            mask = {kind: recurrent if kind in RECURRENT_LAYER_TYPES else mask for kind in layer_types}
        return {SEGMENTS_KEY: build_attention_segments(shape, block_ids, attention_mask, position_ids),
                "attention_mask": mask}

    def _uses_split_attention(self, kwargs: dict) -> bool:
        """Whether a forward without the Croc objectives goes through the segments: a training forward on the
        `croc_split` attention. Inference and generation take transformers' sdpa path: any forward given a cache is
        generation, its prefill too (a training forward is given none; a static cache's keys and mask span its whole
        length, not the prompt's), also on a model left in train mode."""
        if self.config.text_config._attn_implementation != SPLIT_ATTENTION or not self.training:
            return False
        return not any(isinstance(value, Cache) for value in kwargs.values())

    @contextlib.contextmanager
    def _vtr_source_capture(self):
        """With `vtr_prediction="last_layer"`, collects the input of the LM's final norm (the last decoder layer's
        output) during the forward; yields the list it lands in (empty for `"final_norm"`)."""
        captured: list[torch.Tensor] = []
        if self.config.vtr_prediction != "last_layer":
            yield captured
            return
        final_norm = self.croc_final_norm
        if final_norm is None:
            raise ValueError(f"vtr_prediction='last_layer' needs the language model's final norm at `.norm`; "
                             f"{type(self.croc_language_model).__name__} has none")
        handle = final_norm.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
        try:
            yield captured
        finally:
            handle.remove()


def share_of_step(labels: torch.Tensor, shift_labels: torch.Tensor | None,
                  num_items_in_batch: int | torch.Tensor | None) -> float | torch.Tensor:
    """This micro-batch's share of the step's supervised tokens (counted as the Trainer counts `num_items_in_batch`),
    1 without a count. A term that is one micro-batch's mean (a router's load-balancing loss) weighted by it adds up
    over the step as the LM loss does: with `accepts_loss_kwargs` the Trainer neither divides a micro-batch's loss by
    the accumulation steps nor leaves it unscaled across processes, so an unweighted mean counted once per
    micro-batch and per process, its weight growing with the split."""
    if num_items_in_batch is None:
        return 1.0
    counted = shift_labels if shift_labels is not None else labels[..., 1:]
    return counted.ne(-100).sum() / num_items_in_batch


class CrocForConditionalGenerationMixin:
    """A Croc generation model: the parent family's `...ForConditionalGeneration` with a Croc base model, the LM
    head and the VTR head; logits, the LM and VTR losses, the pool, the step-wide VTR count. A family declares:

    * `croc_base_model_class`: its Croc base model (a `CrocModelMixin` class);
    * `croc_output_class`: the parent's causal-LM output with `CrocCausalLMOutputFields`;
    * `croc_image_layout_inputs`: the batch entries besides `input_ids` that decide how many visual tokens each
      image has (`image_token_counts`), for the trainer's VTR count;
    * `croc_auxiliary_loss`, for a family whose parent adds a term of its own to the LM loss (a mixture of experts'
      router load-balancing loss), and `croc_text_config_defaults`, the forward arguments the parent reads from its
      text config when they are None and passes on to its base model (`output_router_logits`);
    * `croc_final_logit_softcapping` and `croc_base_model_logits_to_keep`, for a family whose parent soft-caps its
      logits or passes `logits_to_keep` to its base model (Gemma 4).
    """

    croc_base_model_class: type[nn.Module]
    croc_output_class: type[ModelOutput]
    croc_image_layout_inputs: tuple[str, ...] = ()
    croc_text_config_defaults: tuple[str, ...] = ()
    # The losses are normalised by the Trainer's `num_items_in_batch` (read from the forward's kwargs), whatever the
    # parent says: Qwen2.5-VL and Qwen3-VL declare False, so the Trainer passed no count and averaged each
    # micro-batch's own mean, and the step's loss and update depended on how the global batch was split.
    accepts_loss_kwargs: bool = True
    # Compute a training forward's LM loss without its logits (`modeling_croc.losses.fused_language_model_loss`);
    # the trainer sets it for `use_liger_kernel`.
    fused_lm_loss: bool = False
    # The parent soft-caps its logits by `text_config.final_logit_softcapping` (Gemma 4; Gemma 3's generation class
    # does not): the head does too.
    croc_final_logit_softcapping: bool = False
    # The parent passes `logits_to_keep` to its base model (Gemma 4's text model leaves the other positions out from
    # its first KV-shared layer on): outside stage 1.5 it is passed on as well, so generation computes what the
    # parent computes.
    croc_base_model_logits_to_keep: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if (parent_forward := parent_function(cls, "forward", CROC_MIXINS)) is not None:
            cls.forward = forward_with_parent_signature(CrocForConditionalGenerationMixin.forward, parent_forward)

    def __init__(self, config):
        # Not the parent's __init__: it would build a whole base model of its own only to be replaced.
        PreTrainedModel.__init__(self, config)
        self.model = self.croc_base_model_class(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.vtr_head = build_vtr_head(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict | None = None,
        croc_objectives: bool | None = None,
        croc_generator: torch.Generator | None = None,
        croc_image_order: torch.LongTensor | None = None,
        num_vtr_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ) -> ModelOutput:
        r"""
        Args:
            labels (`torch.LongTensor` of shape `(B, L)`, *optional*):
                Token ids to predict, aligned with `input_ids` (shifted inside the loss), -100 where unsupervised.
            mm_encoder_outputs (`dict[str, BaseModelOutputWithPooling]`, *optional*):
                Precomputed vision outputs, as the parent class takes them.
            croc_objectives (`bool`, *optional*):
                Force the stage-1.5 path on or off. Default: on in training forwards when `config.croc_pretraining`.
            croc_generator (`torch.Generator`, *optional*):
                Seeded generator for the random token mask; the trainer passes one per rank and step.
            croc_image_order (`torch.LongTensor` of shape `(num_images,)`, *optional*):
                For a packed batch (`trainer.collator`), each image's rank in the order the batch arrived, so the
                token masks are those of the unpacked batch. Read by the stage-1.5 forward only.
            num_vtr_items_in_batch (`int` or `torch.Tensor`, *optional*):
                VTR tokens in the whole optimiser step (see `num_vtr_items`), the counterpart of
                `num_items_in_batch` for the LM loss.
            kwargs:
                The rest of the parent's forward arguments (the cache under the installed transformers' name for it,
                `image_sizes`, `image_grid_thw`, ...), passed on to the base model; the loss reads
                `num_items_in_batch` from them.
        """
        # Generation never takes the stage-1.5 path: inside `generate` (with or without a cache), or a forward given
        # a cache and no labels (a decoding loop of its own). A training forward with a cache (prefix tuning) keeps it.
        generating = getattr(self, "_croc_generating", False) or (
            labels is None and any(isinstance(value, Cache) for value in kwargs.values()))
        croc_objectives = self.croc_objectives_on(croc_objectives, generating=generating)
        for name in self.croc_text_config_defaults:
            # As the parent's forward: None (or absent) is the text config's value, which the base model is given.
            if kwargs.get(name) is None:
                kwargs[name] = getattr(self.config.text_config, name)
        skip_logits = kwargs.pop("skip_logits", None)  # the Trainer's, for `use_liger_kernel`: read by the head only
        # Stage 1.5 reads every position's hidden state (the VTR loss): the base model keeps them all there.
        keep = {"logits_to_keep": logits_to_keep} if self.croc_base_model_logits_to_keep and not croc_objectives else {}
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            labels=labels,
            mm_encoder_outputs=mm_encoder_outputs,
            croc_objectives=croc_objectives,
            croc_generator=croc_generator,
            croc_image_order=croc_image_order,
            return_dict=True,
            **keep,
            **kwargs,
        )
        return self._croc_outputs(outputs, labels, logits_to_keep, croc_objectives, num_vtr_items_in_batch,
                                  self.croc_output_class, skip_logits=skip_logits, attention_mask=attention_mask,
                                  **kwargs)

    def generate(self, *args, **kwargs):
        """The parent's `generate`, whose forwards are the plain model's whatever the train/eval mode (`Trainer.train`
        leaves the model in train mode, where a forward's default is the stage-1.5 path)."""
        previous, self._croc_generating = getattr(self, "_croc_generating", False), True
        try:
            return super().generate(*args, **kwargs)
        finally:
            self._croc_generating = previous

    @property
    def prompt_pool(self) -> CrocPromptPool:
        return self.model.prompt_pool

    @torch.no_grad()
    def calibrate_prompt_pool(self, pixel_values: torch.Tensor, generator: torch.Generator | None = None,
                              **image_inputs) -> None:
        """Draw the pool from the per-feature statistics of the visual tokens of `pixel_values` (the
        `visual_stats` initialisation) and record it in the config, so it happens once per model."""
        features = self.model.croc_image_features(pixel_values, **image_inputs)
        self.prompt_pool.calibrate(torch.cat(list(features)), generator=generator)
        self.config.prompt_pool_calibrated = True

    def croc_objectives_on(self, croc_objectives: bool | None, generating: bool = False) -> bool:
        """Whether a forward runs the stage-1.5 path: as forced, else in training forwards of a model with
        `config.croc_pretraining` (evaluation and `generate` always run the plain parent model, `generate` also on a
        model left in train mode, as `Trainer.train` leaves it)."""
        if croc_objectives is None:
            return self.training and self.config.croc_pretraining and not generating
        return croc_objectives

    def croc_auxiliary_loss(self, outputs: ModelOutput, attention_mask: torch.Tensor | None,
                            **kwargs) -> tuple[torch.Tensor, float] | None:
        """The term the parent's forward adds to its LM loss besides the next-token loss, and its weight, computed as
        the parent computes it from the base model's `outputs` (whatever forward produced them: stage 1.5's too), or
        None where it adds none (the default). The total takes `weight * term` where the parent's does: with labels.

        Args:
            attention_mask: the forward's `attention_mask`, as the parent reads it.
            kwargs: the rest of the forward's arguments (`output_router_logits`, ...).
        """
        return None

    def image_token_counts(self, input_ids: torch.LongTensor, num_images: int, **image_layout) -> torch.LongTensor:
        """`(num_images,)` visual tokens of each image of a batch, without running the vision tower: the base model's
        `image_token_counts` of the batch's `croc_image_layout_inputs` (AnyRes sizes, native-resolution grids) where
        the family declares them and the batch has the first, else equal counts."""
        layout = {name: image_layout[name] for name in self.croc_image_layout_inputs
                  if image_layout.get(name) is not None}
        if self.croc_image_layout_inputs and self.croc_image_layout_inputs[0] in layout:
            return self.model.image_token_counts(**layout)
        total = int((input_ids == self.config.image_token_id).sum())
        return torch.full((num_images,), total // max(num_images, 1), dtype=torch.long)

    def num_vtr_items(self, input_ids: torch.LongTensor, num_images: int, **image_layout) -> int:
        """VTR target tokens in a batch, image by image: what `num_vtr_items_in_batch` counts across micro-batches.
        `image_layout`: the batch's `croc_image_layout_inputs` (AnyRes models)."""
        if num_images == 0:
            return 0
        counts = self.image_token_counts(input_ids, num_images, **image_layout)
        if self.config.vtr_positions == "all":
            return int(counts.sum())
        return int(self.config.num_masked_tokens_per_image(counts).sum())

    def _croc_outputs(
        self,
        outputs: ModelOutput,
        labels: torch.LongTensor | None,
        logits_to_keep: int | torch.Tensor,
        croc_objectives: bool,
        num_vtr_items_in_batch: int | torch.Tensor | None,
        output_class: type[ModelOutput],
        skip_logits: bool | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> ModelOutput:
        """Logits, `loss = vtr_loss_weight * vtr_loss + lm_loss` (plus the parent's own auxiliary term where the
        family has one: `croc_auxiliary_loss`) and the Croc fields from the base model's output.

        With `fused_lm_loss` set (the trainer's `use_liger_kernel`), a forward with labels that skips its logits
        computes the LM loss from the hidden states and the LM head's weight without materialising them, and returns
        none. It skips them in training, or where `skip_logits` says so (the Trainer sets it for an evaluation that
        keeps only the loss), as Liger's own causal-LM forwards do."""
        lm_loss, logits = None, None
        if skip_logits is None:
            skip_logits = self.training
        # Read as the parent reads it: a text config without the field (PaliGemma 1's Gemma) caps nothing.
        cap = (getattr(self.config.text_config, "final_logit_softcapping", None)
               if self.croc_final_logit_softcapping else None)
        if labels is not None and skip_logits and self.fused_lm_loss:
            if cap:
                raise ValueError(f"the fused LM loss (use_liger_kernel) has no final logit soft-capping; "
                                 f"{self.config.model_type} caps its logits at {cap}: train without use_liger_kernel")
            lm_loss = fused_language_model_loss(outputs.last_hidden_state, self.lm_head.weight, labels,
                                                kwargs.get("num_items_in_batch"),
                                                shift_labels=kwargs.get("shift_labels"))
        else:
            # A base model given `logits_to_keep` may have sliced already: slicing again keeps the same positions.
            logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
            if cap:  # as the parent: the same operations in the same order
                logits = torch.tanh(logits / cap) * cap
            if labels is not None:
                lm_loss = self.loss_function(
                    logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
                )
        vtr_loss, vtr_norm_sums = self._vtr_loss(outputs, num_vtr_items_in_batch) if croc_objectives else (None, None)
        loss = lm_loss
        auxiliary = self.croc_auxiliary_loss(outputs, attention_mask, **kwargs)
        # The parent's total with labels, its term weighted as the parent weights it: stages 1 and 2 give the
        # parent's loss exactly; stage 1.5 adds the VTR term to that total. `lm_loss` stays the next-token loss.
        if auxiliary is not None and lm_loss is not None:
            term, weight = auxiliary
            share = share_of_step(labels, kwargs.get("shift_labels"), kwargs.get("num_items_in_batch"))
            loss = lm_loss + weight * share * term.to(lm_loss.device)
        if vtr_loss is not None:
            weighted = self.config.vtr_loss_weight * vtr_loss
            loss = weighted if loss is None else loss + weighted
        return output_class(
            loss=loss,
            lm_loss=lm_loss,
            vtr_loss=vtr_loss,
            vtr_norm_sums=vtr_norm_sums,
            logits=logits,
            **fields_declared_by(outputs, output_class),
            **({} if auxiliary is None else {"aux_loss": auxiliary[0]}),
        )

    def _vtr_loss(self, outputs: ModelOutput, num_items_in_batch) -> tuple[torch.Tensor, torch.Tensor]:
        """VTR loss from the hidden states at the visual positions (position p predicts token p: no shift), and the
        `vtr_norm_sums` diagnostics."""
        targets = normalize_vtr_targets(outputs.visual_tokens, self.config.vtr_target_normalization)
        num_images, num_tokens, hidden = targets.shape
        valid = outputs.visual_token_mask
        states = outputs.vtr_source_states[outputs.image_token_mask]
        if states.shape[0] == num_images * num_tokens:
            predictions = states.view(num_images, num_tokens, hidden)
        else:  # images of different sizes: back to the padded layout of the targets
            predictions = states.new_zeros(num_images, num_tokens, hidden).index_put(valid.nonzero(as_tuple=True),
                                                                                     states)
        if self.vtr_head is not None:
            with croc_region("VTR head"):
                predictions = self.vtr_head(predictions)
        positions = valid if self.config.vtr_positions == "all" else outputs.replaced_token_mask
        with croc_region("VTR loss"):
            loss = visual_token_reconstruction_loss(
                predictions,
                targets,
                positions,
                distance=self.config.vtr_loss,
                smooth_l1_beta=self.config.vtr_smooth_l1_beta,
                num_items_in_batch=num_items_in_batch,
            )
            with torch.no_grad():
                norm_sums = torch.stack([  # select the positions first: the float copy is then only of those
                    predictions.detach()[positions].float().norm(dim=-1).sum(),
                    targets.detach()[positions].float().norm(dim=-1).sum(),
                    positions.sum().float(),
                ])
        return loss, norm_sums


# The classes whose methods are Croc's own, not a parent family's (`parent_function`).
CROC_MIXINS = (CrocPreTrainedMixin, CrocModelMixin, CrocForConditionalGenerationMixin)


__all__ = [
    "CrocCausalLMOutputFields",
    "CrocForConditionalGenerationMixin",
    "CrocModelMixin",
    "CrocModelOutputFields",
    "CrocPreTrainedMixin",
    "fields_declared_by",
    "image_rows",
    "pad_visual_tokens",
    "share_of_step",
    "token_mask",
]
