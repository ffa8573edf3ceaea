"""Classical labeler and label merge on a CT-RATE-sized volume (512 x 512 x 300): time and memory.

Each phase runs in its own process started from a small parent, so peak memory (ru_maxrss) belongs
to that phase alone:
  read      read the .nii.gz (the floor every per-volume step pays)
  classical read + classical labeler + write the label map
  merge     read + read the label map + 3 lesion channels -> C, CL, FL maps + write them
Times are reported as seconds and as a ratio to `read` measured in the same run.

    python benchmarks/pseudolabel_bench.py [--out benchmarks/results/pseudolabel_cpu.json]
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

REPO = Path(__file__).resolve().parent.parent
SHAPE = (300, 512, 512)  # (z, y, x)
SPACING = (1.0, 0.7, 0.7)


def make_volume(path: Path) -> None:
    """A demo phantom upsampled to the CT-RATE grid, with fresh noise (int16 HU, compressed NIfTI)."""
    from uvlm.demo.phantom import PatientAnatomy, PhantomConfig, make_reconstructions

    rng = np.random.default_rng(0)
    fov = np.asarray(SHAPE) * np.asarray(SPACING)
    cfg = PhantomConfig(shape=(75, 128, 128), spacing_mm=tuple(fov / np.array([75, 128, 128])))
    ph = make_reconstructions(rng, cfg, {"Lung nodule", "Emphysema"}, PatientAnatomy.sample(rng))[0]
    small = sitk.GetImageFromArray(ph.hu.astype(np.float32))
    small.SetSpacing(tuple(reversed(ph.spacing_mm)))
    ref = sitk.Image(SHAPE[2], SHAPE[1], SHAPE[0], sitk.sitkFloat32)
    ref.SetSpacing(tuple(reversed(SPACING)))
    big = sitk.Resample(small, ref, sitk.Transform(), sitk.sitkLinear, -1024.0)
    arr = sitk.GetArrayFromImage(big) + rng.normal(0, 15, SHAPE).astype(np.float32)
    out = sitk.GetImageFromArray(np.clip(arr, -1024, 3071).astype(np.int16))
    out.CopyInformation(ref)
    sitk.WriteImage(out, str(path), useCompression=True)
    lesions = np.zeros((3, *SHAPE[::-1]), np.uint8)  # (F, x, y, z) as ReXGroundingCT stores it
    lesions[0, 200:230, 200:230, 150:170] = 1
    lesions[1, 300:340, 250:300, 100:140] = 1
    lesions[2, 100:300, 150:350, 20:40] = 1
    np.savez_compressed(path.with_name("lesions.npz"), mask=lesions)


def phase(name: str, ct: Path) -> dict:
    """Run inside a child process: one phase, its wall time and the process's peak RSS."""
    from uvlm.io import read_image, write_image

    if name == "make":
        make_volume(ct)
        return {"phase": name}
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "pseudolabel_cpu.json"))
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
        for name in ("read", "classical", "merge"):
            done = subprocess.run([sys.executable, __file__, "--phase", name, "--ct", str(ct)], check=True,
                                  capture_output=True, text=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        file_mb = round(ct.stat().st_size / 2**20, 1)
    read = rows[0]["seconds"]
    for r in rows:
        r["ratio_to_read"] = round(r["seconds"] / read, 2)
    result = {"volume": {"shape_zyx": SHAPE, "spacing_mm": SPACING, "file_mb": file_mb},
              "machine": {"cpu": platform.processor() or platform.machine(), "threads": __import__("os").cpu_count()},
              "phases": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print("| phase | seconds | x read | peak RSS (GB) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['phase']} | {r['seconds']} | {r['ratio_to_read']} | {r['peak_rss_gb']} |")


if __name__ == "__main__":
    main()
