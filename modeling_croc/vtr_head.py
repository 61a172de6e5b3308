"""Optional head between the LM's last hidden states and the visual-token reconstruction loss."""

from __future__ import annotations

import torch
from torch import nn

from .configuration_croc import CrocConfig


class CrocVTRHead(nn.Module):
    """Learned position embedding + `vtr_head_layers` BERT-style encoder layers + a linear layer.

    This is the released code's "transform block" (with one layer). The encoder layer is torch's own
    post-norm `TransformerEncoderLayer` with GELU, which is exactly a BERT layer; nothing is hand-written.
    """

    def __init__(self, config: CrocConfig):
        super().__init__()
        text = config.text_config
        self.position_embedding = nn.Embedding(config.image_seq_length, text.hidden_size)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model=text.hidden_size,
                nhead=text.num_attention_heads,
                dim_feedforward=text.intermediate_size,
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=False,
            )
            for _ in range(config.vtr_head_layers)
        )
        self.proj = nn.Linear(text.hidden_size, text.hidden_size)

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
