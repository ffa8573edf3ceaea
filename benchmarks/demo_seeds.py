"""Run the demo for several seeds and tabulate every row's F1 and BLEU-mean per seed.

Each seed (`--config seed=N`: other phantoms, labels, splits and initialisations) is a full
`snakemake --cores C all` in this checkout; its metrics, tables and per-rule benchmark files are copied to
benchmarks/results/demo_seeds/seed_N/ before the next seed overwrites results/. Then:

    benchmarks/results/demo_seeds.md    seed x row: F1 [95% CI], BLEU-mean; the claims' verdicts per seed

    python benchmarks/demo_seeds.py --seeds 1 2 3            # runs, then tabulates
    python benchmarks/demo_seeds.py --seeds 0 1 2 3 --no-run # tabulates runs already copied
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd

from uvlm.config import load_config
from uvlm.evaluation.claims import claim_lines
from uvlm.experiments import Plan

OUT = Path("benchmarks/results/demo_seeds")


def run_seed(seed: int, cores: int) -> float:
    """One full demo run for `seed`; copies what it measured to OUT/seed_N. Returns the wall seconds."""
    start = time.monotonic()
    subprocess.run(["snakemake", "--cores", str(cores), "all", "--config", f"seed={seed}"], check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.monotonic() - start
    dest = OUT / f"seed_{seed}"
    shutil.rmtree(dest, ignore_errors=True)
    for sub in ("metrics", "tables", "benchmarks"):
        shutil.copytree(Path("results") / sub, dest / sub)
    (dest / "run.json").write_text(json.dumps({"seed": seed, "wall_s": round(wall, 1), "cores": cores}))
    return wall


def table(seeds: list[int]) -> str:
    exps = list(Plan.from_config(load_config()).experiments)
    rows, claims = [], []
    for seed in seeds:
        folder = OUT / f"seed_{seed}"
        row = {"seed": seed, "wall (s)": json.loads((folder / "run.json").read_text())["wall_s"]}
        names = {"baseline_most_frequent": "Baseline", **{e.name: e.title for e in exps}}
        metrics = {name: json.loads((folder / "metrics" / "ct_rate" / f"{name}.json").read_text()) for name in names}
        for name, title in names.items():
            m = metrics[name]
            lo, hi = m["macro_f1_ci"]
            row[f"{title}: F1"] = f"{m['macro_f1']:.3f} [{lo:.3f}-{hi:.3f}]"
            row[f"{title}: B-mean"] = f"{m['bleu_mean']:.3f}"
        rows.append(row)
        claims += [f"- seed {seed}: {line}" for line in claim_lines(exps, metrics)]
    df = pd.DataFrame(rows).set_index("seed").T
    return ("# The demo over seeds\n\nEach column is one full `snakemake --cores 2 all --config seed=N` from the "
            "same checkout. F1: macro F1 with its 95% bootstrap interval over reports; B-mean: BLEU-mean.\n\n"
            + df.to_markdown() + "\n\n## Claims per seed\n\n" + "\n".join(claims) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", required=True)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--no-run", action="store_true", help="only tabulate runs already copied")
    a = ap.parse_args()
    if not a.no_run:
        for seed in a.seeds:
            print(f"seed {seed}: {run_seed(seed, a.cores):.0f} s", flush=True)
    text = table(a.seeds)
    (OUT.parent / "demo_seeds.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
