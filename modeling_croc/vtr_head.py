"""Optional heads between the LM's hidden states at the visual positions and the visual-token reconstruction loss.

* `CrocLinearVTRHead` (`vtr_head="linear"`): one linear layer, as ViCToR's `img_head`.
* `CrocVTRHead` (`vtr_head="bert"`): the released Croc code's "transform block": a learned position embedding,
  `vtr_head_layers` BERT layers, a linear layer.
"""

from __future__ import annotations

import torch
from torch import nn

from .configuration_croc import CrocConfig


class CrocLinearVTRHead(nn.Module):
    """`(num_images, T, D)` -> `(num_images, T, D)` through one `Linear(D, D)` with bias."""

    def __init__(self, config: CrocConfig):
        super().__init__()
        width = config.text_config.hidden_size
        self.proj = nn.Linear(width, width)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden_states)


def bert_layer(width: int, dropout: float) -> nn.TransformerEncoderLayer:
    """A BERT layer with the BERT-base ratios at width `width` (head size 64, feed-forward 4x, exact GELU, LayerNorm
    eps 1e-12, post-norm), as torch's `TransformerEncoderLayer`.

    Dropout sits where BERT puts it: on the attention probabilities, after the attention output projection and after
    the output dense layer. Torch's layer also drops out after the feed-forward activation, which BERT (and so the
    released code) does not, so that one is removed.
    """
    layer = nn.TransformerEncoderLayer(
        d_model=width,
        nhead=width // 64 if width % 64 == 0 else 1,
        dim_feedforward=4 * width,
        dropout=dropout,
        activation="gelu",
        layer_norm_eps=1e-12,
        batch_first=True,
        norm_first=False,
    )
    layer.dropout = nn.Identity()  # the one after the activation, in `_ff_block`
    return layer


class CrocVTRHead(nn.Module):
    """Learned position embedding + `vtr_head_layers` BERT layers (`bert_layer`) + a linear layer: the released
    code's head; `convert/from_original.py` maps its `BertLayer` weights onto this one."""

    def __init__(self, config: CrocConfig):
        super().__init__()
        width = config.text_config.hidden_size
        # One position per visual token of an image: `visual_tokens_per_image` is LLaVA's `image_seq_length` and
        # Gemma 3's `mm_tokens_per_image` (a Gemma 3 config has no `image_seq_length`).
        self.position_embedding = nn.Embedding(config.visual_tokens_per_image(), width)
        self.layers = nn.ModuleList(bert_layer(width, config.vtr_head_dropout) for _ in range(config.vtr_head_layers))
        self.proj = nn.Linear(width, width)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(num_images, T, D)` hidden states at the visual positions -> `(num_images, T, D)` predictions."""
        num_tokens = hidden_states.shape[1]
        if num_tokens > self.position_embedding.num_embeddings:
            raise ValueError(
                f"{num_tokens} visual tokens per image but the VTR head has "
                f"{self.position_embedding.num_embeddings} positions (config.visual_tokens_per_image())"
            )
        positions = torch.arange(num_tokens, device=hidden_states.device)
        hidden_states = hidden_states + self.position_embedding(positions)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return self.proj(hidden_states)


VTR_HEADS: dict[str, type[nn.Module]] = {"linear": CrocLinearVTRHead, "bert": CrocVTRHead}


def build_vtr_head(config: CrocConfig) -> nn.Module | None:
    """The head `config.vtr_head` names, or None for `"none"`."""
    if config.vtr_head == "none":
        return None
    return VTR_HEADS[config.vtr_head](config)


__all__ = ["VTR_HEADS", "CrocLinearVTRHead", "CrocVTRHead", "bert_layer", "build_vtr_head"]
