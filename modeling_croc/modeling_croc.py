"""Croc: LLaVA-1.5 with the stage-1.5 cross-modal comprehension objectives (arXiv 2410.14332).

Inference is exactly `LlavaForConditionalGeneration` (plus optional L2 normalisation of the visual tokens). In a
training forward with `config.croc_pretraining` on, the model additionally

1. replaces `mask_ratio` of each image's projected visual tokens by tokens of a learnable prompt pool, assigned by
   Hungarian matching or nearest neighbour (`prompt_pool.py`, `matching.py`, `replaced_positions.py`);
2. lets chosen spans attend bidirectionally while text stays causal (`attention_mask.py`);
3. reconstructs the original visual tokens from the last hidden states at the visual positions (VTR loss,
   `losses.py`, optional head in `vtr_head.py`) next to the usual caption loss (DCG):
   `loss = vtr_loss_weight * vtr_loss + lm_loss`.
"""


import contextlib
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlavaForConditionalGeneration, LlavaModel
from transformers.conversion_mapping import (
    get_checkpoint_conversion_mapping,
    register_checkpoint_conversion_mapping,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import slice_logits_to_keep
from transformers.models.llava.modeling_llava import (
    LlavaCausalLMOutputWithPast,
    LlavaModelOutputWithPast,
    LlavaPreTrainedModel,
)
from transformers.utils import ModelOutput

from .attention_mask import (
    bidirectional_block_ids,
    build_mixed_attention_mask,
    is_packed_batch,
    prepare_packed_forward,
)
from .configuration_croc import CrocConfig
from .constants import CROC_ONLY_PATTERNS
from .losses import normalize_vtr_targets, visual_token_reconstruction_loss
from .profiling import croc_region
from .prompt_pool import CrocPromptPool
from .vtr_head import CrocVTRHead, build_vtr_head


@dataclass
class CrocModelOutputWithPast(LlavaModelOutputWithPast):
    """`LlavaModelOutputWithPast` plus what the stage-1.5 losses need (all None outside stage-1.5 forwards).

    Llava's own fields (the cache, hidden states, the image-encoder output) are inherited, never named here: they
    are copied from the output the parent class or the language model returns, so a renamed upstream field cannot
    break this class.

    Attributes:
        visual_tokens: `(num_images, T, D)` projected (and, if configured, normalised) visual tokens before any
            replacement: the VTR targets.
        image_token_mask: `(B, L)` bool, True at visual-token positions.
        replaced_token_mask: `(num_images, T)` bool, True where a pool token replaced the visual token.
        pool_ids: `(num_images, M)` long, the pool row assigned to each replaced token.
    """

    visual_tokens: torch.FloatTensor | None = None
    vtr_source_states: torch.FloatTensor | None = None
    image_token_mask: torch.BoolTensor | None = None
    replaced_token_mask: torch.BoolTensor | None = None
    pool_ids: torch.LongTensor | None = None


@dataclass
class CrocCausalLMOutputWithPast(LlavaCausalLMOutputWithPast):
    """`LlavaCausalLMOutputWithPast` plus the two Croc loss terms and the pool assignment.

    Attributes:
        loss: `vtr_loss_weight * vtr_loss + lm_loss` in stage-1.5 forwards, else the LM loss.
        lm_loss: next-token loss on the supervised tokens (DCG in stage 1.5).
        vtr_loss: visual-token reconstruction loss (stage-1.5 forwards only).
        visual_tokens: `(num_images, T, D)` the VTR targets (stage-1.5 forwards only).
        vtr_norm_sums: `(3,)` detached: the summed L2 norms of the VTR predictions and of the (normalised)
            targets at the reconstructed positions, and their count; the trainer logs the means, so a scale
            mismatch between the two shows in the first logging step.
        pool_ids: `(num_images, M)` pool rows assigned in this forward, for pool-utilisation metrics.
        replaced_token_mask: `(num_images, T)` bool, which visual tokens were replaced.
    """

    lm_loss: torch.FloatTensor | None = None
    vtr_loss: torch.FloatTensor | None = None
    visual_tokens: torch.FloatTensor | None = None
    vtr_norm_sums: torch.FloatTensor | None = None
    pool_ids: torch.LongTensor | None = None
    replaced_token_mask: torch.BoolTensor | None = None


def fields_declared_by(output: ModelOutput, output_class: type[ModelOutput]) -> dict:
    """The set entries of `output` that `output_class` declares too, by name: how an upstream output is carried
    into a Croc output without naming (and so without depending on) the upstream field names."""
    declared = {field.name for field in fields(output_class)}
    return {name: value for name, value in output.items() if name in declared}


class CrocPreTrainedModel(LlavaPreTrainedModel):
    config: CrocConfig
    # Llava checkpoints (stage 1, or any llava-1.5 conversion) have no pool and no VTR head: they start here.
    _keys_to_ignore_on_load_missing = list(CROC_ONLY_PATTERNS)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, CrocPromptPool):
            module.reset_parameters()
        elif isinstance(module, CrocVTRHead):
            nn.init.normal_(module.position_embedding.weight, std=self.config.text_config.initializer_range)


