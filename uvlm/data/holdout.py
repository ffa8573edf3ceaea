"""The hold-out that model selection reads: whole patients of the training split, never the scored split.

Stage 1 (nnU-Net's validation fold), Stage 2 (best hold-out AUC) and Stage 3 (lowest hold-out loss)
all select on patients held out of the training rows they are given; the split the reports are scored
on never reaches them. The same rows, fraction and seed always hold out the same patients.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def holdout_mask(rows: pd.DataFrame, fraction: float, seed: int) -> pd.Series:
    """True for the rows of about `fraction` of the patients (at least one when there are two or more)."""
    patients = np.array(sorted(rows["patient_id"].unique()))
    n = max(1, int(round(len(patients) * fraction))) if len(patients) > 1 else 0
    held = set(np.random.default_rng(seed).choice(patients, size=n, replace=False).tolist())
    return rows["patient_id"].isin(held)


def split_holdout(rows: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows to fit on, held-out rows), split by patient."""
    held = holdout_mask(rows, fraction, seed)
    return rows[~held].reset_index(drop=True), rows[held].reset_index(drop=True)


def fit_and_holdout(manifest: str, shard_dirs: list[str], needs: str, fraction: float, seed: int):
    """The training split's volumes that have what the stage `needs` ("labels", "report") as (volumes to fit
    on, patients held out for model selection); the scored split is not read."""
    from uvlm.data.volumes import VolumeDataset, load_split

    fit_rows, held = split_holdout(load_split(manifest, shard_dirs, "train", needs), fraction, seed)
    log.info("training split: %d volumes to fit on, %d held out for model selection (%d patients)",
             len(fit_rows), len(held), held["patient_id"].nunique())
    return VolumeDataset(fit_rows), VolumeDataset(held)


def split_volumes(manifest: str, shard_dirs: list[str], split: str, needs: str | None = None):
    """One split's preprocessed volumes (those with what `needs` names) as a VolumeDataset."""
    from uvlm.data.volumes import VolumeDataset, load_split

    return VolumeDataset(load_split(manifest, shard_dirs, split, needs))
