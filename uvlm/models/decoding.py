"""Decoding strategies for the Stage 3 report generator: greedy, beam search, top-k / top-p sampling.

The strategies know nothing about the model. They drive a ``Step`` function that maps the newest
token of every text row to next-token logits, after the caller (``ReportGenerator.generate``) has
run the prompt and produced the first logits. This keeps them testable with a hand-made model.

Rows: greedy and sampling use one row per image; beam search uses ``num_beams`` consecutive rows
per image (row r belongs to image r // num_beams) and asks the step function to reorder its state
(KV cache or token history) by the selected parent rows before appending the new tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Strategy = Literal["greedy", "beam", "sample"]

# advance(tokens (R,), parents (R,) | None) -> next-token logits (R, V). ``parents[r]`` is the row
# whose state row r continues (beam search); None keeps every row in place.
Step = Callable[[Tensor, Tensor | None], Tensor]


@dataclass
class DecodingConfig:
    """How ``ReportGenerator.generate`` picks tokens.

    length_penalty (beam search only) is simple length normalisation: a finished hypothesis of
    ``n`` scored tokens (eos included) with summed log-probability ``s`` ranks by ``s / n ** alpha``;
    0 = raw sum (favours short outputs), 1 = mean per-token log-probability.
    temperature, top_k (0 = off) and top_p (1.0 = off) apply to sampling only, in that order.
    no_repeat_ngram_size (0 = off) bans any token that would repeat an n-gram of the generated
    text, in every strategy.
    static_cache (our own decoder, with the KV cache): "none" = the dynamic KV cache; "eager" = a
    fixed-shape cache at max length (same tokens, for checking); "compile" = that step under torch.compile,
    captured as a CUDA graph on a GPU (``uvlm.models.static_decoding``).
    """

    strategy: Strategy = "greedy"
    max_new_tokens: int = 256
    num_beams: int = 4
    length_penalty: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    temperature: float = 1.0
    seed: int = 0
    no_repeat_ngram_size: int = 0
    static_cache: Literal["none", "eager", "compile"] = "none"

    def __post_init__(self) -> None:
        if self.strategy not in ("greedy", "beam", "sample"):
            raise ValueError(f"unknown decoding strategy {self.strategy!r}")
        if self.max_new_tokens < 0 or self.num_beams < 1 or self.top_k < 0 or self.no_repeat_ngram_size < 0:
            raise ValueError("max_new_tokens, top_k, no_repeat_ngram_size must be >= 0 and num_beams >= 1")
        if not 0.0 < self.top_p <= 1.0 or self.temperature <= 0.0:
            raise ValueError("top_p must be in (0, 1] and temperature > 0")
        if self.static_cache not in ("none", "eager", "compile"):
            raise ValueError(f"static_cache must be none, eager or compile, not {self.static_cache!r}")


# ----------------------------------------------------------------------------- logit filters
def filter_top_k(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits per row (ties with the k-th are kept), the rest become -inf."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: Tensor, p: float) -> Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability mass reaches p.

    A token survives iff the mass of the tokens ranked strictly above it is < p, so the top token
    always survives and the kept set is a prefix of the sorted distribution.
    """
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (..., V)
    probs = sorted_logits.float().softmax(dim=-1)
    cum = probs.cumsum(dim=-1)
    mass_above = torch.cat([torch.zeros_like(cum[..., :1]), cum[..., :-1]], dim=-1)  # exclusive cumsum
    drop_sorted = mass_above >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def banned_ngram_mask(history: Tensor, n: int, vocab_size: int) -> Tensor:
    """(R, V) bool, True where the token would complete an n-gram already present in history (R, T)."""
    r, t = history.shape
    if n <= 0 or t < n:
        return torch.zeros(r, vocab_size, dtype=torch.bool, device=history.device)
    grams = history.unfold(1, n, 1)  # (R, W, n), W = T - n + 1
    match = (grams[:, :, :-1] == history[:, None, t - n + 1:]).all(-1)  # (R, W): prefix = last n-1 tokens
    hits = torch.zeros(r, vocab_size, dtype=torch.long, device=history.device)
    return hits.scatter_add_(1, grams[:, :, -1], match.long()) > 0  # add, not assign: repeated ids


def _ban_repeats(logits: Tensor, history: Tensor, n: int) -> Tensor:
    if n <= 0:
        return logits
    return logits.masked_fill(banned_ngram_mask(history, n, logits.shape[-1]), float("-inf"))


def _cut_at_eos(rows: list[list[int]], eos_id: int) -> list[list[int]]:
    return [row[: row.index(eos_id)] if eos_id in row else row for row in rows]


# ----------------------------------------------------------------------------- greedy and sampling
def _pick(logits: Tensor, cfg: DecodingConfig, gen: torch.Generator | None) -> Tensor:
    """(R, V) -> (R,) next tokens: argmax, or a draw from the filtered tempered distribution."""
    if cfg.strategy == "greedy":
        return logits.argmax(-1)
    scaled = filter_top_p(filter_top_k(logits.float() / cfg.temperature, cfg.top_k), cfg.top_p)
    return torch.multinomial(scaled.softmax(-1), 1, generator=gen).squeeze(1)


