"""The hold-out that model selection reads: whole patients of the training split, never the scored split.

Stage 1 (nnU-Net's validation fold), Stage 2 (best hold-out AUC) and Stage 3 (lowest hold-out loss)
all select on patients held out of the training rows they are given; the split the reports are scored
on never reaches them. The same rows, fraction and seed always hold out the same patients.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


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
