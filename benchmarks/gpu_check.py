"""GPU check and benchmark at paper scale (one short script for a lent GPU; not a test).

1. The real Stage 2 and Stage 3 training functions and report generation run on CUDA (bf16
   autocast) over synthetic preprocessed volumes, and their output folders reload on the CPU.
2. Paper scale (config/ct_rate.yaml: ResEnc [32..320] x 6 stages, 192x256x256, batch 2, decoder
   8 x 512 x 8): step time and peak GPU memory of Stage 1 (nnU-Net U-Net, 96x128x128 patches, deep
   supervision), Stage 2 and Stage 3 (frozen and fine-tuned encoder), and generation tokens/s with
   and without the KV cache and with 4-beam search (ratios from the same run).
3. Decoding alone at paper scale, batch 1, 16 and 64, 128 new tokens (32 with --quick): no cache, the
   dynamic KV cache, the fixed-shape cache eager and compiled with CUDA graphs (benchmarks/decode_rates.py);
   compile + capture time apart. Time-boxed: no measurement starts after 6 minutes of the script.
   Built to finish within 8 minutes on one H100 (sections 1-2 took about 2 on the H200 they last ran on).
Writes a JSON summary to $OUT/gpu_check.json (or ./gpu_check.json) and prints it.
Usage: python benchmarks/gpu_check.py [--quick | --cpu-dry-run]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from uvlm.config import with_defaults  # noqa: E402
from uvlm.constants import CT_RATE_LABELS  # noqa: E402
from uvlm.data.manifest import with_label_set  # noqa: E402
from uvlm.data.volumes import VolumeDataset  # noqa: E402
from uvlm.models.encoder import EncoderConfig  # noqa: E402
from uvlm.text.tokenizer import train_bpe  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS: dict = {}


def section(name: str):
    def wrap(fn):
        def run(*a, **k):
            t0 = time.monotonic()
            try:
                RESULTS[name] = fn(*a, **k)
            except Exception as err:  # keep going: one failing section must not hide the others
                RESULTS[name] = {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()[-2000:]}
            RESULTS[name] = {**RESULTS[name], "section_s": round(time.monotonic() - t0, 1)}
            print(name, json.dumps(RESULTS[name])[:600], flush=True)
        return run
    return wrap


def synthetic_rows(folder: Path, n: int, grid: tuple[int, int, int], rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    words = ["No pleural effusion.", "Cardiomegaly is present.", "A nodule in the right upper lobe.",
             "Emphysema in both lungs.", "Trachea is open.", "No consolidation."]
    for i in range(n):
        arr = rng.standard_normal(grid).astype(np.float16)
        path = folder / f"v{i}.npy"
        np.save(path, arr)
        labels = {c: int(rng.integers(0, 2)) for c in CT_RATE_LABELS}
        text = " ".join(rng.choice(words, size=4))
        rows.append({"volume_name": f"train_{i}_a_1", "array_path": str(path), "report_text": text, **labels})
    return with_label_set(pd.DataFrame(rows), "ct_rate", CT_RATE_LABELS)


@section("real_training_functions")
def check_training_functions(tmp: Path, device: str) -> dict:
    from uvlm.experiments import Experiment
    from uvlm.generate import generate_reports
    from uvlm.models.report_factory import load_report_model
    from uvlm.train.stage2 import Stage2Config, train_stage2
    from uvlm.train.stage3 import Stage3Config, train_stage3

    rng = np.random.default_rng(0)
    grid = (32, 64, 64)
    enc = EncoderConfig([8, 16, 32, 64, 64], [1, 2, 2, 2, 2], [1, 1, 1, 1, 1], [1, 1, 1, 1])
    rows = synthetic_rows(tmp, 12, grid, rng)
    data = VolumeDataset(rows)
    s2 = Stage2Config(steps=6, batch_size=4, lr=1e-3, encoder_lr_mult=0.1, weight_decay=0.01, grad_clip=12.0)
    metrics = train_stage2(data, data, data, None, enc, s2, tmp / "s2", device, 4, 0)
    train_bpe(rows["report_text"].tolist() * 5, 300, tmp / "tok.json")
    s3 = Stage3Config(steps=6, batch_size=4, lr=1e-3, encoder_lr_mult=0.1, weight_decay=0.01, grad_clip=1.0,
                      max_text_tokens=64)
    exp = Experiment("sc_frz", "SC + Frz", None, True, multi_layer=True, frozen=True)
    decoder = {"dim": 64, "n_layers": 2, "n_heads": 2, "dropout": 0.0}
    # Frz: the same run with the frozen encoder's features cached once and recomputed every step
    holdout_loss = {}
    for name, gb in (("s3", 1.0), ("s3_nocache", 0.0)):
        cfg3 = Stage3Config(**{**asdict(s3), "feature_cache_gb": gb})
        t0 = time.monotonic()
        train_stage3(data, data, tmp / "tok.json", tmp / "s2", enc, grid, decoder, cfg3, exp, tmp / name, device, 4, 0)
        cfg = json.loads((tmp / name / "config.json").read_text())
        holdout_loss[name] = {"holdout_loss": cfg["holdout_loss"], "s": round(time.monotonic() - t0, 2)}
    df = generate_reports(tmp / "s3", data, tmp / "reports.parquet", 16, 6, device, 4)
    model, _ = load_report_model(tmp / "s3", torch.device("cpu"))  # the folder reloads on the CPU
    log2 = pd.read_csv(tmp / "s2" / "training_log.csv")
    return {"device": device, "stage2_val_auc": metrics["macro_auc"],
            "stage2_loss_first_last": [log2["loss"].iloc[0], log2["loss"].iloc[-1]],
            "stage3_frozen_cached_vs_recomputed": holdout_loss,
            "generated": int(len(df)), "mean_tokens": float(df["n_tokens"].mean()),
            "reloaded_params": sum(p.numel() for p in model.parameters())}


@section("paper_scale_steps")
def bench_steps(cfg: dict, n: int) -> dict:
    """One optimiser step of each stage at paper scale, batch 2: seconds and peak GPU memory."""
    import steps

    dev = torch.device("cuda")
    cases = {"stage1": (steps.stage1_step, {}), "stage2_finetuned": (steps.stage2_step, {"finetune": True}),
             "stage3_frozen": (steps.stage3_step, {"freeze": True}),
             "stage3_finetuned": (steps.stage3_step, {"freeze": False})}
    out = {}
    for name, (build, kw) in cases.items():
        step = None
        try:
            step, info = build(cfg, dev, 2, **kw)
            out[name] = {**info, **steps.time_steps(step, dev, 2, n)}
        except torch.OutOfMemoryError as err:
            out[name] = {"error": f"out of memory: {str(err)[:200]}"}
        del step
        torch.cuda.empty_cache()
    return out


@section("paper_scale_generation")
def bench_generation(cfg: dict, new_tokens: int) -> dict:
    import steps

    return steps.generation_rates(cfg, torch.device("cuda"), 2, new_tokens)


@section("static_cache_decoding")
def bench_static_decoding(cfg: dict, device: str, batches: list[int], new_tokens: int, deadline: float) -> dict:
    import decode_rates

    return decode_rates.static_cache_rates(cfg, torch.device(device), batches, new_tokens, deadline)


def main() -> None:
    t_start = time.monotonic()
    quick = "--quick" in sys.argv
    if "--cpu-dry-run" in sys.argv:  # sections 1 and 3 on the CPU (3 at demo scale): checks this script against the API
        with tempfile.TemporaryDirectory() as d:
            check_training_functions(Path(d), "cpu")
        demo = with_defaults(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
        bench_static_decoding(demo, "cpu", [1, 2], 8, t_start + 600)
        return
    assert torch.cuda.is_available(), "this script needs a CUDA GPU"
    RESULTS["device"] = {"name": torch.cuda.get_device_name(0), "torch": torch.__version__}
    cfg = with_defaults(yaml.safe_load((REPO / "config" / "ct_rate.yaml").read_text()))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        check_training_functions(tmp, "cuda")
        bench_steps(cfg, 3 if quick else 10)
        bench_generation(cfg, 64 if quick else 256)
        bench_static_decoding(cfg, "cuda", [1, 16, 64], 32 if quick else 128, t_start + 360)
    out = Path(os.environ.get("OUT", ".")) / "gpu_check.json"
    out.write_text(json.dumps(RESULTS, indent=2))
    print(json.dumps(RESULTS, indent=2))


if __name__ == "__main__":
    main()