class CrocModel(CrocPreTrainedModel, LlavaModel):
    """`LlavaModel` with the prompt pool and the stage-1.5 input path (masking, matching, mixed attention)."""

    def __init__(self, config: CrocConfig):
        super().__init__(config)
        self.prompt_pool = CrocPromptPool(config)
        self.post_init()

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """Llava's image features (one `(T, D)` tensor per image in `pooler_output`), L2-normalised per token when
        `config.normalize_visual_tokens` (the released code does this at inference too)."""
        outputs = super().get_image_features(pixel_values, **kwargs)
        if self.config.normalize_visual_tokens:
            outputs.pooler_output = [F.normalize(features, dim=-1) for features in outputs.pooler_output]
        return outputs

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        croc_objectives: bool = False,
        croc_generator: torch.Generator | None = None,
        croc_image_order: torch.LongTensor | None = None,
        **kwargs,
    ) -> CrocModelOutputWithPast:
        """Llava's forward, or with `croc_objectives` the stage-1.5 forward.

        The cache travels in `kwargs` under whatever name the installed transformers uses (`cache` since 5.24,
        `past_key_values` before), straight to Llava's forward.

        Args:
            labels: `(B, L)` aligned with `input_ids`; only read to place the `"prompt"` bidirectional span.
            mm_encoder_outputs: precomputed vision outputs (`{"image": BaseModelOutputWithPooling}`), as in Llava.
            croc_objectives: run the stage-1.5 path (pool replacement and mixed attention).
            croc_generator: seeded generator for the random token mask.
            croc_image_order: `(num_images,)` for a packed batch, each image's rank in the order the batch arrived
                (the collator's `croc_image_order`): the token masks are drawn in that order.
        """
        batch_size = (input_ids if input_ids is not None else inputs_embeds).shape[0]
        if is_packed_batch(attention_mask, position_ids, batch_size):
            prepare_packed_forward(self.config.text_config, batch_size, kwargs)
        if not croc_objectives:
            outputs = super().forward(
                input_ids=input_ids,
                pixel_values=pixel_values,
                attention_mask=attention_mask,
                position_ids=position_ids,
                inputs_embeds=inputs_embeds,
                mm_encoder_outputs=mm_encoder_outputs,
                **kwargs,
            )
            return CrocModelOutputWithPast(**outputs)
        if input_ids is None:
            raise ValueError("the stage-1.5 forward locates visual tokens by `input_ids`; pass input_ids")
        image_outputs = (mm_encoder_outputs or {}).get("image")
        if pixel_values is not None and image_outputs is None:
            with croc_region("vision"):
                image_outputs = self.get_image_features(pixel_values=pixel_values, return_dict=True)
        return self._croc_forward(input_ids, image_outputs, attention_mask, position_ids, labels, croc_generator,
                                  croc_image_order, **kwargs)

    def _croc_forward(
        self,
        input_ids: torch.LongTensor,
        image_outputs: BaseModelOutputWithPooling | None,
        attention_mask: torch.Tensor | None,
        position_ids: torch.LongTensor | None,
        labels: torch.LongTensor | None,
        generator: torch.Generator | None,
        image_order: torch.LongTensor | None,
        **kwargs,
    ) -> CrocModelOutputWithPast:
        inputs_embeds = self.get_input_embeddings()(input_ids)
        hidden = inputs_embeds.shape[-1]
        image_token_mask = input_ids == self.config.image_token_id
        if image_outputs is not None:
            features = image_outputs.pooler_output
            if len({f.shape[0] for f in features}) != 1:
                raise ValueError("stage 1.5 needs the same number of visual tokens for every image in a batch")
            visual_tokens = torch.stack(list(features)).to(inputs_embeds.dtype)
        else:
            # A text-only batch still runs the pool on zero images, so the pool takes part in the graph on every
            # rank (DDP and ZeRO expect each parameter's gradient on every step) without a dummy image.
            visual_tokens = inputs_embeds.new_zeros(0, 0, hidden)

        prompted = self.prompt_pool(visual_tokens, generator=generator, draw_order=image_order)
        if int(image_token_mask.sum()) != prompted.tokens.shape[0] * prompted.tokens.shape[1]:
            raise ValueError(
                f"{int(image_token_mask.sum())} image tokens in input_ids but {prompted.tokens.shape[0]} images of "
                f"{prompted.tokens.shape[1]} tokens in pixel_values"
            )
        inputs_embeds = inputs_embeds.masked_scatter(image_token_mask.unsqueeze(-1), prompted.tokens)

        with croc_region("mask building"):
            span = self.config.bidirectional_span
            block_ids = bidirectional_block_ids(span, image_token_mask, labels, attention_mask, position_ids)
            mixed_mask = build_mixed_attention_mask(
                self.config.text_config, inputs_embeds, attention_mask, block_ids, position_ids
            )
        with croc_region("language model"), self._vtr_source_capture() as before_final_norm:
            outputs = self.language_model(
                attention_mask=mixed_mask, position_ids=position_ids, inputs_embeds=inputs_embeds, **kwargs
            )
        return CrocModelOutputWithPast(
            **fields_declared_by(outputs, CrocModelOutputWithPast),
            visual_tokens=visual_tokens,
            vtr_source_states=before_final_norm[0] if before_final_norm else outputs.last_hidden_state,
            image_token_mask=image_token_mask,
            replaced_token_mask=prompted.replaced,
            pool_ids=prompted.pool_ids,
        )


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


