"""Croc on SmolVLM (image splitting): `SmolVLMForConditionalGeneration` with the stage-1.5 objectives.

Inference is exactly `SmolVLMForConditionalGeneration`. SmolVLM's vision outputs come per sample: `pixel_values`
`(B, max views, 3, S, S)` hold each row's views (the tiles and global view of every image of the row, zero views
padding shorter rows) and `get_image_features` returns one tensor per row. Its processor keeps no record of which
views make an image besides the token layout: every view is a run of `<image>` placeholders, introduced by
`<row_r_col_c>` for a tile and by `<global-img>` for the global view, which closes every image. In a stage-1.5
training forward the rows' tokens are split back into images by that layout (`croc_images_of`): an image's visual
tokens are all its views' tokens, masked, matched to the pool and reconstructed with their own count, and with
`bidirectional_span="image"` the image's whole extent (its views and the row / column tokens between them) is one
block, as Mistral 3's rows with their break tokens. SmolVLM's language model is its `text_model`
(`croc_language_model`). The family's declaration is this file; the mechanism is `stage15.py`. Idefics3's
declarations are these (`CrocSmolVLMModelMixin`, `CrocSmolVLMForConditionalGenerationMixin`):
`modeling_croc_idefics3.py`.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationConfig, SmolVLMForConditionalGeneration, SmolVLMModel
from transformers.models.smolvlm.modeling_smolvlm import (
    SmolVLMBaseModelOutputWithPast,
    SmolVLMCausalLMOutputWithPast,
    SmolVLMPreTrainedModel,
)

from .attention_mask import image_extent_block_ids
from .configuration_croc_smolvlm import CrocSmolVLMConfig
from .parent_wiring import croc_auto_classes_of, register_croc_checkpoint_renames
from .stage15 import (
    CrocCausalLMOutputFields,
    CrocForConditionalGenerationMixin,
    CrocModelMixin,
    CrocModelOutputFields,
    CrocPreTrainedMixin,
)


def smolvlm_image_token_counts(input_ids: torch.LongTensor, image_token_id: int) -> torch.LongTensor:
    """`(num_images,)` placeholders of each image in SmolVLM's layout, images in the order they fill the visual
    positions (row by row, left to right).

    Each run of placeholders is a view; an image ends with its global view. The `<global-img>` token's id is in no
    config (only the tokenizer has it), so it is read from the layout: every row's last run is a global view, the
    token before it is `<global-img>`, and the runs it introduces close their images.

    Args:
        input_ids: `(B, L)` token ids.
        image_token_id: the `<image>` placeholder id.
    """
    mask = input_ids == image_token_id
    if not mask.any():
        return torch.zeros(0, dtype=torch.long)
    starts = mask.clone()
    starts[:, 1:] &= ~mask[:, :-1]
    run_of_token = starts.flatten().long().cumsum(0)[mask.flatten()] - 1
    lengths = torch.bincount(run_of_token)
    rows, columns = starts.nonzero(as_tuple=True)  # row-major: the runs' order
    before = torch.where(columns > 0, input_ids[rows, (columns - 1).clamp(min=0)], torch.full_like(columns, -1))
    last_of_row = torch.ones_like(rows, dtype=torch.bool)
    last_of_row[:-1] = rows[1:] != rows[:-1]
    introducers = before[last_of_row].unique()
    if introducers.numel() != 1 or int(introducers) < 0:
        raise ValueError(f"SmolVLM and Idefics3 rows must end their images with a global view introduced by one "
                         f"`<global-img>` token; the rows' last views are introduced by token ids "
                         f"{introducers.tolist()}")
    image_ends = before == introducers
    image_of_run = image_ends.long().cumsum(0) - image_ends.long()
    counts = torch.zeros(int(image_ends.sum()), dtype=torch.long, device=input_ids.device)
    return counts.index_add_(0, image_of_run, lengths).cpu()


@dataclass
class CrocSmolVLMModelOutputWithPast(CrocModelOutputFields, SmolVLMBaseModelOutputWithPast):
    """`SmolVLMBaseModelOutputWithPast` plus what the stage-1.5 losses need (`CrocModelOutputFields`)."""


@dataclass
class CrocSmolVLMCausalLMOutputWithPast(CrocCausalLMOutputFields, SmolVLMCausalLMOutputWithPast):
    """`SmolVLMCausalLMOutputWithPast` plus the Croc loss terms and the pool assignment."""


class CrocSmolVLMPreTrainedModel(CrocPreTrainedMixin, SmolVLMPreTrainedModel):
    config: CrocSmolVLMConfig
    croc_auto_classes = croc_auto_classes_of("smolvlm", {
        "SmolVLMModel": "CrocSmolVLMModel",
        "SmolVLMForConditionalGeneration": "CrocSmolVLMForConditionalGeneration"})


class CrocSmolVLMModelMixin(CrocModelMixin):
    """The mechanism's base model (`CrocModelMixin`) with what a SmolVLM Croc base model declares on it, shared with
    Idefics3 (`modeling_croc_idefics3.py`), whose views, connector, token layout and `text_model` are the same: the
    pixel mask, the language model, the per-image token counts, the images split out of the rows' views
    (`croc_images_of`) and each image's whole extent as one block."""

    croc_image_inputs = ("pixel_attention_mask",)

    @property
    def croc_language_model(self) -> nn.Module:
        """SmolVLM calls its language model `text_model`."""
        return self.text_model

    def image_token_counts(self, input_ids: torch.LongTensor) -> torch.LongTensor:
        """`(num_images,)` visual tokens of each image, from the token layout of `input_ids` `(B, L)` alone (no
        vision tower): `smolvlm_image_token_counts`."""
        return smolvlm_image_token_counts(input_ids, self.config.image_token_id)

    def croc_images_of(self, features: list[torch.Tensor], input_ids: torch.LongTensor) -> list[torch.Tensor]:
        """One `(views_i * view_tokens, D)` tensor per image: the per-row outputs of `get_image_features` (each row's
        views back to back) split at the image boundaries of `input_ids` `(B, L)`.

        Args:
            features: one `(row views * view_tokens, D)` tensor per batch row (empty for a row without images).
            input_ids: `(B, L)` the batch's token ids.
        """
        counts = self.image_token_counts(input_ids).tolist()
        tokens = torch.cat(list(features))
        if sum(counts) != tokens.shape[0]:
            raise ValueError(f"Split images of {counts} placeholders but {tokens.shape[0]} visual tokens from the "
                             "views of pixel_values")
        return list(tokens.split(counts))

    def croc_image_block_ids(self, image_token_mask: torch.BoolTensor, token_counts: torch.LongTensor
                             ) -> torch.LongTensor:
        """`(B, L)` each image's whole extent (its views' placeholders and the `<row_r_col_c>`, newline,
        `<fake_token_around_image>` and `<global-img>` tokens between them) as one block: the runs would make one
        block per view."""
        return image_extent_block_ids(image_token_mask, token_counts)


