"""The stage-1.5 path shared by every Croc model class (on `LlavaForConditionalGeneration` and on
`LlavaOnevisionForConditionalGeneration`): the prompt-pool replacement, the mixed attention, the VTR loss, the
output fields and the step-wide VTR count. Each model class only says how it gets its images' visual tokens.

Images may have different token counts (AnyRes crops): the visual tokens travel as a `(num_images, T, D)` tensor
padded to the longest image, with a `(num_images, T)` validity mask; with equal counts nothing is padded.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers.cache_utils import Cache
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils import ModelOutput

from .attention_mask import bidirectional_block_ids, build_mixed_attention_mask
from .losses import fused_language_model_loss, normalize_vtr_targets, visual_token_reconstruction_loss
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


def image_rows(image_token_mask: torch.BoolTensor, token_counts: torch.LongTensor) -> torch.LongTensor:
    """The batch row of each image, from where its tokens fall in `image_token_mask` (images fill the image
    positions in order, as `masked_scatter` places them)."""
    row_ends = torch.cumsum(image_token_mask.sum(dim=1), dim=0)
    starts = torch.cumsum(token_counts, dim=0) - token_counts
    return torch.searchsorted(row_ends, starts.to(row_ends.device), right=True)


class CrocPreTrainedMixin:
    """Initialisation of the Croc-only modules, and the saved folder's `auto_map`, for every Croc pre-trained model
    class."""

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
    """The stage-1.5 input path of a Croc base model: prompt-pool replacement of the visual tokens, then the language
    model under mixed attention. The class must have `prompt_pool`, `language_model`, `get_input_embeddings` and
    `config`."""

    def _croc_forward(
        self,
        input_ids: torch.LongTensor | None,
        pixel_values: torch.Tensor | None,
        mm_encoder_outputs: dict | None,
        attention_mask: torch.Tensor | None,
        position_ids: torch.LongTensor | None,
        labels: torch.LongTensor | None,
        generator: torch.Generator | None,
        image_inputs: dict | None = None,
        image_order: torch.LongTensor | None = None,
        **kwargs,
    ) -> tuple[ModelOutput, dict]:
        """The language model's output and the `CrocModelOutputFields` values of a stage-1.5 forward.

        Args:
            pixel_values, mm_encoder_outputs: the images, as pixels or as precomputed vision outputs
                (`{"image": ...}` whose `pooler_output` holds one `(T_i, D)` tensor per image); neither for a
                text-only batch.
            image_inputs: what else the class's `croc_image_features` needs (AnyRes: `image_sizes`, ...).
            image_order: for a packed batch, each image's rank in the order the batch arrived (the collator's
                `croc_image_order`): the token masks are drawn in that order.
        """
        if input_ids is None:
            raise ValueError("the stage-1.5 forward locates visual tokens by `input_ids`; pass input_ids")
        image_outputs = (mm_encoder_outputs or {}).get("image")
        image_features = None if image_outputs is None else list(image_outputs.pooler_output)
        if pixel_values is not None and image_outputs is None:
            with croc_region("vision"):
                image_features = self.croc_image_features(pixel_values, **(image_inputs or {}))
        inputs_embeds = self.get_input_embeddings()(input_ids)
        hidden = inputs_embeds.shape[-1]
        image_token_mask = input_ids == self.config.image_token_id
        counts = None
        if image_features:
            visual_tokens, counts = pad_visual_tokens(list(image_features), inputs_embeds.dtype)
        else:
            # A text-only batch still runs the pool on zero images, so the pool takes part in the graph on every
            # rank (DDP and ZeRO expect each parameter's gradient on every step) without a dummy image.
            visual_tokens = inputs_embeds.new_zeros(0, 0, hidden)
        num_images, num_tokens = visual_tokens.shape[:2]
        valid = token_mask(counts, num_images, num_tokens, visual_tokens.device)
        expected = int(valid.sum())
        if int(image_token_mask.sum()) != expected:
            raise ValueError(f"{int(image_token_mask.sum())} image tokens in input_ids but {num_images} images with "
                             f"{expected} visual tokens in all")
        rows = image_rows(image_token_mask, valid.sum(dim=1)) if num_images else None

        prompted = self.prompt_pool(visual_tokens, generator=generator, token_counts=counts, image_rows=rows,
                                    draw_order=image_order)
        tokens = prompted.tokens if counts is None else prompted.tokens[valid]
        inputs_embeds = inputs_embeds.masked_scatter(image_token_mask.unsqueeze(-1), tokens)

        with croc_region("mask building"):
            span = self.config.bidirectional_span
            block_ids = bidirectional_block_ids(span, image_token_mask, labels, attention_mask, position_ids)
            if self.config.text_config._attn_implementation == SPLIT_ATTENTION:
                mixed_mask = self._split_attention_inputs(input_ids.shape, attention_mask, position_ids, kwargs,
                                                          block_ids)
            else:
                mixed_mask = build_mixed_attention_mask(
                    self.config.text_config, inputs_embeds, attention_mask, block_ids, position_ids
                )
        with croc_region("language model"), self._vtr_source_capture() as before_final_norm:
            outputs = self.language_model(
                attention_mask=mixed_mask, position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True,
                **kwargs,
            )
        croc_fields = {
            "visual_tokens": visual_tokens,
            "visual_token_mask": valid,
            "vtr_source_states": before_final_norm[0] if before_final_norm else outputs.last_hidden_state,
            "image_token_mask": image_token_mask,
            "replaced_token_mask": prompted.replaced,
            "pool_ids": prompted.pool_ids,
        }
        return outputs, croc_fields

    def _split_attention_inputs(self, shape, attention_mask, position_ids, kwargs: dict,
                                block_ids: torch.LongTensor | None = None):
        """For the `croc_split` attention: put the batch's query segments into `kwargs` (they reach every layer) and
        return the placeholder the language model takes as its mask: no L x L mask is built."""
        problem = split_attention_problem(self.config.text_config)
        if problem is not None:
            raise ValueError(problem)
        kwargs[SEGMENTS_KEY] = build_attention_segments(shape, block_ids, attention_mask, position_ids)
        return mask_placeholder(shape[0], self.language_model.device)

    def _uses_split_attention(self, kwargs: dict) -> bool:
        """Whether a forward without the Croc objectives goes through the segments: a training forward (no cache
        to continue) on the `croc_split` attention. Inference and generation take transformers' sdpa path."""
        if self.config.text_config._attn_implementation != SPLIT_ATTENTION or not self.training:
            return False
        return not any(isinstance(value, Cache) and value.get_seq_length() > 0 for value in kwargs.values())

    @contextlib.contextmanager
    def _vtr_source_capture(self):
        """With `vtr_prediction="last_layer"`, collects the input of the LM's final norm (the last decoder layer's
        output) during the forward; yields the list it lands in (empty for `"final_norm"`)."""
        captured: list[torch.Tensor] = []
        if self.config.vtr_prediction != "last_layer":
            yield captured
            return
        final_norm = getattr(self.language_model, "norm", None)
        if final_norm is None:
            raise ValueError(f"vtr_prediction='last_layer' needs the language model's final norm at `.norm`; "
                             f"{type(self.language_model).__name__} has none")
        handle = final_norm.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
        try:
            yield captured
        finally:
            handle.remove()