class CrocForConditionalGeneration(CrocPreTrainedModel, LlavaForConditionalGeneration):
    """Croc for image-text-to-text generation and for the three training stages.

    With `config.croc_pretraining` off (stages 1 and 2, inference) this is `LlavaForConditionalGeneration`. In a
    training forward with it on (stage 1.5) the output also carries `lm_loss`, `vtr_loss` and `pool_ids`.
    """

    def __init__(self, config: CrocConfig):
        # Skip LlavaForConditionalGeneration.__init__: it would build a whole LlavaModel only to be replaced.
        LlavaPreTrainedModel.__init__(self, config)
        self.model = CrocModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.vtr_head = build_vtr_head(config)
        self.post_init()

    @property
    def prompt_pool(self) -> CrocPromptPool:
        return self.model.prompt_pool

    @torch.no_grad()
    def calibrate_prompt_pool(self, pixel_values: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Draw the pool from the per-feature statistics of the visual tokens of `pixel_values` (the
        `visual_stats` initialisation) and record it in the config, so it happens once per model."""
        features = self.model.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output
        self.prompt_pool.calibrate(torch.cat(list(features)), generator=generator)
        self.config.prompt_pool_calibrated = True

    def num_vtr_items(self, input_ids: torch.LongTensor, num_images: int) -> int:
        """VTR target tokens in a batch: what `num_vtr_items_in_batch` counts across micro-batches."""
        if num_images == 0:
            return 0
        tokens_per_image = int((input_ids == self.config.image_token_id).sum()) // num_images
        if self.config.vtr_positions == "all":
            return num_images * tokens_per_image
        return num_images * self.config.num_masked_tokens(tokens_per_image)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        croc_objectives: bool | None = None,
        croc_generator: torch.Generator | None = None,
        croc_image_order: torch.LongTensor | None = None,
        num_vtr_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ) -> CrocCausalLMOutputWithPast:
        r"""
        Args:
            labels (`torch.LongTensor` of shape `(B, L)`, *optional*):
                Token ids to predict, aligned with `input_ids` (shifted inside the loss), -100 where unsupervised.
            mm_encoder_outputs (`dict[str, BaseModelOutputWithPooling]`, *optional*):
                Precomputed vision outputs, as `LlavaForConditionalGeneration` takes them.
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
                Passed on to Llava's forward, the cache included under the installed transformers' name for it.
        """
        if croc_objectives is None:
            croc_objectives = self.training and self.config.croc_pretraining
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
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        logits = self.lm_head(slice_logits_to_keep(hidden_states, logits_to_keep))

        lm_loss = None
        if labels is not None:
            lm_loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        vtr_loss, vtr_norm_sums = self._vtr_loss(outputs, num_vtr_items_in_batch) if croc_objectives else (None, None)
        loss = lm_loss
        if vtr_loss is not None:
            weighted = self.config.vtr_loss_weight * vtr_loss
            loss = weighted if lm_loss is None else lm_loss + weighted

        return CrocCausalLMOutputWithPast(
            loss=loss,
            lm_loss=lm_loss,
            vtr_loss=vtr_loss,
            vtr_norm_sums=vtr_norm_sums,
            logits=logits,
            **fields_declared_by(outputs, CrocCausalLMOutputWithPast),
        )

    def _vtr_loss(self, outputs: CrocModelOutputWithPast, num_items_in_batch) -> tuple[torch.Tensor, torch.Tensor]:
        """VTR loss from the hidden states at the visual positions (position p predicts token p: no shift), and the
        `vtr_norm_sums` diagnostics."""
        targets = normalize_vtr_targets(outputs.visual_tokens, self.config.vtr_target_normalization)
        num_images, num_tokens, hidden = targets.shape
        predictions = outputs.vtr_source_states[outputs.image_token_mask].view(num_images, num_tokens, hidden)
        if self.vtr_head is not None:
            with croc_region("VTR head"):
                predictions = self.vtr_head(predictions)
        positions = outputs.replaced_token_mask
        if self.config.vtr_positions == "all":
            positions = torch.ones_like(positions)
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
                selected = positions.bool()
                norm_sums = torch.stack([
                    predictions.detach().float()[selected].norm(dim=-1).sum(),
                    targets.detach().float()[selected].norm(dim=-1).sum(),
                    selected.sum().float(),
                ])
        return loss, norm_sums


# Llava's checkpoint renames are keyed by class name and transformers does not extend them to subclasses defined
# outside the library: without this, loading a llava (or saved Croc) folder leaves `lm_head` randomly initialised.
# It lives in this file so that `trust_remote_code` loads of a saved folder register it too.
register_checkpoint_conversion_mapping(
    "CrocForConditionalGeneration", get_checkpoint_conversion_mapping("llava"), overwrite=True
)
register_checkpoint_conversion_mapping("CrocModel", get_checkpoint_conversion_mapping("LlavaModel"), overwrite=True)


__all__ = ["CrocPreTrainedModel", "CrocModel", "CrocForConditionalGeneration", "CrocCausalLMOutputWithPast"]