class CrocSmolVLMModel(CrocSmolVLMModelMixin, CrocSmolVLMPreTrainedModel, SmolVLMModel):
    """`SmolVLMModel` with the prompt pool and the stage-1.5 input path (`CrocModelMixin`); its images are split
    out of the rows' views (`CrocSmolVLMModelMixin`)."""

    croc_output_class = CrocSmolVLMModelOutputWithPast


class CrocSmolVLMForConditionalGenerationMixin(CrocForConditionalGenerationMixin):
    """The mechanism's generation model (`CrocForConditionalGenerationMixin`) with what a SmolVLM Croc generation
    model declares on it, shared with Idefics3: the attributes the parent's `__init__` (not run: see
    `CrocForConditionalGenerationMixin.__init__`) sets besides modules, and each image's token count read from the
    token layout."""

    def __init__(self, config):
        super().__init__(config)
        self.image_token_id = config.image_token_id
        self.vocab_size = config.text_config.vocab_size

    def image_token_counts(self, input_ids: torch.LongTensor, num_images: int, **unused) -> torch.LongTensor:
        """`(num_images,)` visual tokens of each image, from the token layout of `input_ids` `(B, L)`.

        `num_images` is not read: a caller counting the rows of `pixel_values` (the trainer) counts batch rows
        there, and the layout of `input_ids` tells the images apart."""
        return self.model.image_token_counts(input_ids)


class CrocSmolVLMForConditionalGeneration(CrocSmolVLMForConditionalGenerationMixin, CrocSmolVLMPreTrainedModel,
                                          SmolVLMForConditionalGeneration):
    """Croc on SmolVLM for generation and the three training stages. With `config.croc_pretraining` off (stages 1
    and 2, inference) this is `SmolVLMForConditionalGeneration`; in a stage-1.5 training forward the output also
    carries `lm_loss`, `vtr_loss` and `pool_ids`, every image counted with all its views' tokens."""

    croc_base_model_class = CrocSmolVLMModel
    croc_output_class = CrocSmolVLMCausalLMOutputWithPast

    def __init__(self, config: CrocSmolVLMConfig):
        super().__init__(config)
        # What `SmolVLMForConditionalGeneration.__init__` sets besides Idefics3's (`Idefics3ForConditionalGeneration`
        # leaves the text model's generation config alone).
        self.model.text_model.generation_config = GenerationConfig.from_model_config(config)


register_croc_checkpoint_renames(CrocSmolVLMForConditionalGeneration, SmolVLMForConditionalGeneration)
register_croc_checkpoint_renames(CrocSmolVLMModel, SmolVLMModel)


__all__ = [
    "CrocSmolVLMCausalLMOutputWithPast",
    "CrocSmolVLMForConditionalGeneration",
    "CrocSmolVLMForConditionalGenerationMixin",
    "CrocSmolVLMModel",
    "CrocSmolVLMModelMixin",
    "CrocSmolVLMPreTrainedModel",
]
