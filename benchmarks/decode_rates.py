"""Decoding tokens/s of the report generator with no cache, the dynamic KV cache, and the fixed-shape cache
eager and compiled (CUDA graphs on a GPU), per batch size, for benchmarks/gpu_check.py and training_bench.py.

Decoding only: the visual features are random tensors of the model's shapes, computed once and shared by the
rows (decoding speed does not depend on their values; the paper-scale encoder would dominate the time, see
steps.generation_rates). Greedy, eos disabled, so every row gets exactly ``new_tokens``; the prefill of the
vision block is inside the timed call, as in generation. Compile and warm-up are timed apart from the
measured call, and a measurement is skipped once ``deadline`` (time.monotonic()) has passed, which keeps a
GPU script inside its time box.
"""

from __future__ import annotations

import time

import torch
from steps import amp, report_model, sync
from torch import Tensor

from uvlm.models.decoding import DecodingConfig
from uvlm.models.injection import VisualFeatures

# name: (use_cache, DecodingConfig.static_cache); no_cache last: the time box drops it first
MODES = {"dynamic_cache": (True, "none"), "static_eager": (True, "eager"), "static_compiled": (True, "compile"),
         "no_cache": (False, "none")}


def _fixed_features(model: torch.nn.Module, device: torch.device) -> VisualFeatures:
    """One image's random visual tokens and injected features (1, N, dim), expanded to any batch."""
    g = torch.Generator().manual_seed(0)
    n, dim = model.config.n_visual_tokens, model.config.decoder.dim
    tokens = torch.randn(1, n, dim, generator=g).to(device)
    injected = {layer: torch.randn(1, n, dim, generator=g).to(device) for layer in set(model.injector.mapping.values())}
    return VisualFeatures(tokens, injected)


def _cudagraph_skips() -> int:
    from torch._dynamo.utils import counters

    return int(counters["inductor"].get("cudagraph_skips", 0))


def static_cache_rates(cfg: dict, device: torch.device, batches: list[int], new_tokens: int,
                       deadline: float | None = None, modes: list[str] | None = None, repeats: int = 1,
                       threads: int | None = None) -> dict:
    """{batch: {mode: tokens_per_s, seconds, warmup_s, same_tokens_as_dynamic}, speed-ups} plus settings.
    seconds: the best of ``repeats`` timed calls, modes taken in turn (a shared CPU is noisy); threads: torch
    CPU threads (on a loaded 2-core machine 2 threads ran 5x slower than 1 and erratically)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = report_model(cfg, device, True).eval()
    model.config.eos_id = -1  # never stop early
    feats = _fixed_features(model, device)
    model.encode = lambda images: VisualFeatures(  # only images.shape[0] is read
        feats.tokens.expand(images.shape[0], -1, -1),
        {k: f.expand(images.shape[0], -1, -1) for k, f in feats.injected.items()})
    out: dict = {"new_tokens": new_tokens, "decoder": {k: getattr(model.config.decoder, k)
                                                       for k in ("dim", "n_layers", "n_heads", "vocab_size")},
                 "visual_tokens": model.config.n_visual_tokens, "device": str(device),
                 "autocast_bf16": device.type == "cuda", "torch_threads": torch.get_num_threads()}
    skips_before = _cudagraph_skips()
    for b in batches:
        out[f"batch_{b}"] = _measure_batch(model, torch.zeros(b, 1, 1, 1, 1, device=device), modes or list(MODES),
                                           new_tokens, deadline, repeats)
    if device.type == "cuda":
        out["cudagraph_skips"] = _cudagraph_skips() - skips_before  # > 0: compiled without CUDA graphs
    return out


def _run(model: torch.nn.Module, x: Tensor, mode: str, n: int) -> tuple[list[list[int]], float]:
    use_cache, static = MODES[mode]
    with torch.no_grad(), amp(x.device):
        t0 = time.perf_counter()
        seqs = model.generate(x, use_cache=use_cache, decoding=DecodingConfig(max_new_tokens=n, static_cache=static))
        sync(x.device)
    return seqs, time.perf_counter() - t0


def _measure_batch(model: torch.nn.Module, x: Tensor, modes: list[str], n: int, deadline: float | None,
                   repeats: int) -> dict:
    """Warm every mode up (the compiled one at the measured length: compile + graph capture are per shape;
    the time box applies here, where the time goes), then time them round-robin, best of ``repeats``:
    a load change on a shared machine then hits every mode alike."""
    res: dict = {}
    for mode in modes:
        if deadline is not None and time.monotonic() > deadline:
            res[mode] = {"skipped": "time box spent"}
            continue
        res[mode] = {"warmup_s": round(_run(model, x, mode, n if MODES[mode][1] == "compile" else 2)[1], 2)}
    live = [m for m in modes if "warmup_s" in res[m]]
    best, seqs = dict.fromkeys(live, float("inf")), {}
    for _ in range(repeats):
        for mode in live:
            seqs[mode], dt = _run(model, x, mode, n)
            best[mode] = min(best[mode], dt)
    for mode in live:
        res[mode].update(tokens_per_s=round(sum(map(len, seqs[mode])) / best[mode], 1), seconds=round(best[mode], 3))
        if mode != "dynamic_cache" and "dynamic_cache" in seqs:
            same = [a == r for sa, sr in zip(seqs[mode], seqs["dynamic_cache"], strict=True)
                    for a, r in zip(sa, sr, strict=True)]
            res[mode]["same_tokens_as_dynamic"] = round(sum(same) / max(len(same), 1), 4)
    if "dynamic_cache" in best:
        res["speedup_vs_dynamic"] = {m: round(best["dynamic_cache"] / best[m], 2) for m in live}
    return res
