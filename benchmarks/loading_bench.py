"""Can the data loading of Stages 2 and 3 keep one GPU busy at paper scale (192 x 256 x 256)?

Writes a few float16 .npy volumes of the paper's grid, then measures, each in its own single-threaded
process (one loader worker's view), volumes per second of:
  load            VolumeDataset item (np.load + float16 -> float32), page cache warm
  load_cold       the same after fsync + posix_fadvise(DONTNEED) of the file (a read from the disk,
                  as for a dataset larger than RAM; what this VM's disk gives, not a cluster's)
  read_cold       the file's bytes alone after dropping it from the page cache (the disk's MB/s)
  load_collate    items + collate at batch 2 (what Stage 3 and, augmenting on the GPU, Stage 2 need)
  load_augment    load_collate + Stage 2 augment() on the CPU (the old in-process path)
  augment_op      augment() alone on a loaded batch: its cost on the CPU (on the GPU it is applied now)
  prefetch_1      uvlm.data.prefetch.Prefetched with 1 worker process, seen from the training process
                  (load + collate + the transfer of the float32 batch between processes)
  authors_da      the authors' nnU-Net augmentation (enable_nnunet_augmentation), estimated: each
                  batchgenerators op approximated with scipy on one volume, times its probability
Each measurement but authors_da runs `--rounds` times, interleaved; the fastest round counts (the
machine is shared: the slower rounds measure the neighbours). With the paper-scale GPU step times of benchmarks/results/gpu_check_h200.json (batch 2) it gives the
volumes/s one GPU consumes per stage and the workers it needs: ceil(consumption / per-worker rate).

    python benchmarks/loading_bench.py [--volumes 4] [--rounds 3] [--out benchmarks/results/loading_cpu]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GRID = (192, 256, 256)
BATCH = 2
GPU_JSON = REPO / "benchmarks" / "results" / "gpu_check_h200.json"
# stage -> (gpu_check_h200 entry, the measurement whose rate one worker delivers, note)
STAGES = {
    "stage2_finetuned": ("stage2_finetuned", "prefetch_1", "augmentation on the GPU (as wired now)"),
    "stage2_finetuned_cpu_augment": ("stage2_finetuned", "load_augment", "augmentation on the CPU (before)"),
    "stage3_finetuned": ("stage3_finetuned", "prefetch_1", "no augmentation"),
    "stage3_frozen_uncached": ("stage3_frozen", "prefetch_1", "only when the feature cache does not fit"),
    "stage2_authors_augmentation": ("stage2_finetuned", "authors_da", "the authors' nnU-Net augmentation (est.)"),
}


def dataset(folder: Path, n: int):
    import numpy as np
    import pandas as pd

    from uvlm.constants import CT_RATE_LABELS
    from uvlm.data.manifest import with_label_set
    from uvlm.data.volumes import VolumeDataset

    rows = [{"volume_name": f"train_{i}_a_1", "array_path": str(folder / f"v{i}.npy"), "report_text": "",
             **{c: 0 for c in CT_RATE_LABELS}} for i in range(n)]
    for r in rows:
        if not Path(r["array_path"]).is_file():
            rng = np.random.default_rng(len(r["array_path"]))
            np.save(r["array_path"], rng.standard_normal(GRID, dtype=np.float32).astype(np.float16))
    return VolumeDataset(with_label_set(pd.DataFrame(rows), "ct_rate", CT_RATE_LABELS))


def drop_cache(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed(fn, reps: int) -> float:
    """Seconds per call, after one untimed call (warm page cache and allocator)."""
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def low_resolution(x, zoom: float):
    """SimulateLowResolutionTransform: down (nearest), back up (cubic)."""
    import numpy as np
    from scipy import ndimage

    small = ndimage.zoom(x, zoom, order=0)
    return ndimage.zoom(small, np.array(x.shape) / np.array(small.shape), order=3)


def authors_da_seconds(vol) -> dict:
    """Expected seconds per volume of the authors' training transforms (nnUNetTrainer_UVLM.get_training_transforms,
    enable_nnunet_augmentation: true in their chest cls/report plans), each op approximated with scipy on one
    (D, H, W) float32 volume and weighted by its probability per sample."""
    import numpy as np
    from scipy import ndimage

    rng = np.random.default_rng(0)
    x = vol.astype(np.float32)
    c = (np.array(GRID) - 1) / 2
    a = math.radians(20)
    rot = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]]) / 1.1
    ops = {  # name: (probability per sample, op)
        # SpatialTransform: rotation p 0.2, scale p 0.2 -> resampled (order 3) with probability 1 - 0.8 * 0.8
        "spatial_order3": (0.36, lambda: ndimage.affine_transform(x, rot, offset=c - rot @ c, order=3)),
        "gaussian_noise": (0.1, lambda: x + rng.normal(0, 0.1, x.shape).astype(np.float32)),
        "gaussian_blur": (0.2 * 0.5, lambda: ndimage.gaussian_filter(x, 0.75)),
        "brightness": (0.15, lambda: x * np.float32(1.1)),
        "contrast": (0.15, lambda: (x - x.mean()) * np.float32(1.2) + x.mean()),
        "low_resolution": (0.25 * 0.5, lambda: low_resolution(x, 0.7)),
        "gamma_x2": (0.1 + 0.3, lambda: np.power((x - x.min()) / (np.ptp(x) + 1e-7), 1.2) * np.ptp(x) + x.min()),
        "mirror_2_axes": (1.0, lambda: np.ascontiguousarray(x[::-1, ::-1])),
    }
    out = {}
    for name, (p, op) in ops.items():
        t = time.perf_counter()
        op()
        s = time.perf_counter() - t
        out[name] = {"p": p, "seconds": round(s, 3)}
    out["expected_seconds"] = round(sum(v["p"] * v["seconds"] for v in out.values()), 3)
    return out


def run_case(case: str, folder: Path, n: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from uvlm.data.prefetch import Prefetched
    from uvlm.data.volumes import collate
    from uvlm.train.stage2 import augment

    data = dataset(folder, n)
    gen = torch.Generator().manual_seed(0)
    pairs = [[i, (i + 1) % n] for i in range(0, n, 2)]
    if case == "load":
        s = timed(lambda: [data[i] for i in range(n)], 2) / n
    elif case == "load_cold":
        def cold() -> None:
            for i in range(n):
                drop_cache(data.paths[i])
                data[i]
        s = timed(cold, 2) / n
    elif case == "read_cold":
        def read() -> None:
            for i in range(n):
                drop_cache(data.paths[i])
                Path(data.paths[i]).read_bytes()
        s = timed(read, 2) / n
        return {"seconds_per_volume": round(s, 4), "volumes_per_s": round(1 / s, 2),
                "mb_per_s": round(os.path.getsize(data.paths[0]) / 2**20 / s)}
    elif case == "load_collate":
        s = timed(lambda: [collate([data[i] for i in p]) for p in pairs], 2) / (BATCH * len(pairs))
    elif case == "load_augment":
        s = timed(lambda: [augment(collate([data[i] for i in p])["image"], gen) for p in pairs], 2) / (
            BATCH * len(pairs))
    elif case == "augment_op":
        images = collate([data[i] for i in pairs[0]])["image"]
        s = timed(lambda: augment(images, gen), 3) / BATCH
    elif case == "prefetch_1":
        reps = 3 * len(pairs)
        loader = Prefetched(data, iter(pairs * (reps + 2)), workers=1, depth=2)
        with loader:
            loader.get(next(loader))  # start the worker
            t = time.perf_counter()
            for _ in range(reps):
                loader.get(next(loader))
            s = (time.perf_counter() - t) / (BATCH * reps)
    elif case == "authors_da":
        detail = authors_da_seconds(np.load(data.paths[0]))
        s = timed(lambda: data[0], 2) + detail["expected_seconds"]
        return {"seconds_per_volume": round(s, 4), "volumes_per_s": round(1 / s, 2), "ops": detail}
    else:
        raise ValueError(case)
    return {"seconds_per_volume": round(s, 4), "volumes_per_s": round(1 / s, 2)}


CASES = ("load", "load_cold", "read_cold", "load_collate", "load_augment", "augment_op", "prefetch_1", "authors_da")


def summarise(cases: dict, gpu: dict) -> dict:
    steps = gpu["paper_scale_steps"]
    stages = {}
    for name, (entry, case, note) in STAGES.items():
        step_s, batch = steps[entry]["step_s"], steps[entry]["batch"]
        need = batch / step_s  # volumes/s the GPU trains on
        rate, cold = cases[case]["volumes_per_s"], cases["load_cold"]["volumes_per_s"]
        cold_rate = 1 / (1 / rate + 1 / cold - 1 / cases["load"]["volumes_per_s"])  # the read made cold
        stages[name] = {"gpu_step_s": step_s, "batch": batch, "gpu_volumes_per_s": round(need, 2),
                        "worker_measure": case, "worker_volumes_per_s": rate, "workers": math.ceil(need / rate),
                        "workers_cold_reads": math.ceil(need / cold_rate),
                        "in_process_step_s": round(step_s + batch / rate, 3),  # workers = 0: load, then train
                        "gpu_busy_in_process": round(step_s / (step_s + batch / rate), 2), "note": note}
    return stages


def markdown(result: dict) -> str:
    lines = ["# Data loading vs one GPU at paper scale (192x256x256, batch 2)", "",
             f"Machine: {result['machine']}; one process per measurement, 1 thread (one loader worker). "
             f"GPU step times: {GPU_JSON.name} ({result['gpu']}).", "",
             "| measurement | s / volume (fastest round) | volumes / s / worker | all rounds (s / volume) |",
             "|---|---|---|---|"]
    lines += [f"| {k} | {v['seconds_per_volume']} | {v['volumes_per_s']} | {v['rounds_s']} |"
              for k, v in result["cases"].items()]
    lines += ["", "| stage | GPU step s | GPU volumes/s | per-worker measure | volumes/s/worker | workers "
              "(page cache) | workers (cold reads) | step s with workers=0 | GPU busy with workers=0 |",
              "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {k} ({v['note']}) | {v['gpu_step_s']} | {v['gpu_volumes_per_s']} | {v['worker_measure']} | "
              f"{v['worker_volumes_per_s']} | {v['workers']} | {v['workers_cold_reads']} | {v['in_process_step_s']} | "
              f"{v['gpu_busy_in_process']} |" for k, v in result["stages"].items()]
    lines += ["", "Caveats: `load` reads from the page cache (volumes read before and still in RAM); `load_cold` "
              "drops each file from the cache first, so it measures this VM's disk, not a cluster's file system "
              f"(read_cold: {result['cases']['read_cold']['mb_per_s']} MB/s; a volume is {result['volume_mb']} MB). "
              "The 'cold' worker counts add that read time to the worker's rate. The CPU here is shared and noisy; "
              "the ratios within this run are what carries over.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volumes", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "loading_cpu"))
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    a = ap.parse_args()
    sys.path.insert(0, str(REPO))
    if a.case:  # one measurement, in this process
        print(json.dumps(run_case(a.case, Path(a.folder), a.volumes)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="loading_bench_") as tmp:
        dataset(Path(tmp), a.volumes)  # write the volumes once
        runs: dict[str, list[dict]] = {c: [] for c in CASES}
        for r in range(a.rounds):
            for case in CASES if r == 0 else [c for c in CASES if c != "authors_da"]:
                done = subprocess.run([sys.executable, __file__, "--case", case, "--folder", tmp, "--volumes",
                                       str(a.volumes)], env=env, capture_output=True, text=True, check=True)
                runs[case].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(case, runs[case][-1], flush=True)
        cases = {c: {**min(v, key=lambda x: x["seconds_per_volume"]),
                     "rounds_s": [x["seconds_per_volume"] for x in v]} for c, v in runs.items()}
    gpu = json.loads(GPU_JSON.read_text())
    import platform

    result = {"grid": list(GRID), "batch": BATCH, "volumes": a.volumes, "rounds": a.rounds,
              "volume_mb": round(math.prod(GRID) * 2 / 2**20, 1),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
              "gpu": gpu["device"]["name"], "cases": cases, "stages": summarise(cases, gpu)}
    Path(a.out + ".json").write_text(json.dumps(result, indent=1) + "\n")
    Path(a.out + ".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
