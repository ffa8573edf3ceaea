"""Fixed-shape incremental decoding for our own decoder, so that one decoding step can be captured once
(CUDA graphs through ``torch.compile(mode="reduce-overhead")``) and replayed for every token.

Why: with the dynamic ``KVCache`` every step has a new key length and launches ~100 small kernels, so on a
GPU the step is launch-bound (the cache gave only 1.24x over recomputation on an H200 at batch 2). Here
every step has the same shapes and addresses: the new keys/values are written at a position held in a
device tensor (``index_copy_``), and the query attends to the whole preallocated cache under a mask of the
filled positions. Masked keys get exactly zero weight, so the tokens equal the dynamic cache's; logits
differ only by float rounding (the attention sums run over more, zero-weighted, keys).
Our own ``Decoder`` only: the Hugging Face decoder (``uvlm.models.hf_decoder``) keeps its dynamic path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from uvlm.models.decoder import Decoder, DecoderConfig, KVCache


class StaticKVCache:
    """k[i], v[i]: (R, n_heads, max_len, head_dim) at fixed addresses; ``pos`` (1,) long on the device is
    the position the next step writes. ``length`` mirrors ``pos`` on the host (bounds checks, ``select``)."""

    def __init__(self, config: DecoderConfig, rows: int, max_len: int, device: torch.device,
                 dtype: torch.dtype) -> None:
        if max_len > config.max_seq_len:
            raise ValueError(f"cache length {max_len} exceeds max_seq_len {config.max_seq_len}")
        shape = (rows, config.n_heads, max_len, config.dim // config.n_heads)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.key_pos = torch.arange(max_len, device=device).view(1, 1, 1, max_len)
        self.length, self.max_len = 0, max_len
        for t in (*self.k, *self.v, self.pos, self.key_pos):  # a captured graph reads them in place
            torch._dynamo.mark_static_address(t)

    def load(self, cache: KVCache, index: Tensor | None = None) -> None:
        """Start from a prefilled cache: row r = its row ``index[r]`` (R,), or row r when None.
        The tail is zeroed so that stale keys of an earlier call never meet a zero weight as inf/nan."""
        n = cache.length
        if n >= self.max_len:
            raise ValueError(f"prefill of {n} positions leaves no room in {self.max_len}")
        for dst, src in zip((*self.k, *self.v), (*cache.k, *cache.v), strict=True):
            rows = src[:, :, :n] if index is None else src[:, :, :n].index_select(0, index)  # (R, H, n, hd)
            dst[:, :, :n].copy_(rows)
            dst[:, :, n:].zero_()
        self.length = n
        self.pos.fill_(n)

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (R, H, 1, hd) at ``pos``; return the whole buffers (R, H, max_len, hd)."""
        self.k[layer].index_copy_(2, self.pos, k.to(self.k[layer].dtype))
        self.v[layer].index_copy_(2, self.pos, v.to(self.v[layer].dtype))
        return self.k[layer], self.v[layer]

    def key_mask(self) -> Tensor:
        """(1, 1, 1, max_len) bool, True at the filled positions and the one being written."""
        return self.key_pos <= self.pos

    def select(self, index: Tensor) -> None:
        """Beam reordering in place: row r becomes old row ``index[r]`` (R,) over the filled positions."""
        n = self.length
        for buf in (*self.k, *self.v):
            buf[:, :, :n].copy_(buf[:, :, :n].index_select(0, index))

    def advance(self) -> None:
        self.length += 1
        self.pos.fill_(self.length)


def static_step(decoder: Decoder, tokens: Tensor, cache: StaticKVCache) -> Tensor:
    """tokens (R, 1) at position ``cache.pos`` -> next-token logits (R, V); writes that position's keys and
    values. Every shape is fixed by (R, max_len), so the whole step is one graph."""
    x = decoder.drop(decoder.tok_emb(tokens))  # (R, 1, dim)
    cos = decoder.rope_cos.index_select(0, cache.pos).to(x.dtype)  # (1, hd)
    sin = decoder.rope_sin.index_select(0, cache.pos).to(x.dtype)
    mask = cache.key_mask()
    for block in decoder.blocks:
        x = block(x, cos, sin, mask, cache)  # type: ignore[arg-type]  # duck-typed cache (update)
    return decoder.lm_head(decoder.ln_f(x)[:, -1])  # (R, V)


_COMPILED: dict[bool, Callable] = {}


def compiled_step(cuda_graphs: bool) -> Callable:
    """``static_step`` under torch.compile, built once per process: with CUDA graphs on a GPU
    ("reduce-overhead"), plain inductor elsewhere. Recompiles per (rows, max_len, dtype, device)."""
    if cuda_graphs not in _COMPILED:
        _COMPILED[cuda_graphs] = torch.compile(static_step, mode="reduce-overhead" if cuda_graphs else None,
                                               dynamic=False, fullgraph=True)
    return _COMPILED[cuda_graphs]


class StaticStepper:
    """A StaticKVCache and the step that runs on it (eager or compiled); ``__call__`` is one token."""

    def __init__(self, decoder: Decoder, rows: int, max_len: int, device: torch.device, dtype: torch.dtype,
                 compiled: bool) -> None:
        self.decoder = decoder
        self.cache = StaticKVCache(decoder.config, rows, max_len, device, dtype)
        self.cuda_graphs = compiled and device.type == "cuda"
        self.step = compiled_step(self.cuda_graphs) if compiled else static_step

    def __call__(self, tokens: Tensor) -> Tensor:
        """tokens (R, 1) -> logits (R, V) for the next position."""
        if self.cache.length >= self.cache.max_len:
            raise ValueError(f"KV cache full ({self.cache.max_len} positions)")
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        logits = self.step(self.decoder, tokens, self.cache)
        if self.cuda_graphs:
            logits = logits.clone()  # the graph's output buffer is overwritten by the next replay
        self.cache.advance()
        return logits


class StepperPool:
    """Steppers kept per (rows, max_len, compiled, dtype, device): a compiled step recorded for one batch
    shape is reused by the next call of that shape (the last batch of a split adds a second shape)."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self.steppers: dict[tuple, StaticStepper] = {}

    def get(self, decoder: Decoder, rows: int, max_len: int, device: torch.device, dtype: torch.dtype,
            compiled: bool) -> StaticStepper:
        key = (rows, max_len, compiled, dtype, device)
        if key not in self.steppers:
            if len(self.steppers) >= self.size:
                self.steppers.pop(next(iter(self.steppers)))  # the oldest shape
            self.steppers[key] = StaticStepper(decoder, rows, max_len, device, dtype, compiled)
        return self.steppers[key]
