"""Stage 2: query-based multi-label classification head on the deepest encoder stage.

One learnable query per class cross-attends to the deepest stage's tokens (paper: 320 channels,
6x8x8 = 384 tokens), so each class pools the evidence it needs from the whole volume. The pooled
per-class vectors are normalised, concatenated and mapped to one logit per class (train with BCE).
No positional embedding is added to the visual tokens, as in the paper's description.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class ClsHeadConfig:
    in_channels: int  # channels of the deepest encoder stage (320 at paper scale)
    num_classes: int  # 18 for CT-RATE, 3 for AbdomenAtlas
    num_heads: int = 4
    dropout: float = 0.0  # attention dropout


class QueryClassificationHead(nn.Module):
    """Learnable class queries -> cross-attention -> LayerNorm -> flatten -> Linear."""

    def __init__(self, config: ClsHeadConfig) -> None:
        super().__init__()
        if config.in_channels % config.num_heads:
            raise ValueError(f"in_channels {config.in_channels} not divisible by num_heads {config.num_heads}")
        self.config = config
        c, k = config.in_channels, config.num_classes
        self.queries = nn.Parameter(torch.empty(k, c))  # (K, C)
        self.attn = nn.MultiheadAttention(c, config.num_heads, dropout=config.dropout, batch_first=True)
        self.norm = nn.LayerNorm(c)
        self.fc = nn.Linear(k * c, k)
        # The authors' initialisation. Queries this large make attention selective from the first step: the
        # deepest stage is instance-normalised, so a near-uniform average of its tokens carries almost no signal.
        nn.init.xavier_uniform_(self.queries)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, deepest: Tensor) -> Tensor:
        """deepest: (B, C, D, H, W) -> logits (B, num_classes)."""
        b = deepest.shape[0]
        tokens = deepest.flatten(2).transpose(1, 2)  # (B, D*H*W, C)
        q = self.queries.unsqueeze(0).expand(b, -1, -1)  # (B, K, C)
        pooled, _ = self.attn(q, tokens, tokens, need_weights=False)  # (B, K, C)
        pooled = self.norm(pooled)
        return self.fc(pooled.flatten(1))  # (B, K*C) -> (B, K)


class Stage2Classifier(nn.Module):
    """Encoder (e.g. ``ResidualEncoderUNet(...).encoder``) + query head; only the last skip is used."""

    def __init__(self, encoder: nn.Module, head: QueryClassificationHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 1, D, H, W) -> logits (B, num_classes)."""
        skips = self.encoder(x)  # list of (B, C_s, D_s, H_s, W_s), shallow -> deep
        return self.head(skips[-1])
