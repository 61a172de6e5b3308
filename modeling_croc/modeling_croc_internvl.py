"""Croc on InternVL (dynamic tiling): `InternVLForConditionalGeneration` with the stage-1.5 objectives.

Inference is exactly `InternVLForConditionalGeneration`. InternVL's vision outputs come per tile: `pixel_values`
hold the tiles of all images of the batch, `(num_tiles, 3, S, S)`, and its processor keeps no record of which tiles
make an image besides the token layout: every image is one run `<img>` + `tiles * tile_tokens` `<IMG_CONTEXT>`
placeholders + `</img>`. In a stage-1.5 training forward the tiles are joined back into images by those runs
(`croc_images_of`): an image's visual tokens are all its tiles' projected tokens, masked, matched to the pool and
reconstructed with their own count, and with `bidirectional_span="image"` the image's run is its block (the default
runs: nothing interrupts an image's placeholders). The family's declaration is this file; the mechanism is
`stage15.py`.
"""

from dataclasses import dataclass

import torch
from transformers import InternVLForConditionalGeneration, InternVLModel
from transformers.models.internvl.modeling_internvl import (
    InternVLCausalLMOutputWithPast,
    InternVLModelOutputWithPast,
    InternVLPreTrainedModel,
)

from .attention_mask import image_block_ids
from .configuration_croc_internvl import CrocInternVLConfig
from .parent_wiring import croc_auto_classes_of, register_croc_checkpoint_renames
from .stage15 import (
    CrocCausalLMOutputFields,
    CrocForConditionalGenerationMixin,
    CrocModelMixin,
    CrocModelOutputFields,
    CrocPreTrainedMixin,
)


def placeholder_run_lengths(image_token_mask: torch.BoolTensor) -> torch.LongTensor:
    """`(num_runs,)` the lengths of the runs of consecutive visual positions, row by row, left to right (the order
    `masked_scatter` fills them in); a run never continues into the next row.

    Args:
        image_token_mask: `(B, L)` True at visual-token positions.
    """
    length = image_token_mask.shape[1]
    rows = torch.arange(image_token_mask.shape[0], device=image_token_mask.device)[:, None]
    keys = (rows * length + image_block_ids(image_token_mask))[image_token_mask]
    return torch.unique_consecutive(keys, return_counts=True)[1].long()


@dataclass
class CrocInternVLModelOutputWithPast(CrocModelOutputFields, InternVLModelOutputWithPast):
    """`InternVLModelOutputWithPast` plus what the stage-1.5 losses need (`CrocModelOutputFields`)."""


@dataclass
class CrocInternVLCausalLMOutputWithPast(CrocCausalLMOutputFields, InternVLCausalLMOutputWithPast):
    """`InternVLCausalLMOutputWithPast` plus the Croc loss terms and the pool assignment."""


class CrocInternVLPreTrainedModel(CrocPreTrainedMixin, InternVLPreTrainedModel):
    config: CrocInternVLConfig
    croc_auto_classes = croc_auto_classes_of("internvl", {
        "InternVLModel": "CrocInternVLModel",
        "InternVLForConditionalGeneration": "CrocInternVLForConditionalGeneration"})


class CrocInternVLModel(CrocModelMixin, CrocInternVLPreTrainedModel, InternVLModel):
    """`InternVLModel` with the prompt pool and the stage-1.5 input path (`CrocModelMixin`); its images are joined
    from their tiles (`croc_images_of`)."""

    croc_output_class = CrocInternVLModelOutputWithPast
    # The feature layer and strategy are forward arguments too: a stage-1.5 forward reads its tiles as the plain
    # forward given the same arguments would.
    croc_image_inputs = ("vision_feature_layer", "vision_feature_select_strategy")

    def image_token_counts(self, input_ids: torch.LongTensor) -> torch.LongTensor:
        """`(num_images,)` visual tokens of each image, from the token layout alone (no vision tower): the length of
        its run of `<IMG_CONTEXT>` placeholders. `input_ids`: `(B, L)`."""
        return placeholder_run_lengths(input_ids == self.config.image_token_id).cpu()

    def croc_images_of(self, features: list[torch.Tensor], input_ids: torch.LongTensor) -> list[torch.Tensor]:
        """One `(tiles_i * tile_tokens, D)` tensor per image: the per-tile outputs of `get_image_features` joined
        by the image runs of `input_ids` (every tile has the same count, so a run of `n` placeholders is
        `n / tile_tokens` consecutive tiles).

        Args:
            features: one `(tile_tokens, D)` tensor per tile, all images' tiles in order.
            input_ids: `(B, L)` the batch's token ids.
        """
        if not features:
            return features
        tile_tokens = features[0].shape[0]
        runs = self.image_token_counts(input_ids).tolist()
        if any(run % tile_tokens for run in runs) or sum(runs) != tile_tokens * len(features):
            raise ValueError(f"InternVL image runs of {runs} placeholders do not split into the {len(features)} "
                             f"tiles of {tile_tokens} tokens each that pixel_values hold")
        tiles = torch.stack(features)
        return [image.flatten(0, 1) for image in tiles.split([run // tile_tokens for run in runs])]


class CrocInternVLForConditionalGeneration(CrocForConditionalGenerationMixin, CrocInternVLPreTrainedModel,
                                           InternVLForConditionalGeneration):
    """Croc on InternVL for generation and the three training stages. With `config.croc_pretraining` off (stages 1
    and 2, inference) this is `InternVLForConditionalGeneration`; in a stage-1.5 training forward the output also
    carries `lm_loss`, `vtr_loss` and `pool_ids`, every image counted with all its tiles' tokens."""

    croc_base_model_class = CrocInternVLModel
    croc_output_class = CrocInternVLCausalLMOutputWithPast

    def image_token_counts(self, input_ids: torch.LongTensor, num_images: int, **unused) -> torch.LongTensor:
        """`(num_images,)` visual tokens of each image, from its run of placeholders in `input_ids` `(B, L)`.

        `num_images` is not read: a caller counting the rows of `pixel_values` (the trainer) counts tiles there, and
        the runs of `input_ids` are the images."""
        return self.model.image_token_counts(input_ids)


register_croc_checkpoint_renames(CrocInternVLForConditionalGeneration, InternVLForConditionalGeneration)
register_croc_checkpoint_renames(CrocInternVLModel, InternVLModel)


__all__ = [
    "CrocInternVLCausalLMOutputWithPast",
    "CrocInternVLForConditionalGeneration",
    "CrocInternVLModel",
    "CrocInternVLPreTrainedModel",
]
