"""One place that accounts for every volume: what each step received, accepted and rejected, and why.

rejected.csv lists (dataset, case, step, reason) for every volume a step rejected or left out; the
reconciliation table checks per step that volumes in = accepted + rejected, so that nothing valid is
dropped silently and nothing invalid slips through. The training-side steps (Stage 2, Stage 3, scoring)
are accounted from the same manifest flags their loaders filter on (uvlm.data.manifest.usable), not from
a second copy of the rule.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from uvlm.data.manifest import split_leaks, usable

REJECTED_COLUMNS = ["dataset", "case", "step", "reason"]


def _shard_errors(shard_dirs: list[str | Path]) -> pd.DataFrame:
    frames = [pd.read_csv(Path(d) / "errors.csv", keep_default_na=False) for d in shard_dirs]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["volume_name", "error"])


def _shard_index(shard_dirs: list[str | Path]) -> pd.DataFrame:
    frames = [pd.read_parquet(Path(d) / "index.parquet") for d in shard_dirs]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["volume_name"])


def reconcile(manifest: pd.DataFrame, unlisted: pd.DataFrame, stage1_cases: pd.DataFrame,
              preprocess_shards: list[str | Path], labeler_shards: dict[str, list[str | Path]],
              label_shards: list[str | Path], dataset: str = "ct_rate") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rejected rows, reconciliation table) for one CT-RATE-layout dataset."""
    rejected: list[dict] = []
    table: list[dict] = []

    def account(step: str, entering: set[str], accepted: set[str], reasons: dict[str, str]) -> None:
        rejected.extend({"dataset": dataset, "case": c, "step": step, "reason": r} for c, r in sorted(reasons.items()))
        lost = entering - accepted - set(reasons)
        invented = (accepted | set(reasons)) - entering
        table.append({"step": step, "in": len(entering), "accepted": len(accepted & entering),
                      "rejected": len(set(reasons) & entering), "unaccounted": len(lost) + len(invented),
                      "balanced": not lost and not invented and not (accepted & set(reasons))})

    listed = set(manifest["volume_name"])
    account("ingest", listed | set(unlisted["volume_name"]), listed,
            {r.volume_name: f"volume file without a report row: {r.file}" for r in unlisted.itertuples()})

    pre_index, pre_errors = _shard_index(preprocess_shards), _shard_errors(preprocess_shards)
    leaks = split_leaks(manifest, pre_index)
    account("preprocess", listed, set(pre_index["volume_name"]) - set(leaks["case"]),
            {**dict(zip(pre_errors["volume_name"], pre_errors["error"], strict=True)),
             **dict(zip(leaks["case"], leaks["reason"], strict=True))})

    cases = set(stage1_cases["volume_name"])
    for labeler, shards in labeler_shards.items():
        errors = _shard_errors(shards)
        account(f"pseudolabel {labeler}", cases, set(_shard_index(shards)["volume_name"]),
                dict(zip(errors["volume_name"], errors["error"], strict=True)))
    lab_errors = _shard_errors(label_shards)
    train_cases = set(stage1_cases.loc[stage1_cases["split"] == "train", "volume_name"])
    account("label maps", train_cases, set(_shard_index(label_shards)["volume_name"]),
            dict(zip(lab_errors["volume_name"], lab_errors["error"], strict=True)))

    ready = manifest[manifest["volume_name"].isin(set(pre_index["volume_name"]) - set(leaks["case"]))]
    for step, split, need in (("Stage 2 (labels)", "train", "labels"), ("Stage 3 (report targets)", "train", "report"),
                              ("scoring (labels and reference report)", "valid", "scoring")):
        rows = ready[ready["split"] == split]
        ok = usable(rows, need).to_numpy()
        account(step, set(rows["volume_name"]), set(rows.loc[ok, "volume_name"]),
                {r.volume_name: r.problems or "left out" for r in rows[~ok].itertuples()})
    return pd.DataFrame(rejected, columns=REJECTED_COLUMNS), pd.DataFrame(table)
