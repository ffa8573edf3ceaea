"""Metrics against independent computations: BLEU by hand, F1 by scikit-learn's f1_score."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from uvlm.evaluation.metrics import bleu_scores, clean_for_bleu, label_scores

HYPS = [
    "No pleural effusion. A 12 mm nodule is seen in the right upper lobe.",
    "Heart size is enlarged. There is pericardial effusion.",
    "Emphysema in both lungs, no consolidation.",
    "The trachea is patent.",
]
REFS = [
    "No pleural or pericardial effusion. A 12.5 mm solid nodule is observed in the right upper lobe.",
    "Cardiomegaly. Pericardial effusion is present.",
    "Centrilobular emphysema in both lungs. No consolidation or atelectasis.",
    "Trachea and both main bronchi are patent.",
]


def reference_bleu(hyps: list[str], refs: list[str], n_max: int) -> float:
    """Textbook corpus BLEU: clipped n-gram precisions summed over the corpus, geometric mean, BP."""
    matches, totals = [0] * n_max, [0] * n_max
    hyp_len = ref_len = 0
    for h, r in zip(hyps, refs, strict=True):
        ht, rt = h.split(), r.split()
        hyp_len, ref_len = hyp_len + len(ht), ref_len + len(rt)
        for n in range(1, n_max + 1):
            hc = Counter(tuple(ht[i:i + n]) for i in range(len(ht) - n + 1))
            rc = Counter(tuple(rt[i:i + n]) for i in range(len(rt) - n + 1))
            matches[n - 1] += sum(min(c, rc[g]) for g, c in hc.items())
            totals[n - 1] += max(len(ht) - n + 1, 0)
    if min(matches) == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(matches, totals, strict=True)) / n_max
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return bp * math.exp(log_p)


def test_clean_for_bleu() -> None:
    assert clean_for_bleu("A 12.5 mm Nodule, right lobe.") == "a 12.5 mm nodule right lobe"


def test_bleu_equals_independent_computation() -> None:
    scores = bleu_scores(HYPS, REFS)
    hyps, refs = [clean_for_bleu(h) for h in HYPS], [clean_for_bleu(r) for r in REFS]
    for n in range(1, 5):
        assert scores[f"bleu{n}"] == pytest.approx(reference_bleu(hyps, refs, n), abs=1e-9)
    assert scores["bleu_mean"] == pytest.approx(np.mean([scores[f"bleu{n}"] for n in range(1, 5)]))
    assert 0 < scores["bleu4"] < scores["bleu1"] < 1


def test_bleu_of_identical_texts_is_one() -> None:
    assert bleu_scores(REFS, REFS)["bleu_mean"] == pytest.approx(1.0)


def test_label_scores_equal_sklearn() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, size=(50, 18))
    y_true[:, 5] = 0  # a class with no positives: zero_division=0 convention
    y_pred = rng.integers(0, 2, size=(50, 18))
    s = label_scores(y_true, y_pred)
    assert s["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert s["macro_precision"] == pytest.approx(precision_score(y_true, y_pred, average="macro", zero_division=0))
    assert s["macro_recall"] == pytest.approx(recall_score(y_true, y_pred, average="macro", zero_division=0))
    assert s["weighted_f1"] == pytest.approx(f1_score(y_true, y_pred, average="weighted", zero_division=0))
    # per-class F1 by hand for one class
    t, p = y_true[:, 3], y_pred[:, 3]
    tp = int(((t == 1) & (p == 1)).sum())
    f1 = 2 * tp / (t.sum() + p.sum())
    assert s["per_class"]["Pericardial effusion"]["f1"] == pytest.approx(f1)
    assert s["per_class"]["Hiatal hernia"]["f1"] == 0.0
