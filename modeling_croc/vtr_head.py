"""Optional head between the LM's last hidden states and the visual-token reconstruction loss."""

from __future__ import annotations

import torch
from torch import nn

from .configuration_croc import CrocConfig


class CrocVTRHead(nn.Module):
    """Learned position embedding + `vtr_head_layers` BERT-style encoder layers + a linear layer.

    This is the released code's "transform block": BERT layers with the BERT-base ratios at the LM width (head
    size 64, feed-forward 4x, LayerNorm eps 1e-12, dropout `vtr_head_dropout`). The layer is torch's post-norm
    `TransformerEncoderLayer` with exact GELU, which computes a BERT layer (it also applies dropout after the
    activation, BERT does not); `convert/from_original.py` maps released `BertLayer` weights onto it.
    """

    def __init__(self, config: CrocConfig):
        super().__init__()
        width = config.text_config.hidden_size
        self.position_embedding = nn.Embedding(config.image_seq_length, width)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model=width,
                nhead=width // 64 if width % 64 == 0 else 1,
                dim_feedforward=4 * width,
                dropout=config.vtr_head_dropout,
                activation="gelu",
                layer_norm_eps=1e-12,
                batch_first=True,
                norm_first=False,
            )
            for _ in range(config.vtr_head_layers)
        )
        self.proj = nn.Linear(width, width)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(num_images, T, D)` hidden states at the visual positions -> `(num_images, T, D)` predictions."""
        num_tokens = hidden_states.shape[1]
        if num_tokens > self.position_embedding.num_embeddings:
            raise ValueError(
                f"{num_tokens} visual tokens per image but the VTR head has "
                f"{self.position_embedding.num_embeddings} positions (config.image_seq_length)"
            )
        positions = torch.arange(num_tokens, device=hidden_states.device)
        hidden_states = hidden_states + self.position_embedding(positions)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return self.proj(hidden_states)
