"""GPU check and benchmark at paper scale (one short script for a lent GPU; not a test).

1. The real Stage 2 and Stage 3 training functions and report generation run on CUDA (bf16
   autocast) over synthetic preprocessed volumes, and their output folders reload on the CPU.
2. Paper scale (config/ct_rate.yaml: ResEnc [32..320] x 6 stages, 192x256x256, batch 2, decoder
   8 x 512 x 8): step time and peak GPU memory of Stage 2 and Stage 3 (frozen and fine-tuned
   encoder), and generation tokens/s with and without the KV cache (ratio from the same run).
Writes a JSON summary to $OUT/gpu_check.json (or ./gpu_check.json) and prints it.
Usage: python benchmarks/gpu_check.py [--quick]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from uvlm.constants import CT_RATE_LABELS  # noqa: E402
from uvlm.data.volumes import VolumeDataset  # noqa: E402
from uvlm.models.cls_head import ClsHeadConfig, QueryClassificationHead, Stage2Classifier  # noqa: E402
from uvlm.models.encoder import EncoderConfig, build_encoder  # noqa: E402
from uvlm.models.report_model import ReportGenerator  # noqa: E402
from uvlm.text.tokenizer import SpecialIds, train_bpe  # noqa: E402
from uvlm.train.stage3 import build_model_config, pad_batch  # noqa: E402

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
    return pd.DataFrame(rows)


@section("real_training_functions_on_cuda")
def check_training_functions(tmp: Path) -> dict:
    from uvlm.generate import generate_reports
    from uvlm.train.stage2 import Stage2Config, train_stage2
    from uvlm.train.stage3 import Stage3Config, load_report_model, train_stage3

    rng = np.random.default_rng(0)
    grid = (32, 64, 64)
    enc = EncoderConfig([8, 16, 32, 64, 64], [1, 2, 2, 2, 2], [1, 1, 1, 1, 1], [1, 1, 1, 1])
    rows = synthetic_rows(tmp, 12, grid, rng)
    data = VolumeDataset(rows)
    s2 = Stage2Config(steps=6, batch_size=4, lr=1e-3, encoder_lr_mult=0.1, weight_decay=0.01, grad_clip=12.0)
    metrics = train_stage2(data, data, None, enc, s2, tmp / "s2", "cuda", 4, 0)
    train_bpe(rows["report_text"].tolist() * 5, 300, tmp / "tok.json")
    s3 = Stage3Config(steps=6, batch_size=4, lr=1e-3, encoder_lr_mult=0.1, weight_decay=0.01, grad_clip=1.0,
                      max_text_tokens=64)
    train_stage3(data, tmp / "tok.json", tmp / "s2", enc, grid, {"dim": 64, "n_layers": 2, "n_heads": 2, "dropout": 0.0}, s3,
                 True, "multi_layer", tmp / "s3", "cuda", 4, 0)
    df = generate_reports(tmp / "s3", data, tmp / "reports.parquet", 16, 6, "cuda", 4)
    model, _ = load_report_model(tmp / "s3", torch.device("cpu"))  # the folder reloads on the CPU
    log2 = pd.read_csv(tmp / "s2" / "training_log.csv")
    return {"stage2_val_auc": metrics["macro_auc"], "stage2_loss_first_last": [log2["loss"].iloc[0], log2["loss"].iloc[-1]],
            "generated": int(len(df)), "mean_tokens": float(df["n_tokens"].mean()),
            "reloaded_params": sum(p.numel() for p in model.parameters())}


def paper_encoder(cfg: dict) -> EncoderConfig:
    return EncoderConfig.from_config(cfg["encoder"])


def timed_steps(step, n_warm: int, n: int) -> tuple[float, float]:
    torch.cuda.reset_peak_memory_stats()
    for _ in range(n_warm):
        step()
    torch.cuda.synchronize()
    t0 = time.monotonic()
    for _ in range(n):
        step()
    torch.cuda.synchronize()
    return (time.monotonic() - t0) / n, torch.cuda.max_memory_allocated() / 2**30


@section("paper_scale_stage2")
def bench_stage2(cfg: dict, n: int) -> dict:
    dev = torch.device("cuda")
    enc = build_encoder(paper_encoder(cfg))
    head = QueryClassificationHead(ClsHeadConfig(320, 18, 4))
    model = Stage2Classifier(enc, head).to(dev)
    opt = torch.optim.AdamW([{"params": head.parameters(), "lr": 2e-5},
                             {"params": enc.parameters(), "lr": 2e-6}], weight_decay=0.01)
    x = torch.randn(2, 1, *cfg["preprocess"]["grid"], device=dev)
    y = torch.randint(0, 2, (2, 18), device=dev).float()

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
        opt.step()

    sec, mem = timed_steps(step, 2, n)
    return {"step_s": round(sec, 4), "peak_gib": round(mem, 2),
            "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}


def paper_report_model(cfg: dict, freeze: bool, tmp: Path) -> ReportGenerator:
    tok = train_bpe(["findings of the chest " * 8] * 20, 300, tmp / "paper_tok.json")
    mcfg = build_model_config(paper_encoder(cfg), tuple(cfg["preprocess"]["grid"]), cfg["stage3"]["decoder"],
                              cfg["stage3"]["vocab_size"], SpecialIds.from_tokenizer(tok), freeze, "multi_layer",
                              cfg["stage3"]["max_text_tokens"])
    return ReportGenerator(mcfg, build_encoder(paper_encoder(cfg))).cuda()


@section("paper_scale_stage3")
def bench_stage3(cfg: dict, tmp: Path, n: int) -> dict:
    out = {}
    for freeze in (True, False):
        model = paper_report_model(cfg, freeze, tmp)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=2e-5)
        x = torch.randn(2, 1, *cfg["preprocess"]["grid"], device="cuda")
        ids = pad_batch([[2] + list(range(6, 306)) + [3]] * 2, 0).cuda()  # 302 text tokens

        def step(model=model, opt=opt, x=x, ids=ids, params=params):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model.loss(x, ids)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()

        sec, mem = timed_steps(step, 2, n)
        key = "frozen" if freeze else "finetuned"
        out[key] = {"step_s": round(sec, 4), "peak_gib": round(mem, 2),
                    "n_visual_tokens": model.config.n_visual_tokens,
                    "decoder_params_M": round(sum(p.numel() for p in model.decoder.parameters()) / 1e6, 2),
                    "trainable_M": round(sum(p.numel() for p in params) / 1e6, 2)}
        del model, opt
        torch.cuda.empty_cache()
    return out


@section("paper_scale_generation")
def bench_generation(cfg: dict, tmp: Path, new_tokens: int) -> dict:
    model = paper_report_model(cfg, True, tmp).eval()
    model.config.eos_id = -1  # never stop early: measure exactly new_tokens per report
    x = torch.randn(2, 1, *cfg["preprocess"]["grid"], device="cuda")
    out = {}
    for use_cache in (True, False):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model.generate(x, 4, use_cache=use_cache)
            torch.cuda.synchronize()
            t0 = time.monotonic()
            seqs = model.generate(x, new_tokens, use_cache=use_cache)
            torch.cuda.synchronize()
        dt = time.monotonic() - t0
        out["cache" if use_cache else "no_cache"] = {"tokens_per_s": round(sum(map(len, seqs)) / dt, 1),
                                                     "seconds": round(dt, 2)}
    out["cache_speedup"] = round(out["cache"]["tokens_per_s"] / out["no_cache"]["tokens_per_s"], 2)
    out["batch"], out["new_tokens"] = 2, new_tokens
    return out


def main() -> None:
    quick = "--quick" in sys.argv
    assert torch.cuda.is_available(), "this script needs a CUDA GPU"
    RESULTS["device"] = {"name": torch.cuda.get_device_name(0), "torch": torch.__version__}
    cfg = yaml.safe_load((REPO / "config" / "ct_rate.yaml").read_text())
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        check_training_functions(tmp)
        bench_stage2(cfg, 3 if quick else 10)
        bench_stage3(cfg, tmp, 3 if quick else 10)
        bench_generation(cfg, tmp, 64 if quick else 256)
    out = Path(os.environ.get("OUT", ".")) / "gpu_check.json"
    out.write_text(json.dumps(RESULTS, indent=2))
    print(json.dumps(RESULTS, indent=2))


if __name__ == "__main__":
    main()
