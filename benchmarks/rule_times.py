"""Per-rule time breakdown of a pipeline run, from Snakemake's benchmark files.

Every rule writes results/benchmarks/<rule>[/<wildcards>].tsv (wall seconds, memory). This sums them per
rule, names the slowest rules, and writes a Markdown table (and JSON) next to the run's wall time:

    python benchmarks/rule_times.py --benchmarks results/benchmarks --wall-s 612 \
        --out benchmarks/results/demo_rule_times.md

Job seconds add up to more than the wall time when jobs ran side by side (--cores 2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def rule_of(path: Path, root: Path) -> str:
    """results/benchmarks/stage3/none_rep.tsv -> stage3; results/benchmarks/ingest.tsv -> ingest."""
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def collect(root: Path) -> pd.DataFrame:
    """One row per job: rule, job (its file), wall seconds, max RSS (MB)."""
    rows = []
    for f in sorted(root.rglob("*.tsv")):
        t = pd.read_csv(f, sep="\t")
        rows.append({"rule": rule_of(f, root), "job": str(f.relative_to(root).with_suffix("")),
                     "s": float(t["s"].iloc[-1]), "max_rss_mb": float(pd.to_numeric(t["max_rss"], errors="coerce")
                                                                     .fillna(0).iloc[-1])})
    if not rows:
        raise SystemExit(f"no benchmark files under {root}")
    return pd.DataFrame(rows)


def per_rule(jobs: pd.DataFrame) -> pd.DataFrame:
    g = jobs.groupby("rule").agg(jobs=("s", "size"), total_s=("s", "sum"), slowest_job_s=("s", "max"),
                                 max_rss_mb=("max_rss_mb", "max")).sort_values("total_s", ascending=False)
    g["share"] = g["total_s"] / g["total_s"].sum()
    return g.reset_index()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmarks", default="results/benchmarks")
    ap.add_argument("--wall-s", type=float, default=None, help="the run's wall time, for the header")
    ap.add_argument("--machine", default="", help="what the run ran on, for the header")
    ap.add_argument("--out", default="benchmarks/results/demo_rule_times.md")
    a = ap.parse_args()
    jobs = collect(Path(a.benchmarks))
    table = per_rule(jobs)
    slowest = table["rule"].head(3).tolist()
    head = [f"# Demo run: time per rule ({a.machine})" if a.machine else "# Demo run: time per rule", ""]
    if a.wall_s:
        head.append(f"Wall time of `snakemake --cores 2 all`: {a.wall_s:.0f} s; job time summed over rules: "
                    f"{table['total_s'].sum():.0f} s (jobs run side by side).")
    head += [f"Slowest rules (summed job time): {', '.join(slowest)}.", ""]
    body = table.to_markdown(index=False, floatfmt=".2f")
    jobs_md = jobs.sort_values("s", ascending=False).head(12).to_markdown(index=False, floatfmt=".1f")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(head) + "\n" + body + "\n\nSlowest jobs:\n\n" + jobs_md + "\n")
    out.with_suffix(".json").write_text(json.dumps({"wall_s": a.wall_s, "machine": a.machine, "slowest_rules": slowest,
                                                    "rules": table.to_dict(orient="records")}, indent=1))
    print(out.read_text())


if __name__ == "__main__":
    main()
