"""Croc on SmolVLM (image splitting): `SmolVLMForConditionalGeneration` with the stage-1.5 objectives.

Inference is exactly `SmolVLMForConditionalGeneration`. SmolVLM's vision outputs come per sample: `pixel_values`
`(B, max views, 3, S, S)` hold each row's views (the tiles and global view of every image of the row, zero views
padding shorter rows) and `get_image_features` returns one tensor per row. Its processor keeps no record of which
views make an image besides the token layout: every view is a run of `<image>` placeholders, introduced by
`<row_r_col_c>` for a tile and by `<global-img>` for the global view, which closes every image. In a stage-1.5
training forward the rows' tokens are split back into images by that layout (`croc_images_of`, of
`CrocLayoutImagesMixin`, which LFM2-VL shares with its end marker after an image's last view): an image's visual
tokens are all its views' tokens, masked, matched to the pool and reconstructed with their own count, and with
`bidirectional_span="image"` the image's whole extent (its views and the row / column tokens between them) is one
block, as Mistral 3's rows with their break tokens. SmolVLM's language model is its `text_model`
(`croc_language_model`). The family's declaration is this file; the mechanism is `stage15.py`. Idefics3's
declarations are these (`CrocSmolVLMModelMixin`, `CrocSmolVLMForConditionalGenerationMixin`):
`modeling_croc_idefics3.py`; LFM2-VL's base and generation models derive from `CrocLayoutImagesMixin` and
`CrocLayoutImagesGenerationMixin` here (`modeling_croc_lfm2_vl.py`).
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

from .configuration_croc_smolvlm import CrocSmolVLMConfig
from .parent_wiring import croc_auto_classes_of, register_croc_checkpoint_renames
from .stage15 import (
    CrocCausalLMOutputFields,
    CrocForConditionalGenerationMixin,
    CrocModelMixin,
    CrocModelOutputFields,
    CrocPreTrainedMixin,
)


def layout_image_token_counts(input_ids: torch.LongTensor, image_token_id: int, marker_side: str,
                              layout: str) -> torch.LongTensor:
    """`(num_images,)` placeholders of each image of a tiled layout, images in the order they fill the visual
    positions (row by row, left to right), read from the token layout alone.

    Each run of placeholders is a view (a tile, a global view or a thumbnail); the run that ends an image is marked by
    the token next to it, on `marker_side`: SmolVLM's (and Idefics3's) `<global-img>` before an image's last view
    (`"before"`), LFM2-VL's `<|image_end|>` after it (`"after"`). That token's id is in no config (only the tokenizer
    has it), so it is read from the layout: every row's last run ends an image, the token on that side of it is the
    marker, and the runs it marks close their images.

    Args:
        input_ids: `(B, L)` token ids.
        image_token_id: the placeholder id.
        marker_side: `"before"` or `"after"`: where the marker sits next to an image's last run.
        layout: how the family writes an image's end, for the one-line error where the rows do not.
    """
    mask = input_ids == image_token_id
    if not mask.any():
        return torch.zeros(0, dtype=torch.long)
    starts = mask.clone()
    starts[:, 1:] &= ~mask[:, :-1]
    run_of_token = starts.flatten().long().cumsum(0)[mask.flatten()] - 1
    lengths = torch.bincount(run_of_token)
    if marker_side == "before":
        rows, columns = starts.nonzero(as_tuple=True)  # row-major: the runs' order
        beside = columns - 1
    else:
        ends = mask.clone()
        ends[:, :-1] &= ~mask[:, 1:]
        rows, columns = ends.nonzero(as_tuple=True)  # row-major: the runs' order
        beside = columns + 1
    inside = (beside >= 0) & (beside < input_ids.shape[1])
    marker = torch.where(inside, input_ids[rows, beside.clamp(0, input_ids.shape[1] - 1)], torch.full_like(rows, -1))
    last_of_row = torch.ones_like(rows, dtype=torch.bool)
    last_of_row[:-1] = rows[1:] != rows[:-1]
    markers = marker[last_of_row].unique()
    if markers.numel() != 1 or int(markers) < 0:
        raise ValueError(f"{layout}; the rows' last runs of placeholders have token ids {markers.tolist()} "
                         f"{marker_side} them")
    image_ends = marker == markers
    image_of_run = image_ends.long().cumsum(0) - image_ends.long()
    counts = torch.zeros(int(image_ends.sum()), dtype=torch.long, device=input_ids.device)
    return counts.index_add_(0, image_of_run, lengths).cpu()


class CrocLayoutImagesMixin(CrocModelMixin):
    """The mechanism's base model (`CrocModelMixin`) for images whose views (tiles, global view or thumbnail) the
    vision outputs keep apart and only the token layout groups: an image is all its views' tokens
    (`layout_image_token_counts` reads where each image ends), its `"image"` block is its whole extent, the view
    markers between its runs included. SmolVLM and Idefics3 (`CrocSmolVLMModelMixin`) and LFM2-VL
    (`modeling_croc_lfm2_vl.py`) share it.

    A family sets `croc_image_marker_side` and `croc_image_layout` (`layout_image_token_counts`' arguments)."""

    croc_image_marker_side: str
    croc_image_layout: str

    def image_token_counts(self, input_ids: torch.LongTensor) -> torch.LongTensor:
        """`(num_images,)` visual tokens of each image, from the token layout of `input_ids` `(B, L)` alone (no
        vision tower): `layout_image_token_counts`."""
        return layout_image_token_counts(input_ids, self.config.image_token_id, self.croc_image_marker_side,
                                         self.croc_image_layout)

    def croc_images_of(self, features: list[torch.Tensor], input_ids: torch.LongTensor) -> list[torch.Tensor]:
        """One `(image tokens, D)` tensor per image: the vision outputs (one tensor per batch row of views, or per
        view) back to back, split at the image boundaries of `input_ids` `(B, L)`.

        Args:
            features: the vision outputs, in the order they fill the visual positions (empty for a row without
                images).
            input_ids: `(B, L)` the batch's token ids.
        """
        counts = self.image_token_counts(input_ids).tolist()
        tokens = torch.cat(list(features))
        if sum(counts) != tokens.shape[0]:
            raise ValueError(f"Split images of {counts} placeholders but {tokens.shape[0]} visual tokens from the "
                             "views of pixel_values")
        return list(tokens.split(counts))


class CrocLayoutImagesGenerationMixin(CrocForConditionalGenerationMixin):
    """The mechanism's generation model (`CrocForConditionalGenerationMixin`) on the side of `CrocLayoutImagesMixin`:
    each image's count from the token layout."""

    def image_token_counts(self, input_ids: torch.LongTensor, num_images: int, **unused) -> torch.LongTensor:
        """`(num_images,)` visual tokens of each image, from the token layout of `input_ids` `(B, L)`.

        `num_images` is not read: a caller counting the rows of `pixel_values` (the trainer) counts batch rows or
        views there, and the layout of `input_ids` tells the images apart."""
        return self.model.image_token_counts(input_ids)


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


class CrocSmolVLMModelMixin(CrocLayoutImagesMixin):
    """What a SmolVLM Croc base model declares on the mechanism's, shared with Idefics3 (`modeling_croc_idefics3.py`),
    whose views, connector, token layout and `text_model` are the same: the pixel mask, the language model, and the
    images split out of the rows' views by the token layout (`CrocLayoutImagesMixin`: an image ends with its global
    view, introduced by `<global-img>`), each image's whole extent (its views' placeholders and the `<row_r_col_c>`,
    newline, `<fake_token_around_image>` and `<global-img>` tokens between them) one block."""

    croc_image_inputs = ("pixel_attention_mask",)
    croc_image_marker_side = "before"
    croc_image_layout = ("SmolVLM and Idefics3 rows must end their images with a global view introduced by one "
                         "`<global-img>` token")

    @property
    def croc_language_model(self) -> nn.Module:
        """SmolVLM calls its language model `text_model`."""
        return self.text_model


class CrocSmolVLMModel(CrocSmolVLMModelMixin, CrocSmolVLMPreTrainedModel, SmolVLMModel):
    """`SmolVLMModel` with the prompt pool and the stage-1.5 input path (`CrocModelMixin`); its images are split
    out of the rows' views (`CrocSmolVLMModelMixin`)."""

    croc_output_class = CrocSmolVLMModelOutputWithPast


class CrocSmolVLMForConditionalGenerationMixin(CrocLayoutImagesGenerationMixin):
    """What a SmolVLM Croc generation model declares on the mechanism's, shared with Idefics3: the attributes the
    parent's `__init__` (not run: see `CrocForConditionalGenerationMixin.__init__`) sets besides modules; each image's
    token count is read from the token layout (`CrocLayoutImagesGenerationMixin`)."""

    def __init__(self, config):
        super().__init__(config)
        self.image_token_id = config.image_token_id
        self.vocab_size = config.text_config.vocab_size


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
    "CrocLayoutImagesGenerationMixin",
    "CrocLayoutImagesMixin",
    "CrocSmolVLMCausalLMOutputWithPast",
    "CrocSmolVLMForConditionalGeneration",
    "CrocSmolVLMForConditionalGenerationMixin",
    "CrocSmolVLMModel",
    "CrocSmolVLMModelMixin",
    "CrocSmolVLMPreTrainedModel",
    "layout_image_token_counts",
]