class CrocForConditionalGenerationMixin:
    """The Croc head of a generation model: logits, the LM and VTR losses, the pool, the step-wide VTR count. The
    class must have `model` (a Croc base model), `lm_head`, `vtr_head`, `loss_function` and `config`."""

    # Batch entries besides `input_ids` that decide how many visual tokens each image has (AnyRes models).
    croc_image_layout_inputs: tuple[str, ...] = ()
    # Compute a training forward's LM loss without its logits (`modeling_croc.losses.fused_language_model_loss`);
    # the trainer sets it for `use_liger_kernel`.
    fused_lm_loss: bool = False

    def _build_croc_modules(self, config, base_model_class: type) -> None:
        """The base model (with its pool), the LM head and the VTR head; then transformers' weight init and tying."""
        self.model = base_model_class(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.vtr_head = build_vtr_head(config)
        self.post_init()

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

    def croc_objectives_on(self, croc_objectives: bool | None) -> bool:
        """Whether a forward runs the stage-1.5 path: as forced, else in training forwards of a model with
        `config.croc_pretraining` (evaluation and `generate` always run the plain parent model)."""
        if croc_objectives is None:
            return self.training and self.config.croc_pretraining
        return croc_objectives

    def image_token_counts(self, input_ids: torch.LongTensor, num_images: int, **image_layout) -> torch.LongTensor:
        """`(num_images,)` visual tokens of each image of a batch, without running the vision tower. Equal counts
        here; AnyRes models derive them from the image layout."""
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
        **kwargs,
    ) -> ModelOutput:
        """Logits, `loss = vtr_loss_weight * vtr_loss + lm_loss` and the Croc fields from the base model's output.

        With `fused_lm_loss` set (the trainer's `use_liger_kernel`), a training forward with labels computes the LM
        loss from the hidden states and the LM head's weight without materialising the logits, and returns none."""
        lm_loss, logits = None, None
        if labels is not None and self.training and self.fused_lm_loss:
            lm_loss = fused_language_model_loss(outputs.last_hidden_state, self.lm_head.weight, labels,
                                                kwargs.get("num_items_in_batch"))
        else:
            logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
            if labels is not None:
                lm_loss = self.loss_function(
                    logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
                )
        vtr_loss, vtr_norm_sums = self._vtr_loss(outputs, num_vtr_items_in_batch) if croc_objectives else (None, None)
        loss = lm_loss
        if vtr_loss is not None:
            weighted = self.config.vtr_loss_weight * vtr_loss
            loss = weighted if lm_loss is None else lm_loss + weighted
        return output_class(
            loss=loss,
            lm_loss=lm_loss,
            vtr_loss=vtr_loss,
            vtr_norm_sums=vtr_norm_sums,
            logits=logits,
            **fields_declared_by(outputs, output_class),
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


__all__ = [
    "CrocCausalLMOutputFields",
    "CrocForConditionalGenerationMixin",
    "CrocModelMixin",
    "CrocModelOutputFields",
    "CrocPreTrainedMixin",
    "fields_declared_by",
    "image_rows",
    "pad_visual_tokens",
    "token_mask",
]
