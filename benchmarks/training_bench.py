"""CPU step time and peak memory of each training stage; generation tokens/s with and without the KV cache.

Each measurement runs in its own process (peak RSS belongs to it alone) under an address-space cap,
so a step that does not fit in memory is reported as such instead of swapping the machine:
  demo scale   config/config.yaml: Stage 1 (nnU-Net U-Net, deep supervision), Stage 2, Stage 3
               (frozen and fine-tuned encoder), batch as configured; generation at batch 16
  paper scale  config/ct_rate.yaml (192x256x256, ResEnc 6 stages, decoder 8 x 512): one step each,
               batch 1 on CPU; generation at batch 1
  static_decoding  decoding alone with no cache, the dynamic KV cache and the fixed-shape cache eager and
               compiled (inductor on CPU): demo scale at batch 1, 16, 64; paper scale at batch 1
               at 1 thread (benchmarks/decode_rates.py; just these: --only demo/static_decoding paper/static_decoding)
Ratios (cache speed-up) come from the same process. GPU numbers: benchmarks/gpu_check.py.

    python benchmarks/training_bench.py [--cap-gb 18] [--out benchmarks/results/training_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from uvlm.config import with_defaults  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CASES = {
    # name: (config, builder, kwargs, warm-up steps, timed steps)
    "demo/stage1": ("config.yaml", "stage1_step", {"batch": 2}, 1, 3),
    "demo/stage2": ("config.yaml", "stage2_step", {"batch": 8}, 1, 3),
    "demo/stage3_frozen": ("config.yaml", "stage3_step", {"batch": 8, "freeze": True}, 1, 3),
    "demo/stage3_frozen_cached": ("config.yaml", "stage3_step", {"batch": 8, "freeze": True, "cached": True}, 1, 3),
    "demo/stage3_finetuned": ("config.yaml", "stage3_step", {"batch": 8, "freeze": False}, 1, 3),
    "demo/generation": ("config.yaml", "generation_rates", {"batch": 16, "new_tokens": 64}, 0, 0),
    "paper/stage1": ("ct_rate.yaml", "stage1_step", {"batch": 1}, 0, 1),
    "paper/stage2_frozen_encoder": ("ct_rate.yaml", "stage2_step", {"batch": 1, "finetune": False}, 0, 1),
    "paper/stage2_finetuned": ("ct_rate.yaml", "stage2_step", {"batch": 1, "finetune": True}, 0, 1),
    "paper/stage3_frozen": ("ct_rate.yaml", "stage3_step", {"batch": 1, "freeze": True}, 0, 1),
    "paper/stage3_frozen_cached": ("ct_rate.yaml", "stage3_step", {"batch": 1, "freeze": True, "cached": True}, 0, 1),
    "paper/generation": ("ct_rate.yaml", "generation_rates", {"batch": 1, "new_tokens": 32}, 0, 0),
    "demo/static_decoding": ("config.yaml", "static_cache_rates",
                             {"batches": [1, 16, 64], "new_tokens": 64, "repeats": 2, "threads": 1}, 0, 0),
    "paper/static_decoding": ("ct_rate.yaml", "static_cache_rates",
                              {"batches": [1], "new_tokens": 32, "repeats": 2, "threads": 1}, 0, 0),
}


def run_case(name: str) -> dict:
    import decode_rates
    import steps

    config, builder, kwargs, warm, n = CASES[name]
    cfg = with_defaults(yaml.safe_load((REPO / "config" / config).read_text()))
    torch.manual_seed(0)
    device = torch.device("cpu")
    if builder == "generation_rates":
        out = steps.generation_rates(cfg, device, **kwargs)
    elif builder == "static_cache_rates":
        out = decode_rates.static_cache_rates(cfg, device, **kwargs)
    else:
        step, info = getattr(steps, builder)(cfg, device, **kwargs)
        out = {**info, **steps.time_steps(step, device, warm, n)}
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "training_cpu.json"))
    ap.add_argument("--cap-gb", type=float, default=18.0, help="address-space cap per measurement")
    ap.add_argument("--only", nargs="*", default=list(CASES))
    ap.add_argument("--case", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.case:
        print(json.dumps(run_case(a.case)))
        return
    out = Path(a.out)
    previous = json.loads(out.read_text()) if out.is_file() and a.only != list(CASES) else {}
    results = {**previous, "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "torch_threads": torch.get_num_threads(), "cap_gb": a.cap_gb}}
    cap = int(a.cap_gb * 2**30)
    for name in a.only:
        done = subprocess.run([sys.executable, __file__, "--case", name], capture_output=True, text=True,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)))
        if done.returncode == 0:
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        else:
            tail = ((done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"])[0][:300]
            oom = "MemoryError" in tail or "memory" in tail.lower() or done.returncode < 0
            results[name] = {"error": f"does not fit in {a.cap_gb} GB: {tail}" if oom else f"failed: {tail}"}
        print(name, json.dumps(results[name]), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))  # --only updates those cases in an existing file


if __name__ == "__main__":
    main()
