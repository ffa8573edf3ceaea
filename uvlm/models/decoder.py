"""Stage 3 language decoder: a small pre-LN transformer with RoPE, trained from scratch.

Differences from a plain GPT: attention takes an explicit boolean mask (the hybrid vision/text
mask below), each block can receive visual features added at the visual positions after its attention
and before its MLP (multi-layer injection, where the authors' code adds them), and a preallocated
per-layer KV cache serves incremental decoding.
The LM head is tied to the token embedding (nanoGPT style): it saves vocab*dim parameters
(10.2M at vocab 20000, dim 512), which matters for a 0.1B model trained on ~25k reports.
It is computed from ``tok_emb.weight`` rather than held as a second module sharing that tensor,
so the state dict has no aliased entries and plain ``safetensors.torch.save_file`` works.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class DecoderConfig:
    vocab_size: int
    dim: int = 512
    n_layers: int = 8
    n_heads: int = 8
    mlp_ratio: float = 4.0
    max_seq_len: int = 1024  # vision block (N_vis + 2 markers) + text must fit
    dropout: float = 0.0
    rope_theta: float = 10000.0


def hybrid_attention_mask(n_vision: int, n_text: int, device: torch.device | None = None) -> Tensor:
    """(L, L) bool mask, L = n_vision + n_text, True = query row may attend to key column.

    The vision block is positions [0, n_vision): vision_start, the visual tokens and vision_end.
    It attends to itself in both directions and never to text, so visual states do not depend
    on the report. Text position i sees the whole vision block and text positions j <= i.
    """
    n = n_vision + n_text
    mask = torch.zeros(n, n, dtype=torch.bool, device=device)
    mask[:, :n_vision] = True  # everyone sees the full vision block
    mask[n_vision:, n_vision:] = torch.ones(n_text, n_text, dtype=torch.bool, device=device).tril()
    return mask


def rope_tables(head_dim: int, max_len: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos, sin: (max_len, head_dim) for the rotate-half formulation."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # (max_len, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (max_len, hd)
    return emb.cos(), emb.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: (B, H, T, hd); cos/sin: (T, hd)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class KVCache:
    """Preallocated keys/values per layer: k[i], v[i] are (B, n_heads, max_len, head_dim).

    ``length`` counts filled positions; the decoder writes a chunk at [length, length + T) in every
    layer and then advances ``length`` once. All rows of the batch share positions (no padding).
    """

    def __init__(self, config: DecoderConfig, batch: int, max_len: int, device: torch.device,
                 dtype: torch.dtype) -> None:
        if max_len > config.max_seq_len:
            raise ValueError(f"cache length {max_len} exceeds max_seq_len {config.max_seq_len}")
        hd = config.dim // config.n_heads
        shape = (batch, config.n_heads, max_len, hd)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.length = 0
        self.max_len = max_len

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (B, H, T, hd) after the filled part; return all keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full ({self.max_len} positions)")
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]  # (B, H, end, hd)

    def select(self, index: Tensor) -> None:
        """Row r becomes a copy of old row ``index[r]`` (R,): beam reordering, or expanding one prefilled
        row per image to its beams with ``repeat_interleave``. Only the filled positions are copied."""
        n = self.length
        for store in (self.k, self.v):
            for i, buf in enumerate(store):
                rows = buf[:, :, :n].index_select(0, index)  # (R, H, n, hd), a copy: safe to write back
                if rows.shape[0] != buf.shape[0]:
                    store[i] = buf.new_zeros((rows.shape[0], *buf.shape[1:]))
                store[i][:, :, :n] = rows


class Attention(nn.Module):
    def __init__(self, config: DecoderConfig, layer: int) -> None:
        super().__init__()
        if config.dim % config.n_heads:
            raise ValueError("dim must be divisible by n_heads")
        self.layer = layer
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.dim, 3 * config.dim, bias=False)
        self.proj = nn.Linear(config.dim, config.dim, bias=False)
        self.dropout = config.dropout

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None,
                cache: KVCache | None) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)  # 3 x (B, T, C)
        q, k, v = (z.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2) for z in (q, k, v))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # (B, H, T, hd)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)  # (B, H, S, hd), S = cached + T
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, hd)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class MLP(nn.Module):
    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        hidden = int(config.mlp_ratio * config.dim)
        self.fc = nn.Linear(config.dim, hidden, bias=False)
        self.proj = nn.Linear(hidden, config.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-LN block: x + attn(ln(x)), then the injected visual features at the visual positions,
    then x + mlp(ln(x))."""

    def __init__(self, config: DecoderConfig, layer: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.dim)
        self.attn = Attention(config, layer)
        self.ln2 = nn.LayerNorm(config.dim)
        self.mlp = MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None,
                cache: KVCache | None = None, inject: Tensor | None = None,
                vis_slice: slice | None = None) -> Tensor:
        x = x + self.drop(self.attn(self.ln1(x), cos, sin, mask, cache))
        if inject is not None:  # (B, N_vis, dim) at vis_slice; out-of-place, safe for autograd
            s = vis_slice
            x = torch.cat([x[:, :s.start], x[:, s] + inject.to(x.dtype), x[:, s.stop:]], dim=1)
        return x + self.drop(self.mlp(self.ln2(x)))


class Decoder(nn.Module):
    """Token embedding + blocks + final LayerNorm + tied LM head (``lm_head``). ``forward`` takes
    embeddings, so the caller can splice visual placeholders in before the first block."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.dim)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.dim)
        cos, sin = rope_tables(config.dim // config.n_heads, config.max_seq_len, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)  # (max_seq_len, hd)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2 scaled init of residual projections
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def lm_head(self, h: Tensor) -> Tensor:
        """Tied output projection: (..., dim) -> (..., vocab_size) logits."""
        return F.linear(h, self.tok_emb.weight)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None,
        injected: dict[int, Tensor] | None = None,
        vis_slice: slice | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """Run the blocks over input embeddings; returns final-normed hidden states.

        x: (B, T, dim) embeddings of the new positions. mask: bool, broadcastable to (B, H, T, S)
        with S = cache.length + T (keys = cached + new), True = attend; None = attend to all keys.
        injected: {layer: (B, N_vis, dim)}, added at ``vis_slice`` after that layer's attention.
        cache: filled at [cache.length, cache.length + T), then ``cache.length`` advances by T.
        """
        t = x.shape[1]
        if injected and (vis_slice is None or max(injected) >= len(self.blocks)):
            raise ValueError(f"injection into layers {sorted(injected)} needs vis_slice and existing layers")
        start = cache.length if cache is not None else 0
        if start + t > self.config.max_seq_len:
            raise ValueError(f"sequence length {start + t} exceeds max_seq_len {self.config.max_seq_len}")
        cos = self.rope_cos[start:start + t].to(x.dtype)  # (T, hd)
        sin = self.rope_sin[start:start + t].to(x.dtype)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, mask, cache, (injected or {}).get(i), vis_slice)
        if cache is not None:
            cache.length += t
        return self.ln_f(x)  # (B, T, dim)