def greedy_or_sample(first_logits: Tensor, advance: Step, cfg: DecodingConfig, eos_id: int,
                     pad_id: int) -> list[list[int]]:
    """One row per image; a finished row emits pad (the step function still runs it, batched)."""
    b = first_logits.shape[0]
    gen = None
    if cfg.strategy == "sample":
        gen = torch.Generator(device=first_logits.device).manual_seed(cfg.seed)
    logits = first_logits  # (B, V)
    done = torch.zeros(b, dtype=torch.bool, device=logits.device)
    steps: list[Tensor] = []
    for step in range(cfg.max_new_tokens):
        if steps:
            logits = _ban_repeats(logits, torch.stack(steps, 1), cfg.no_repeat_ngram_size)
        nxt = torch.where(done, pad_id, _pick(logits, cfg, gen))  # (B,)
        steps.append(nxt)
        done |= nxt == eos_id
        if bool(done.all()) or step == cfg.max_new_tokens - 1:
            break
        logits = advance(nxt, None)
    rows = torch.stack(steps, 1).tolist() if steps else [[] for _ in range(b)]
    return _cut_at_eos(rows, eos_id)


# ----------------------------------------------------------------------------- beam search
@dataclass
class _Hypothesis:
    score: float  # length-normalised log-probability
    tokens: list[int]  # without eos


def _normalised(logp: float, n_tokens: int, alpha: float) -> float:
    return logp / n_tokens ** alpha


def beam_search(first_logits: Tensor, advance: Step, cfg: DecodingConfig, eos_id: int) -> list[list[int]]:
    """Beam search over R = B * num_beams rows; returns the best hypothesis per image.

    Each step takes the 2K best (beam, token) extensions per image: eos among the K best closes a
    hypothesis, the K best non-eos extensions become the next beams (there are always K, since each
    beam contributes at most one eos). An image is done once it holds K finished hypotheses
    (fairseq / HF ``early_stopping=True``), so num_beams=1 is exactly greedy; beams still open at
    ``max_new_tokens`` are closed there. The best hypothesis by ``s / n ** length_penalty`` wins.
    """
    k = cfg.num_beams
    r, v = first_logits.shape
    b = r // k
    dev = first_logits.device
    offsets = torch.arange(b, device=dev)[:, None] * k  # (B, 1): first row of each image
    scores = torch.full((b, k), float("-inf"), device=dev)  # (B, K) summed log-probs
    scores[:, 0] = 0.0  # the K rows start identical: let only one expand at the first step
    tokens = torch.zeros(r, 0, dtype=torch.long, device=dev)  # (R, t) generated so far
    finished: list[list[_Hypothesis]] = [[] for _ in range(b)]
    done = [False] * b
    logits = first_logits  # (R, V)
    for step in range(cfg.max_new_tokens):
        logp = torch.log_softmax(logits.float(), dim=-1)  # (R, V)
        logp = _ban_repeats(logp, tokens, cfg.no_repeat_ngram_size)
        cand = (scores.reshape(r, 1) + logp).reshape(b, k * v)
        top_s, top_i = cand.topk(min(2 * k, k * v), dim=1)  # (B, 2K), best first
        parent, tok = top_i // v, top_i % v  # beam within the image, token
        is_eos = tok == eos_id
        _close_eos(finished, done, top_s, parent + offsets, is_eos, tokens, k, step + 1, cfg.length_penalty)
        order = torch.sort(is_eos.to(torch.int8), dim=1, stable=True).indices[:, :k]  # (B, K) non-eos first
        scores = top_s.gather(1, order)
        rows = (parent.gather(1, order) + offsets).reshape(r)  # (R,) parent row of each new beam
        new_tok = tok.gather(1, order).reshape(r)
        tokens = torch.cat([tokens[rows], new_tok[:, None]], dim=1)  # (R, t + 1)
        if all(done):
            break
        if step == cfg.max_new_tokens - 1:
            _close_open(finished, done, scores, tokens, cfg.length_penalty)
            break
        logits = advance(new_tok, rows)
    return [max(hyps, key=lambda h: h.score).tokens if hyps else [] for hyps in finished]


def _close_eos(finished: list[list[_Hypothesis]], done: list[bool], top_s: Tensor, rows: Tensor,
               is_eos: Tensor, tokens: Tensor, k: int, n_tokens: int, alpha: float) -> None:
    """Store eos extensions ranked among the K best of a not-yet-done image; mark images done."""
    rank = torch.arange(top_s.shape[1], device=top_s.device)
    hit = is_eos & (rank < k) & torch.isfinite(top_s)  # (B, 2K)
    if not bool(hit.any()):
        return
    for img, j in hit.nonzero().tolist():
        if not done[img]:
            finished[img].append(_Hypothesis(_normalised(float(top_s[img, j]), n_tokens, alpha),
                                             tokens[rows[img, j]].tolist()))
    for img, hyps in enumerate(finished):
        done[img] = done[img] or len(hyps) >= k


def _close_open(finished: list[list[_Hypothesis]], done: list[bool], scores: Tensor, tokens: Tensor,
                alpha: float) -> None:
    """At the length limit, the open beams of unfinished images become hypotheses (no eos)."""
    b, k = scores.shape
    n_tokens = tokens.shape[1]
    for img in range(b):
        if done[img]:
            continue
        for j in range(k):
            s = float(scores[img, j])
            if s != float("-inf"):
                finished[img].append(_Hypothesis(_normalised(s, n_tokens, alpha), tokens[img * k + j].tolist()))
