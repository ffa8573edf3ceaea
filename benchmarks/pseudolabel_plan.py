"""Pseudo-label plan at paper scale: per-labeler cost per volume (CPU measured, GPU estimated and cited)
times the case lists, in GPU hours and CPU core-hours, and the shard jobs the Snakemake rule submits.

Inputs: benchmarks/results/pseudolabel_cpu.json (pseudolabel_bench.py) and gpu_check_h200.json (the
Stage 1 training step on an H200). Writes pseudolabel_plan.json and pseudolabel_plan.md next to them.

    python benchmarks/pseudolabel_plan.py [--results benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CASES = {"Stage 1 (ReXGroundingCT training volumes)": 2628, "CT-RATE training volumes (all)": 47149}
# workflow/rules/pseudolabel.smk, rule pseudolabel_shard: runtime (minutes) and memory per job
RULE = {"gpu": {"runtime_min": 240, "mem_gb": 16}, "cpu": {"runtime_min": 120, "mem_gb": 4}}
FORWARD_SHARE_OF_TRAIN_STEP = 1 / 3  # backward ~ 2 x forward; the optimiser step is small next to both
# Published times (third-party measurements, see SOURCES)
TOTALSEG_CITED = {"seconds": 105.0, "gpu": "RTX 3090", "shape_zyx": [807, 512, 512], "spacing_mm": [1.0, 0.82, 0.82]}
SOURCES = {
    "totalseg_runtime": "https://github.com/wasserth/TotalSegmentator/blob/master/resources/runtime.md",
    "totalseg_train_guide": "https://github.com/wasserth/TotalSegmentator/blob/master/resources/train_nnunet.md",
    "nnunet_tta_8x_rates": "https://github.com/MIC-DKFZ/nnUNet/issues/1867",
    "nnunet_tta_8x_author": "https://github.com/MIC-DKFZ/nnUNet/issues/258",
    "nnunet_cpu_vs_gpu": "https://github.com/MIC-DKFZ/nnUNet/issues/1434",
}


def _voxels_at(shape_zyx: list[int], spacing: list[float], target: float) -> float:
    return math.prod(s * a / target for s, a in zip(shape_zyx, spacing, strict=True))


def plan(cpu: dict, gpu: dict, shard_size: int) -> dict:
    """Per-labeler seconds per volume and totals; see the assumptions in the returned dict."""
    s1 = gpu["paper_scale_steps"]["stage1"]
    threads = cpu["machine"]["threads"]
    labs = cpu["labelers"]
    resenc_gflop = labs["totalseg"]["forward"]["stage1_resenc"]["gflop"]
    # H200 seconds per GFLOP of forward pass, from the measured Stage 1 step (batch of patches, bf16 autocast)
    s_per_gflop = s1["step_s"] * FORWARD_SHARE_OF_TRAIN_STEP / s1["batch"] / resenc_gflop
    cited_ts = TOTALSEG_CITED["seconds"] * (
        _voxels_at(cpu["volume"]["shape_zyx"], cpu["volume"]["spacing_mm"], 1.5)
        / _voxels_at(TOTALSEG_CITED["shape_zyx"], TOTALSEG_CITED["spacing_mm"], 1.5))
    # this 2-core shared CPU is slow at the non-network part; the cited TotalSegmentator run (everything, on a
    # workstation) bounds it: scale every labeler's non-network part by the same factor for the expected figure
    workstation = min(1.0, cited_ts / labs["totalseg"]["non_network_s"])
    rows = {}
    for name, key, mode in (("totalseg", "totalseg", "no TTA (NoMirroring trainer)"),
                            ("airway", "nnunet", "mirroring TTA (configured default)"),
                            ("vessels", "nnunet", "mirroring TTA (configured default)"),
                            ("airway, vessels with mirroring: false", "nnunet", "mirroring: false")):
        lab = labs[key]
        passes = lab["tta_passes"][mode]
        tile_gpu = lab["forward"]["real"]["gflop"] * s_per_gflop
        gpu_s = lab["non_network_s"] + lab["tiles"] * passes * tile_gpu
        expected = lab["non_network_s"] * workstation + lab["tiles"] * passes * tile_gpu
        rows[name] = {"tta": mode, "models": lab["models"], "tiles": lab["tiles"], "passes": passes,
                      "cpu_s": lab["cpu_s_per_volume"][mode], "gpu_s": round(gpu_s, 1),
                      "gpu_s_expected": round(expected, 1),
                      "gpu_network_s": round(lab["tiles"] * passes * tile_gpu, 1), "non_network_s": lab["non_network_s"],
                      "tile_gpu_s": round(tile_gpu, 4), "peak_rss_gb": lab["peak_rss_gb"]["full_volume_estimate"],
                      "gpu": True}
    rows["totalseg"]["cited_gpu_s"] = round(cited_ts, 1)
    classical = next(r for r in cpu["phases"] if r["phase"] == "classical")
    rows["classical"] = {"tta": "-", "cpu_s": classical["seconds"], "gpu_s": None, "peak_rss_gb": classical["peak_rss_gb"],
                         "gpu": False}
    totals = {}
    for cases_name, n in CASES.items():
        jobs = math.ceil(n / shard_size)
        per = {}
        for name, r in rows.items():
            kind = "gpu" if r["gpu"] else "cpu"
            job_s = shard_size * (r["gpu_s"] if r["gpu"] else r["cpu_s"])
            exp_s = shard_size * r["gpu_s_expected"] if r["gpu"] else job_s
            per[name] = {"cpu_core_h": round(n * r["cpu_s"] * threads / 3600, 1),
                         "gpu_h": round(n * r["gpu_s"] / 3600, 1) if r["gpu"] else None,
                         "gpu_h_expected": round(n * r["gpu_s_expected"] / 3600, 1) if r["gpu"] else None,
                         "jobs": jobs, "job_min": round(job_s / 60, 1), "job_min_expected": round(exp_s / 60, 1),
                         "fits_rule_runtime": job_s / 60 <= RULE[kind]["runtime_min"],
                         "expected_fits_rule_runtime": exp_s / 60 <= RULE[kind]["runtime_min"]}
        sources = ("totalseg", "airway", "vessels")
        per["configured sources (totalseg + airway + vessels)"] = {
            "gpu_h": round(sum(per[s]["gpu_h"] for s in sources), 1),
            "gpu_h_expected": round(sum(per[s]["gpu_h_expected"] for s in sources), 1),
            "cpu_core_h": round(sum(per[s]["cpu_core_h"] for s in sources), 1), "jobs": 3 * jobs}
        totals[cases_name] = {"volumes": n, "shards": jobs, "labelers": per}
    return {
        "per_volume": rows, "totals": totals, "shard_size": shard_size, "rule_resources": RULE,
        "volume": cpu["volume"], "cpu_threads": threads, "h200_s_per_forward_gflop": s_per_gflop, "workstation_factor": workstation,
        "assumptions": [
            "CPU seconds: measured on this machine through uvlm.pseudolabel's labelers (random weights, real "
            "architecture; inference cost does not depend on weight values): non-network part on the full volume "
            "+ tiles x passes x one measured forward (pseudolabel_bench.py)",
            "architectures: nnU-Net's default planner for the model spacing (weights' plans.json unreachable); "
            "TotalSegmentator total: 5 models, 1.5 mm, tile step 0.8, no mirroring; airway/vessels: one fold, "
            "planned at the volume's grid (1.0 x 0.7 x 0.7 mm), tile step 0.5, mirroring as configured (8 passes)",
            "GPU network time: forward FLOPs x H200 seconds per forward GFLOP from the Stage 1 step "
            f"({s1['step_s']} s for {s1['batch']} patches {s1['patch']}, forward = 1/3 of a training step)",
            "GPU non-network time: the CPU-side part measured here (resampling, export; 2 shared cores, load 4-6), "
            f"an upper bound; 'expected' scales it by {workstation:.3f} = cited TotalSegmentator total / its "
            "non-network part here",
            "TotalSegmentator cited: 105 s on an RTX 3090 for 512x512x807 at 0.82x0.82x1.0 mm (runtime.md, "
            "TotalSegmentator 3.0.0 measurements), scaled by voxels at 1.5 mm",
            "CPU core-hours = seconds x threads used here; mirroring TTA = 8 forward passes (nnU-Net issues "
            "#258, #1867)"],
        "sources": SOURCES,
    }


def markdown(p: dict) -> str:
    v = p["volume"]
    lines = [f"# Pseudo-label plan (volume {v['shape_zyx'][2]}x{v['shape_zyx'][1]}x{v['shape_zyx'][0]} at "
             f"{v['spacing_mm'][2]}x{v['spacing_mm'][1]}x{v['spacing_mm'][0]} mm; shards of {p['shard_size']})", "",
             "| labeler | TTA | tiles | CPU s/vol (measured, "
             f"{p['cpu_threads']} threads) | GPU s/vol, H200 est.: upper (network) | expected | cited (RTX 3090) "
             "| peak RAM GB |", "|---|---|---|---|---|---|---|---|"]
    for name, r in p["per_volume"].items():
        gpu = "-" if r["gpu_s"] is None else f"{r['gpu_s']} ({r['gpu_network_s']})"
        lines.append(f"| {name} | {r['tta']} | {r.get('tiles', '-')} | {r['cpu_s']} | {gpu} | "
                     f"{r.get('gpu_s_expected', '-')} | {r.get('cited_gpu_s', '-')} | {r['peak_rss_gb']} |")
    for cases, t in p["totals"].items():
        lines += ["", f"## {cases}: {t['volumes']} volumes, {t['shards']} shards per labeler", "",
                  "| labeler | GPU hours (H200): expected / upper | CPU core-hours (CPU only) | jobs | "
                  "minutes per job: expected / upper | within the rule's runtime: expected / upper |",
                  "|---|---|---|---|---|---|"]
        for name, r in t["labelers"].items():
            gpu = "-" if r.get("gpu_h") is None else f"{r['gpu_h_expected']} / {r['gpu_h']}"
            mins = f"{r['job_min_expected']} / {r['job_min']}" if "job_min" in r else "-"
            fits = f"{r['expected_fits_rule_runtime']} / {r['fits_rule_runtime']}" if "job_min" in r else "-"
            lines.append(f"| {name} | {gpu} | {r['cpu_core_h']} | {r['jobs']} | {mins} | {fits} |")
    lines += ["", "Assumptions:"] + [f"- {a}" for a in p["assumptions"]]
    lines += ["", "Sources:"] + [f"- {k}: {u}" for k, u in p["sources"].items()]
    return "\n".join(lines) + "\n"


def write_plan(cpu: dict, results: Path) -> str:
    """Write pseudolabel_plan.{json,md} into results; the H200 step time is the repository's measurement."""
    gpu = json.loads((REPO / "benchmarks" / "results" / "gpu_check_h200.json").read_text())
    shard_size = int(yaml.safe_load((REPO / "config" / "ct_rate.yaml").read_text())["shard_size"])
    p = plan(cpu, gpu, shard_size)
    (results / "pseudolabel_plan.json").write_text(json.dumps(p, indent=1))
    md = markdown(p)
    (results / "pseudolabel_plan.md").write_text(md)
    return md


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    a = ap.parse_args()
    print(write_plan(json.loads((Path(a.results) / "pseudolabel_cpu.json").read_text()), Path(a.results)))
