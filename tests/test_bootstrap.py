"""Bootstrap intervals: the helpers against a generic bootstrap of the reference metrics (scikit-learn,
pycocoevalcap), coverage, shrinkage with n, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from metric_corpus import PAIRS, PAIRS_RAW, pycoco_scores, split_pairs
from sklearn.metrics import f1_score

from uvlm.evaluation.metrics import (
    bleu_from_statistics,
    bleu_mean_ci,
    bleu_scores,
    bleu_scores_lowercase,
    bleu_statistics,
    bootstrap_ci,
    clean_text_lowercase,
    label_scores,
    macro_f1_ci,
)

# ---- Bootstrap -------------------------------------------------------------------------------------

SENTENCES = [h for pair in PAIRS + PAIRS_RAW for h in pair if len(h.split()) > 3]


def synthetic_reports(n: int, seed: int) -> tuple[list[str], list[str]]:
    """References of 3 bank sentences; hypotheses keep each reference sentence with p=0.6, else another."""
    rng = np.random.default_rng(seed)
    hyps, refs = [], []
    for _ in range(n):
        ref = [SENTENCES[i] for i in rng.choice(len(SENTENCES), size=3, replace=False)]
        hyp = [s if rng.random() < 0.6 else SENTENCES[rng.integers(len(SENTENCES))] for s in ref]
        hyps.append(" ".join(hyp))
        refs.append(" ".join(ref))
    return hyps, refs


def synthetic_labels(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = (rng.random((n, 18)) < 0.3).astype(int)
    y_pred = np.where(rng.random((n, 18)) < 0.8, y_true, 1 - y_true)
    return y_true, y_pred


@pytest.mark.parametrize("pairs", [PAIRS, PAIRS_RAW, PAIRS + PAIRS_RAW], ids=["pairs", "raw", "both"])
def test_bleu_statistics_give_bleu_scores_on_resamples(pairs: list[tuple[str, str]]) -> None:
    hyps, refs = split_pairs(pairs)
    stats = bleu_statistics(hyps, refs)
    assert bleu_from_statistics(stats.sum(0)) == pytest.approx(bleu_scores(hyps, refs), rel=1e-15, abs=1e-300)
    lower = bleu_from_statistics(bleu_statistics(hyps, refs, clean_text_lowercase).sum(0))
    assert {f"{k}_lower": v for k, v in lower.items()} == pytest.approx(bleu_scores_lowercase(hyps, refs), abs=1e-15)
    assert lower != pytest.approx(bleu_from_statistics(stats.sum(0)), abs=1e-3)  # the cleaning reaches the stats
    rng = np.random.default_rng(5)
    for _ in range(5):
        idx = rng.integers(0, len(hyps), size=len(hyps))
        sub_h, sub_r = [hyps[i] for i in idx], [refs[i] for i in idx]
        expected = bleu_scores(sub_h, sub_r)
        assert bleu_from_statistics(stats[idx].sum(0)) == pytest.approx(expected, rel=1e-15, abs=1e-300)
        coco_bleu, _ = pycoco_scores(sub_h, sub_r)
        assert [expected[f"bleu{n}"] for n in range(1, 5)] == pytest.approx(coco_bleu, rel=1e-12, abs=1e-300)


def test_bootstrap_helpers_equal_generic_bootstrap_of_reference_metrics() -> None:
    y_true, y_pred = synthetic_labels(60, seed=2)
    by_sklearn = bootstrap_ci(lambda idx: f1_score(y_true[idx], y_pred[idx], average="macro", zero_division=0),
                              60, n_resamples=100, seed=3)
    assert macro_f1_ci(y_true, y_pred, n_resamples=100, seed=3) == pytest.approx(by_sklearn, abs=1e-12)
    hyps, refs = synthetic_reports(30, seed=2)
    by_scores = bootstrap_ci(lambda idx: bleu_scores([hyps[i] for i in idx], [refs[i] for i in idx])["bleu_mean"],
                             30, n_resamples=20, seed=3)
    assert bleu_mean_ci(hyps, refs, n_resamples=20, seed=3) == pytest.approx(by_scores, abs=1e-12)
    by_lower = bootstrap_ci(
        lambda idx: bleu_scores_lowercase([hyps[i] for i in idx], [refs[i] for i in idx])["bleu_mean_lower"],
        30, n_resamples=20, seed=3)
    assert bleu_mean_ci(hyps, refs, n_resamples=20, seed=3, clean=clean_text_lowercase) == pytest.approx(
        by_lower, abs=1e-12)
    assert by_lower != pytest.approx(by_scores, abs=1e-3)


def test_bootstrap_ci_contains_estimate_shrinks_and_is_deterministic() -> None:
    widths = {}
    for n in (40, 400):
        y_true, y_pred = synthetic_labels(n, seed=n)
        hyps, refs = synthetic_reports(n, seed=n)
        f1_low, f1_high = macro_f1_ci(y_true, y_pred, seed=7)
        bleu_low, bleu_high = bleu_mean_ci(hyps, refs, seed=7)
        assert f1_low <= label_scores(y_true, y_pred)["macro_f1"] <= f1_high
        assert bleu_low <= bleu_scores(hyps, refs)["bleu_mean"] <= bleu_high
        assert macro_f1_ci(y_true, y_pred, seed=7) == (f1_low, f1_high)
        assert bleu_mean_ci(hyps, refs, seed=7) == (bleu_low, bleu_high)
        assert bleu_mean_ci(hyps, refs, seed=8) != (bleu_low, bleu_high)
        widths[n] = (f1_high - f1_low, bleu_high - bleu_low)
    assert widths[400][0] < widths[40][0] / 2 and widths[400][1] < widths[40][1] / 2


def test_bootstrap_ci_alpha_and_errors() -> None:
    values = np.arange(100, dtype=float)
    low90, high90 = bootstrap_ci(lambda idx: float(values[idx].mean()), 100, alpha=0.10)
    low95, high95 = bootstrap_ci(lambda idx: float(values[idx].mean()), 100, alpha=0.05)
    assert low95 <= low90 < 49.5 < high90 <= high95
    with pytest.raises(ValueError):
        bootstrap_ci(lambda idx: 0.0, 0)
