"""Per-rule time breakdown of a pipeline run, from Snakemake's benchmark files, and how busy the cores were.

Every rule writes results/benchmarks/<rule>[/<wildcards>].tsv (wall seconds, memory). This sums them per
rule, names the slowest rules, and writes a Markdown table (and JSON) next to the run's wall time:

    python benchmarks/rule_times.py --benchmarks results/benchmarks --wall-s 612 \
        --log .snakemake/log/<run>.snakemake.log --out benchmarks/results/demo_rule_times.md

Job seconds add up to more than the wall time when jobs ran side by side (--cores 2). With --log (the
run's Snakemake log) it also reports the timeline: seconds with 0, 1, 2, ... jobs running (a core idles
while fewer jobs than cores run), the lower bound job time / cores, and a Gantt chart (<out>.png).
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime
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


STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$")
RULE = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+)")


def timeline(log: Path) -> pd.DataFrame:
    """One row per finished job of a Snakemake log: rule, jobid, start_s, end_s (from the run's first job)."""
    now, rule, start, jobs = None, None, {}, []
    for line in log.read_text().splitlines():
        if m := STAMP.match(line):
            now = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif m := RULE.match(line):
            rule = m.group(1)
        elif (m := JOBID.match(line)) and rule:
            start[m.group(1)], rule = (rule, now), None
        elif (m := FINISHED.match(line)) and m.group(1) in start:
            name, t0 = start[m.group(1)]
            jobs.append({"rule": name, "jobid": int(m.group(1)), "start": t0, "end": now})
    df = pd.DataFrame(jobs)
    first = df["start"].min()
    df["start_s"] = (df["start"] - first).dt.total_seconds()
    df["end_s"] = (df["end"] - first).dt.total_seconds()
    return df.drop(columns=["start", "end"]).sort_values("start_s").reset_index(drop=True)


def concurrency(tl: pd.DataFrame, cores: int) -> dict:
    """Seconds of the run with k jobs running (1 s resolution, as the log's stamps), and the idle core-seconds."""
    wall = int(tl["end_s"].max())
    running = [0] * wall
    for start, end in zip(tl["start_s"].astype(int), tl["end_s"].astype(int), strict=True):
        for t in range(start, end):
            running[t] += 1
    seconds = {k: sum(1 for r in running if min(r, cores) == k) for k in range(cores + 1)}
    idle = sum(max(cores - r, 0) for r in running)
    return {"wall_s": wall, "seconds_with_k_jobs": seconds, "idle_core_s": idle,
            "idle_share": idle / max(wall * cores, 1)}


def gantt(tl: pd.DataFrame, path: Path) -> None:
    """The jobs over time, one row per job, long jobs labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = list(dict.fromkeys(tl["rule"]))
    colors = {r: plt.get_cmap("tab20")(i % 20) for i, r in enumerate(rules)}
    fig, ax = plt.subplots(figsize=(10, 0.18 * len(tl) + 1.2))
    for i, r in tl.iterrows():
        ax.barh(i, r["end_s"] - r["start_s"], left=r["start_s"], color=colors[r["rule"]], height=0.8)
        if r["end_s"] - r["start_s"] > 0.04 * tl["end_s"].max():
            ax.text(r["start_s"] + 2, i, r["rule"], va="center", fontsize=6)
    ax.invert_yaxis()
    ax.set_yticks([])
    ax.set_xlabel("seconds since the first job")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmarks", default="results/benchmarks")
    ap.add_argument("--wall-s", type=float, default=None, help="the run's wall time, for the header")
    ap.add_argument("--machine", default="", help="what the run ran on, for the header")
    ap.add_argument("--log", default="", help="the run's Snakemake log, for the timeline")
    ap.add_argument("--cores", type=int, default=2)
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
    busy = {}
    if a.log:
        tl = timeline(Path(a.log))
        busy = concurrency(tl, a.cores)
        gantt(tl, Path(a.out).with_suffix(".png"))
        head += [f"Timeline (from the Snakemake log, {busy['wall_s']} s from the first job's start to the last's "
                 f"end): seconds with k jobs running {busy['seconds_with_k_jobs']}; idle core-seconds "
                 f"{busy['idle_core_s']} ({100 * busy['idle_share']:.1f}% of {a.cores} cores); lower bound job time / "
                 f"cores {table['total_s'].sum() / a.cores:.0f} s. Gantt chart: "
                 f"{Path(a.out).with_suffix('.png').name}.", ""]
    body = table.to_markdown(index=False, floatfmt=".2f")
    jobs_md = jobs.sort_values("s", ascending=False).head(12).to_markdown(index=False, floatfmt=".1f")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(head) + "\n" + body + "\n\nSlowest jobs:\n\n" + jobs_md + "\n")
    out.with_suffix(".json").write_text(json.dumps({"wall_s": a.wall_s, "machine": a.machine, "slowest_rules": slowest,
                                                    "timeline": busy, "rules": table.to_dict(orient="records")},
                                                   indent=1))
    print(out.read_text())


if __name__ == "__main__":
    main()
