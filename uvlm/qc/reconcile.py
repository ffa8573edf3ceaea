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
from uvlm.shards import read_shard_errors, read_shard_indexes

REJECTED_COLUMNS = ["dataset", "case", "step", "reason"]


def _cases(index: pd.DataFrame) -> set[str]:
    return set(index["volume_name"]) if "volume_name" in index.columns else set()


def _reasons(errors: pd.DataFrame) -> dict[str, str]:
    return dict(zip(errors["volume_name"], errors["error"], strict=True))


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

    pre_index = read_shard_indexes(preprocess_shards)
    leaks = split_leaks(manifest, pre_index)
    account("preprocess", listed, _cases(pre_index) - set(leaks["case"]),
            {**_reasons(read_shard_errors(preprocess_shards)), **dict(zip(leaks["case"], leaks["reason"], strict=True))})

    cases = set(stage1_cases["volume_name"])
    for labeler, shards in labeler_shards.items():
        account(f"pseudolabel {labeler}", cases, _cases(read_shard_indexes(shards)), _reasons(read_shard_errors(shards)))
    train_cases = set(stage1_cases.loc[stage1_cases["split"] == "train", "volume_name"])
    account("label maps", train_cases, _cases(read_shard_indexes(label_shards)), _reasons(read_shard_errors(label_shards)))

    ready = manifest[manifest["volume_name"].isin(_cases(pre_index) - set(leaks["case"]))]
    for step, split, need in (("Stage 2 (labels)", "train", "labels"), ("Stage 3 (report targets)", "train", "report"),
                              ("scoring (labels and reference report)", "valid", "scoring")):
        rows = ready[ready["split"] == split]
        ok = usable(rows, need).to_numpy()
        account(step, set(rows["volume_name"]), set(rows.loc[ok, "volume_name"]),
                {r.volume_name: r.problems or "left out" for r in rows[~ok].itertuples()})
    return pd.DataFrame(rejected, columns=REJECTED_COLUMNS), pd.DataFrame(table)
