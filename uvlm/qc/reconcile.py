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

from uvlm.data.manifest import has_masks, split_leaks, usable
from uvlm.shards import read_shard_errors, read_shard_indexes

REJECTED_COLUMNS = ["dataset", "case", "step", "reason"]
TABLE_COLUMNS = ["dataset", "step", "in", "accepted", "rejected", "unaccounted", "balanced"]


def _cases(index: pd.DataFrame) -> set[str]:
    return set(index["volume_name"]) if "volume_name" in index.columns else set()


def _reasons(errors: pd.DataFrame) -> dict[str, str]:
    return dict(zip(errors["volume_name"], errors["error"], strict=True))


class _Ledger:
    """The rejected rows and the per-step table of one dataset, filled step by step."""

    def __init__(self, dataset: str) -> None:
        self.dataset, self.rejected, self.table = dataset, [], []

    def account(self, step: str, entering: set[str], accepted: set[str], reasons: dict[str, str]) -> None:
        self.rejected.extend({"dataset": self.dataset, "case": c, "step": step, "reason": r}
                             for c, r in sorted(reasons.items()))
        lost = entering - accepted - set(reasons)
        invented = (accepted | set(reasons)) - entering
        self.table.append({"dataset": self.dataset, "step": step, "in": len(entering),
                           "accepted": len(accepted & entering), "rejected": len(set(reasons) & entering),
                           "unaccounted": len(lost) + len(invented),
                           "balanced": not lost and not invented and not (accepted & set(reasons))})

    def preprocess(self, manifest: pd.DataFrame, preprocess_shards: list[str | Path]) -> set[str]:
        """Account for preprocessing (split leaks are rejections too); return the volumes ready for training."""
        pre_index = read_shard_indexes(preprocess_shards)
        leaks = split_leaks(manifest, pre_index)
        ready = _cases(pre_index) - set(leaks["case"])
        self.account("preprocess", set(manifest["volume_name"]), ready,
                     {**_reasons(read_shard_errors(preprocess_shards)),
                      **dict(zip(leaks["case"], leaks["reason"], strict=True))})
        return ready

    def training(self, manifest: pd.DataFrame, ready: set[str]) -> None:
        """Stage 2, Stage 3 and scoring, from the flags their loaders filter on (manifest.usable)."""
        rows_ready = manifest[manifest["volume_name"].isin(ready)]
        for step, split, need in (("Stage 2 (labels)", "train", "labels"),
                                  ("Stage 3 (report targets)", "train", "report"),
                                  ("scoring (labels and reference report)", "valid", "scoring")):
            rows = rows_ready[rows_ready["split"] == split]
            ok = usable(rows, need).to_numpy()
            self.account(step, set(rows["volume_name"]), set(rows.loc[ok, "volume_name"]),
                         {r.volume_name: r.problems or "left out" for r in rows[~ok].itertuples()})

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return pd.DataFrame(self.rejected, columns=REJECTED_COLUMNS), pd.DataFrame(self.table, columns=TABLE_COLUMNS)


def reconcile(manifest: pd.DataFrame, unlisted: pd.DataFrame, stage1_cases: pd.DataFrame,
              preprocess_shards: list[str | Path], labeler_shards: dict[str, list[str | Path]],
              label_shards: list[str | Path], dataset: str = "ct_rate") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rejected rows, reconciliation table) for one CT-RATE-layout dataset: volume files without a report
    row are rejected at ingest; pseudo-labels and label maps cover the Stage 1 case list."""
    ledger = _Ledger(dataset)
    listed = set(manifest["volume_name"])
    ledger.account("ingest", listed | set(unlisted["volume_name"]), listed,
                   {r.volume_name: f"volume file without a report row: {r.file}" for r in unlisted.itertuples()})
    ready = ledger.preprocess(manifest, preprocess_shards)
    cases = set(stage1_cases["volume_name"])
    for labeler, shards in labeler_shards.items():
        ledger.account(f"pseudolabel {labeler}", cases, _cases(read_shard_indexes(shards)),
                       _reasons(read_shard_errors(shards)))
    train_cases = set(stage1_cases.loc[stage1_cases["split"] == "train", "volume_name"])
    ledger.account("label maps", train_cases, _cases(read_shard_indexes(label_shards)),
                   _reasons(read_shard_errors(label_shards)))
    ledger.training(manifest, ready)
    return ledger.frames()


def reconcile_dataset(manifest: pd.DataFrame, preprocess_shards: list[str | Path], label_shards: list[str | Path],
                     dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rejected rows, reconciliation table) for a dataset besides CT-RATE (AbdomenAtlas, a CSV dataset),
    whose masks, if any, come with it: every case is a manifest row (one without a report or without its CT
    stays there with its reason), its label maps cover every case with its CT and masks
    (manifest.has_masks), and `manifest` is the one Stages 2-3 and scoring read (with the dataset's labels)."""
    ledger = _Ledger(dataset)
    listed = set(manifest["volume_name"])
    ledger.account("ingest", listed, listed, {})
    ready = ledger.preprocess(manifest, preprocess_shards)
    ledger.account("label maps", set(manifest.loc[has_masks(manifest), "volume_name"]),
                   _cases(read_shard_indexes(label_shards)), _reasons(read_shard_errors(label_shards)))
    ledger.training(manifest, ready)
    return ledger.frames()
