"""Whole-volume preprocessing of a CT-RATE-sized volume (512 x 512 x 300 int16 .nii.gz -> 192 x 256 x 256):
time, peak memory and output quality, against decoding the file alone.

Each measurement runs in a fresh process started from a small parent (peak RSS is per process), three
times; the median is reported, and each as a ratio to `decode` measured in the same run:
  decode          SimpleITK reads the file (the floor every per-volume step pays)
  read_image      uvlm.io.read_image: decode plus its separate gzip CRC pass (context)
  area            preprocess_volume, method "area" (the default: exact area average, one pass)
  gaussian        preprocess_volume, method "gaussian" (the earlier path)
  authors         nibabel get_fdata (float64) + scipy.ndimage.zoom order 1, clip, z-score (if installed)
Quality, in HU after clipping (before z-scoring): area vs gaussian, and each vs an exact area average
computed here in float64 by a different method (2 x 2 block means in-plane, the difference of the
linearly interpolated cumulative sum along z). A shard of 4 volumes is timed with 1 and 2 workers.

    python benchmarks/preprocess_bench.py [--out benchmarks/results/preprocess_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ct_phantom import SHAPE, SPACING  # 512 x 512 x 300 at 1.0 x 0.7 x 0.7 mm

REPO = Path(__file__).resolve().parent.parent
GRID = (192, 256, 256)
HU_WINDOW = (-1000.0, 1000.0)
PADDING, INTERCEPT = -2000, -1024.0  # stored raw values (HU + 1024); -2000 outside the scanner's circle
METHODS = ("decode", "read_image", "area", "gaussian", "authors")


def make_volume(path: Path) -> None:
    """A demo phantom upsampled to the CT-RATE grid with fresh noise, stored raw (HU + 1024, int16) with
    -2000 padding outside the circular field of view (compressed NIfTI)."""
    import SimpleITK as sitk
    from ct_phantom import ct_rate_sized_hu

    arr, ref = ct_rate_sized_hu(-1000.0)
    raw = np.clip(arr, -1024, 3071) - INTERCEPT
    _, yy, xx = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    raw = np.where((yy - 255.5) ** 2 + (xx - 255.5) ** 2 < 256**2, raw, PADDING)
    out = sitk.GetImageFromArray(np.round(raw).astype(np.int16))
    out.CopyInformation(ref)
    sitk.WriteImage(out, str(path), useCompression=True)


def run_method(name: str, ct: Path) -> np.ndarray | None:
    """One method on the volume -> its z-scored output (None for the decode baselines)."""
    import SimpleITK as sitk

    if name == "decode":
        sitk.ReadImage(str(ct))
        return None
    if name == "read_image":
        from uvlm.io import read_image

        read_image(ct, "bench")
        return None
    if name == "authors":
        import nibabel as nib
        from scipy.ndimage import zoom

        vol = nib.load(str(ct)).get_fdata()  # (x, y, z) float64
        vol += INTERCEPT
        np.clip(vol, *HU_WINDOW, out=vol)  # the padding (-3024 HU) is clipped to -1000 with the rest
        vol = zoom(vol, np.array(GRID[::-1]) / np.array(vol.shape), order=1)
        return ((vol - vol.mean()) / vol.std()).astype(np.float16)
    from uvlm.preprocess.volume import preprocess_volume

    return preprocess_volume(str(ct), GRID, HU_WINDOW, "LPS", INTERCEPT, 1.0, "bench", method=name)[0]


def timed(name: str, ct: Path) -> dict:
    """Inside a child: one method's wall and CPU time (imports excluded) on the process's first volume and
    on its second (a shard's steady state: memory and code already warm), and the process's peak RSS."""
    import SimpleITK  # noqa: F401  (imports are not the method's time)

    if name == "authors":
        import nibabel  # noqa: F401
        import scipy.ndimage  # noqa: F401
    elif name != "decode":
        import uvlm.preprocess.volume  # noqa: F401
    out = {}
    for volume in ("first", "second"):
        start, cpu = time.perf_counter(), time.process_time()
        run_method(name, ct)
        out[volume] = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}
    return {**out, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def exact_area_hu(ct: Path) -> np.ndarray:
    """The exact area average of the volume's HU in float64, computed independently of uvlm: padding -> air,
    2 x 2 block means in-plane, and along z the difference of the cumulative sum interpolated linearly at
    the output voxels' edges (the integral of the piecewise-constant slices)."""
    import SimpleITK as sitk

    img = sitk.ReadImage(str(ct))
    raw = sitk.GetArrayViewFromImage(img)  # a view: valid while img lives
    planes = np.empty((SHAPE[0], GRID[1], GRID[2]))
    for z in range(SHAPE[0]):
        hu = np.where(raw[z] == PADDING, -1000.0, raw[z] + INTERCEPT)
        planes[z] = hu.reshape(GRID[1], 2, GRID[2], 2).mean(axis=(1, 3))
    cum = np.concatenate([np.zeros((1, *GRID[1:])), np.cumsum(planes, axis=0)])  # integral at slice edges
    edges = np.arange(GRID[0] + 1) * SHAPE[0] / GRID[0]
    lo = np.minimum(np.floor(edges).astype(int), SHAPE[0] - 1)
    at = cum[lo] + (edges - lo)[:, None, None] * (cum[lo + 1] - cum[lo])
    return (at[1:] - at[:-1]) / (SHAPE[0] / GRID[0])


def quality(ct: Path) -> dict:
    """HU after clipping: area vs gaussian and every method vs the exact area average."""
    from uvlm.preprocess.volume import resample_hu

    exact = np.clip(exact_area_hu(ct), *HU_WINDOW)
    outs = {m: np.clip(resample_hu(str(ct), GRID, "LPS", INTERCEPT, 1.0, "bench", method=m)[0], *HU_WINDOW)
            .astype(np.float64) for m in ("area", "gaussian")}

    def diff(a: np.ndarray, b: np.ndarray) -> dict:
        d = np.abs(a - b)
        return {"mean_abs_hu": round(float(d.mean()), 4), "p99_abs_hu": round(float(np.percentile(d, 99)), 4),
                "max_abs_hu": round(float(d.max()), 4)}

    return {"area_vs_gaussian": diff(outs["area"], outs["gaussian"]), "area_vs_exact": diff(outs["area"], exact),
            "gaussian_vs_exact": diff(outs["gaussian"], exact)}


def shard(ct: Path, workers: int) -> dict:
    """Four volumes (the same file under four names) through preprocess_shard with `workers` processes."""
    import pandas as pd

    from uvlm.preprocess.volume import preprocess_shard

    rows = pd.DataFrame([{"volume_name": f"v{i}", "image_path": str(ct), "image_exists": True,
                          "rescale_intercept": INTERCEPT, "rescale_slope": 1.0} for i in range(4)])
    start = time.perf_counter()
    preprocess_shard(rows, ct.with_name(f"shard_{workers}"), GRID, HU_WINDOW, "LPS", workers=workers)
    return {"workers": workers, "volumes": 4, "seconds": round(time.perf_counter() - start, 2)}


def child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "preprocess_cpu.json"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--ct", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.phase:  # inside a child process
        ct = Path(a.ct)
        result = (make_volume(ct) or {} if a.phase == "make" else quality(ct) if a.phase == "quality"
                  else shard(ct, int(a.phase.split("_")[1])) if a.phase.startswith("shard_") else timed(a.phase, ct))
        print(json.dumps(result))
        return
    try:
        import nibabel  # noqa: F401
        import scipy  # noqa: F401
        methods, note = METHODS, ""
    except ImportError:
        methods, note = METHODS[:-1], "authors' approach skipped: nibabel or scipy not installed"
    with tempfile.TemporaryDirectory() as tmp:
        ct = Path(tmp) / "ct.nii.gz"
        child("--phase", "make", "--ct", str(ct))
        runs = {m: [] for m in methods}
        for _ in range(a.repeats):  # interleaved, so that a busy spell hits every method alike
            for m in methods:
                runs[m].append(child("--phase", m, "--ct", str(ct)))
        qual = child("--phase", "quality", "--ct", str(ct))
        shards = [child("--phase", f"shard_{w}", "--ct", str(ct)) for w in (1, 2)]
        file_mb = round(ct.stat().st_size / 2**20, 1)
    rows = []
    for m in methods:
        row = {"method": m}
        for volume in ("first", "second"):
            for key in ("seconds", "cpu_seconds"):
                row[f"{volume}_{key}"] = round(statistics.median(r[volume][key] for r in runs[m]), 2)
            row[f"{volume}_all_seconds"] = [round(r[volume]["seconds"], 2) for r in runs[m]]
        row["peak_rss_gb"] = round(statistics.median(r["peak_rss_gb"] for r in runs[m]), 3)
        rows.append(row)
    for r in rows:
        for key in ("first_seconds", "second_seconds", "second_cpu_seconds", "peak_rss_gb"):
            r[f"{key}_x_decode"] = round(r[key] / rows[0][key], 2)
    result = {"volume": {"shape_zyx": SHAPE, "spacing_mm": SPACING, "file_mb": file_mb, "grid": GRID,
                         "stored": "raw int16, intercept -1024, padding -2000 outside the circular field of view"},
              "machine": {"cpu": platform.processor() or platform.machine(), "threads": os.cpu_count(),
                          "load_1min_at_end": os.getloadavg()[0]},
              "methods": rows, "quality_hu_after_clipping": qual, "shard": shards, "note": note}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    md = [f"Load average (1 min) at the end: {result['machine']['load_1min_at_end']:.1f} on {os.cpu_count()} cores.", "",
          "Seconds are medians of 3 fresh processes; x decode: the ratio to `decode` in the same column. First: the",
          "process's first volume (cold: memory and code paths untouched); second: its next volume (a shard's steady",
          "state).", "",
          "| method | first: wall s | x decode | second: wall s | x decode | second: CPU s | x decode | "
          "peak RSS (GB) | x decode |", "|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['method']} | {r['first_seconds']} | {r['first_seconds_x_decode']} | {r['second_seconds']} | "
           f"{r['second_seconds_x_decode']} | {r['second_cpu_seconds']} | {r['second_cpu_seconds_x_decode']} | "
           f"{r['peak_rss_gb']} | {r['peak_rss_gb_x_decode']} |" for r in rows]
    md += ["", "| HU after clipping | mean abs | 99th pct abs | max abs |", "|---|---|---|---|"]
    md += [f"| {k.replace('_', ' ')} | {v['mean_abs_hu']} | {v['p99_abs_hu']} | {v['max_abs_hu']} |"
           for k, v in qual.items()]
    md += ["", "| shard of 4 volumes | seconds |", "|---|---|"]
    md += [f"| {s['workers']} worker{'s' if s['workers'] > 1 else ''} | {s['seconds']} |" for s in shards]
    md += [f"\n{note}"] if note else []
    Path(a.out).with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
