"""Pseudo-labelers on a CT-RATE-sized volume (512 x 512 x 300 at 1.0 x 0.7 x 0.7 mm): time and memory
per volume on this CPU, and the plan for the paper's case lists (benchmarks/pseudolabel_plan.py).

Each phase runs in its own process started from a small parent, so peak memory (ru_maxrss) belongs
to that phase alone:
  read      read the .nii.gz (the floor every per-volume step pays)
  classical read + classical labeler + write the label map
  merge     read + read the label map + 3 lesion channels -> C, CL, FL maps + write them
  models    write random-weight model folders of the real architectures (pseudolabel_models.py)
  *_rest    TotalSegmentator task total (5 models, 1.5 mm) / an nnU-Net folder (airway, vessels) through
            uvlm.pseudolabel's labelers on the full volume, with a 4-feature network of the same patch and
            topology: everything but the network (resampling, tiles, Gaussian weighting, argmax, export)
  *_tile    the same labelers with the real architecture on a crop that is one tile per model
  forward   one forward pass of each real architecture on one tile (seconds, FLOPs, memory)
A full-volume run with the real networks would take hours on 2 cores (tiles x seconds per tile), so
per-volume cost = rest - tiles x tiny forward + tiles x TTA passes x real forward; the *_tile runs check
that the real path costs what this sum says. Random weights cost the same compute as trained ones.

    python benchmarks/pseudolabel_bench.py [--quick] [--out benchmarks/results/pseudolabel_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from ct_phantom import SHAPE, SPACING  # 512 x 512 x 300 at 1.0 x 0.7 x 0.7 mm

REPO = Path(__file__).resolve().parent.parent
TS_SPACING = (1.5, 1.5, 1.5)  # TotalSegmentator task total (not fast) resamples to this before its 5 models
TS_STEP, NN_STEP = 0.8, 0.5   # tile steps: TotalSegmentator's for task total; NnunetLabeler's (nnU-Net's default)
NN_FOLDER = "Dataset901_Airway/nnUNetTrainer__nnUNetPlans__3d_fullres"
MODEL_PHASES = ("models", "forward_totalseg", "forward_nnunet", "totalseg_rest", "totalseg_tile", "nnunet_rest",
                "nnunet_tile")


def make_volume(path: Path) -> None:
    """A demo phantom upsampled to the CT-RATE grid, with fresh noise (int16 HU, compressed NIfTI)."""
    from ct_phantom import ct_rate_sized_hu

    arr, ref = ct_rate_sized_hu(-1024.0)
    out = sitk.GetImageFromArray(np.clip(arr, -1024, 3071).astype(np.int16))
    out.CopyInformation(ref)
    sitk.WriteImage(out, str(path), useCompression=True)
    lesions = np.zeros((3, *SHAPE[::-1]), np.uint8)  # (F, x, y, z) as ReXGroundingCT stores it
    lesions[0, 200:230, 200:230, 150:170] = 1
    lesions[1, 300:340, 250:300, 100:140] = 1
    lesions[2, 100:300, 150:350, 20:40] = 1
    np.savez_compressed(path.with_name("lesions.npz"), mask=lesions)


def _peak_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def _crop(ct: Path, size_zyx: list[int], out: Path) -> None:
    """The centre of the volume, size_zyx voxels."""
    img = sitk.ReadImage(str(ct))
    size = [int(s) for s in reversed(size_zyx)]
    start = [(n - s) // 2 for n, s in zip(img.GetSize(), size, strict=True)]
    sitk.WriteImage(sitk.RegionOfInterest(img, size, start), str(out), useCompression=True)


def write_models(ct: Path) -> dict:
    """Model folders (real architecture and a 4-feature twin) and the one-tile crops, next to the volume."""
    import pseudolabel_models as pm

    tmp = ct.parent
    ts = pm.planned_config(TS_SPACING, tuple(pm.resampled_shape(SHAPE, SPACING, TS_SPACING)), 26)
    nn = pm.planned_config(SPACING, SHAPE, 2)
    for kind, cfg in (("real", ts), ("tiny", pm.tiny_config(ts))):
        for folder, labels in pm.totalseg_parts():
            pm.write_model_folder(tmp / f"ts_{kind}" / folder, labels, cfg, pm.TOTALSEG_TRAINER)
    for kind, cfg in (("real", nn), ("tiny", pm.tiny_config(nn))):
        pm.write_model_folder(tmp / f"nn_{kind}" / NN_FOLDER, {1: "airway"}, cfg, pm.NNUNET_TRAINER)
    (tmp / "configs.json").write_text(json.dumps({"totalseg": ts, "nnunet": nn}))
    # one tile per model: TotalSegmentator's 1.5 mm image of this crop is exactly its patch
    _crop(ct, [int(p * t / s) for p, t, s in zip(ts["patch_size"], TS_SPACING, SPACING, strict=True)], tmp / "ts_tile.nii.gz")
    _crop(ct, nn["patch_size"], tmp / "nn_tile.nii.gz")
    return {"phase": "models"}


def forward_cost(key: str, ct: Path) -> dict:
    """One forward pass over one tile of the real and the 4-feature network (best of 2, float32, inference mode)."""
    import pseudolabel_models as pm
    import torch

    cfg = json.loads((ct.parent / "configs.json").read_text())[key]
    out: dict = {"phase": f"forward_{key}", "patch": cfg["patch_size"]}
    for kind, c in (("real", cfg), ("tiny", pm.tiny_config(cfg))):
        net = pm.build_net(c, 27 if key == "totalseg" else 2).eval()
        before, times = _peak_gb(), []
        with torch.inference_mode():
            for _ in range(2):
                start = time.perf_counter()
                net(torch.zeros(1, 1, *c["patch_size"]))
                times.append(time.perf_counter() - start)
        out[kind] = {"seconds": round(min(times), 3), "gflop": round(pm.forward_flops(net, c["patch_size"]) / 1e9, 1),
                     "params_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
                     "peak_rss_increase_gb": round(_peak_gb() - before, 2), "threads": torch.get_num_threads()}
    if key == "totalseg":
        flops, patch = pm.stage1_resenc_flops(REPO / "config" / "ct_rate.yaml")
        out["stage1_resenc"] = {"patch": patch, "gflop": round(flops / 1e9, 1)}
    return out


def run_labeler(name: str, ct: Path) -> dict:
    """One labeler through uvlm.pseudolabel.run.build_labeler, as a shard job runs it (CPU, no mirroring TTA)."""
    from uvlm.io import read_image
    from uvlm.pseudolabel.run import build_labeler

    tmp, kind = ct.parent, "real" if name.endswith("_tile") else "tiny"
    if name.startswith("totalseg"):
        spec = {"backend": "totalsegmentator", "task": "total", "fast": False, "weights_dir": str(tmp / f"ts_{kind}")}
        src = tmp / "ts_tile.nii.gz" if kind == "real" else ct
    else:
        spec = {"backend": "nnunet", "model_dir": str(tmp / f"nn_{kind}" / NN_FOLDER), "folds": [0], "mirroring": False}
        src = tmp / "nn_tile.nii.gz" if kind == "real" else ct
    start = time.perf_counter()
    labeler = build_labeler(spec, "cpu", 1, tmp / f"home_{name}")
    load = time.perf_counter() - start
    image = read_image(src, "bench")
    (tmp / name).mkdir()
    start = time.perf_counter()
    out = labeler.write("bench", str(src), image, tmp / name)
    seconds = time.perf_counter() - start
    assert read_image(out, "bench").GetSize() == image.GetSize()  # back on the input grid
    return {"phase": name, "seconds": round(seconds, 2), "load_s": round(load, 2), "input_zyx": image.GetSize()[::-1],
            "peak_rss_gb": _peak_gb()}


def phase(name: str, ct: Path) -> dict:
    """Run inside a child process: one phase, its wall time and the process's peak RSS."""
    from uvlm.io import read_image, write_image

    if name == "make":
        make_volume(ct)
        return {"phase": name}
    if name == "models":
        return write_models(ct)
    if name.startswith("forward_"):
        return forward_cost(name.removeprefix("forward_"), ct)
    if name in MODEL_PHASES:
        return run_labeler(name, ct)
    start = time.perf_counter()
    img = read_image(ct, "bench")
    if name == "classical":
        from uvlm.pseudolabel.classical import label_image

        write_image(label_image(img), ct.with_name("classical.nii.gz"))
    elif name == "merge":
        from uvlm.labels.label_map import load_label_map
        from uvlm.labels.merge import AnatomySource, merge_labels
        from uvlm.labels.rexgrounding import read_lesions
        from uvlm.pseudolabel.classical import CLASSES

        anatomy = sitk.GetArrayFromImage(read_image(ct.with_name("classical.nii.gz"), "bench"))
        lesions = read_lesions(ct.with_name("lesions.npz"), ["2d", "2b", "1c"], img, "bench")
        for gran in ("C", "CL", "FL"):
            lm = load_label_map(REPO / "config" / "labels" / "chest.yaml", gran)
            merged = merge_labels([AnatomySource("classical", anatomy, CLASSES)], lesions, ["2d", "2b", "1c"], lm)
            out = sitk.GetImageFromArray(merged)
            out.CopyInformation(img)
            write_image(out, ct.with_name(f"merged_{gran}.nii.gz"))
    seconds = time.perf_counter() - start
    return {"phase": name, "seconds": round(seconds, 2),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def labeler_costs(by: dict[str, dict], configs: dict) -> dict:
    """CPU seconds per volume of each model labeler, from the measured parts (see the module docstring)."""
    import pseudolabel_models as pm

    out = {}
    for key, step, spacing, models, passes in (
            ("totalseg", TS_STEP, TS_SPACING, 5, {"no TTA (NoMirroring trainer)": 1}),
            ("nnunet", NN_STEP, SPACING, 1, {"mirroring TTA (configured default)": 8, "mirroring: false": 1})):
        cfg, fw, rest, tile = configs[key], by[f"forward_{key}"], by[f"{key}_rest"], by[f"{key}_tile"]
        image = pm.resampled_shape(SHAPE, SPACING, spacing)
        tiles = pm.n_tiles(image, cfg["patch_size"], step) * models
        non_net = rest["seconds"] - tiles * fw["tiny"]["seconds"]
        kw = cfg["architecture"]["arch_kwargs"]
        out[key] = {
            "models": models, "spacing_mm": list(spacing), "patch": cfg["patch_size"], "tile_step": step,
            "features_per_stage": kw["features_per_stage"], "strides": kw["strides"],
            "image_at_model_spacing": image, "tiles": tiles, "forward": fw, "load_s": rest["load_s"],
            "rest_s": rest["seconds"], "non_network_s": round(non_net, 1),
            "peak_rss_gb": {"rest_full_volume": rest["peak_rss_gb"], "one_tile_run": tile["peak_rss_gb"],
                            "full_volume_estimate": round(rest["peak_rss_gb"] + fw["real"]["peak_rss_increase_gb"], 2)},
            "tile_check": {"measured_s": tile["seconds"], "tiles_x_forward_s": round(models * fw["real"]["seconds"], 1)},
            "cpu_s_per_volume": {k: round(non_net + tiles * m * fw["real"]["seconds"], 1) for k, m in passes.items()},
            "tta_passes": passes}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "pseudolabel_cpu.json"))
    ap.add_argument("--quick", action="store_true", help="only read / classical / merge (no model labelers)")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--ct", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.phase:
        print(json.dumps(phase(a.phase, Path(a.ct))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        ct = Path(tmp) / "ct.nii.gz"
        # every phase in a fresh process: Linux keeps a process's peak RSS across fork and exec, so the
        # parent must stay small (the volume is made in a child too)
        subprocess.run([sys.executable, __file__, "--phase", "make", "--ct", str(ct)], check=True)
        rows = []
        for name in ("read", "classical", "merge") + (() if a.quick else MODEL_PHASES):
            done = subprocess.run([sys.executable, __file__, "--phase", name, "--ct", str(ct)], check=True,
                                  capture_output=True, text=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
        file_mb = round(ct.stat().st_size / 2**20, 1)
        configs = None if a.quick else json.loads((Path(tmp) / "configs.json").read_text())
    read = rows[0]["seconds"]
    for r in rows:
        if "seconds" in r:
            r["ratio_to_read"] = round(r["seconds"] / read, 2)
    result = {"volume": {"shape_zyx": SHAPE, "spacing_mm": SPACING, "file_mb": file_mb},
              "machine": {"cpu": platform.processor() or platform.machine(), "threads": __import__("os").cpu_count()},
              "phases": rows}
    if configs:
        result["labelers"] = labeler_costs({r["phase"]: r for r in rows}, configs)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print("| phase | seconds | x read | peak RSS (GB) |\n|---|---|---|---|")
    for r in rows:
        if "seconds" in r:
            print(f"| {r['phase']} | {r['seconds']} | {r['ratio_to_read']} | {r['peak_rss_gb']} |")
    if configs:
        from pseudolabel_plan import write_plan

        print(write_plan(result, Path(a.out).parent))


if __name__ == "__main__":
    main()
