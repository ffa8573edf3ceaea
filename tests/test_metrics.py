"""Metrics against independent computations: BLEU by hand and by pycocoevalcap, ROUGE-L by pycocoevalcap,
F1 by scikit-learn's f1_score, bootstrap helpers against a generic bootstrap of those."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from uvlm.evaluation.metrics import (
    _lcs_length,
    bleu_from_statistics,
    bleu_mean_ci,
    bleu_scores,
    bleu_statistics,
    bootstrap_ci,
    clean_for_bleu,
    label_scores,
    macro_f1_ci,
    rouge_l,
)

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


# ---- Equality with pycocoevalcap (test-only dependency) --------------------------------------------

# Report-like pairs: partial overlap, short hypotheses (brevity penalty), longer hypotheses, empty and
# punctuation-only texts, repeated words (clipping), numbers and exact matches.
PAIRS = [
    ("No pleural effusion. A 12 mm nodule is seen in the right upper lobe.",
     "No pleural or pericardial effusion. A 12.5 mm solid nodule is observed in the right upper lobe."),
    ("Heart size is enlarged. There is pericardial effusion.", "Cardiomegaly. Pericardial effusion is present."),
    ("Emphysema in both lungs, no consolidation.",
     "Centrilobular emphysema in both lungs. No consolidation or atelectasis."),
    ("The trachea is patent.", "Trachea and both main bronchi are patent."),
    ("Normal.", "Trachea and main bronchi are patent. Heart size is normal. No pleural effusion."),
    ("", "No lymphadenopathy in the mediastinum."),
    (".", "Mild atelectasis in the left lower lobe."),
    ("effusion effusion effusion effusion effusion", "Bilateral pleural effusion, larger on the right."),
    ("the the the the the the the", "The heart and the great vessels are normal in the study."),
    ("Hiatal hernia.", "Hiatal hernia."),
    ("Coronary artery wall calcification is present. Arterial wall calcification in the aorta.",
     "Calcified atherosclerotic plaques in the coronary arteries and the aortic wall."),
    ("Ground glass opacities in both lungs with interlobular septal thickening and mosaic attenuation "
     "pattern, consistent with an infectious process. No pleural effusion. No pericardial effusion. "
     "Heart size is normal. Mediastinal lymph nodes are not enlarged.",
     "Ground glass opacities in both lungs. Interlobular septal thickening."),
    ("Lung nodule 4 mm in the right middle lobe.", "A 4 mm nodule in the right middle lobe."),
    ("Bronchiectasis and peribronchial thickening in the lower lobes.",
     "Cylindrical bronchiectasis and peribronchial thickening in both lower lobes."),
    ("Pulmonary fibrotic sequela in the left upper lobe.", "Fibrotic sequelae in the left upper lobe apex."),
    ("No consolidation.", "No consolidation. No pleural effusion. No pneumothorax."),
    ("Medical material: a central venous catheter and a pacemaker.",
     "Pacemaker leads in the right heart chambers. Central venous catheter tip in the superior vena cava."),
    ("Thyroid normal", "The thyroid gland is normal in size."),
    ("lymphadenopathy lymphadenopathy mediastinal", "Mediastinal lymphadenopathy, the largest node 15 mm."),
    ("Liver, spleen and pancreas are normal.", "Liver, spleen and pancreas are normal."),
    ("Atelectasis in the lower lobes. Small pleural effusion on the left. Heart normal.",
     "Bilateral lower lobe atelectasis. Small left pleural effusion."),
    ("x", "x y"),
]


def pycoco_scores(hyps: list[str], refs: list[str]) -> tuple[list[float], float]:
    """pycocoevalcap's Bleu (closest ref length) and Rouge on the already-cleaned texts."""
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge
    gts = {i: [clean_for_bleu(r)] for i, r in enumerate(refs)}
    res = {i: [clean_for_bleu(h)] for i, h in enumerate(hyps)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    return bleu, float(rouge)


SUBSETS = {
    "all": list(range(len(PAIRS))),
    "short_hypotheses": [1, 3, 4, 5, 6, 9, 15, 17, 19],  # corpus brevity penalty < 1
    "long_hypotheses": [0, 7, 8, 11, 12, 20],
    "first_half": list(range(11)),
}


@pytest.mark.parametrize("subset", SUBSETS)
def test_bleu_and_rouge_equal_pycocoevalcap(subset: str) -> None:
    hyps, refs = [PAIRS[i][0] for i in SUBSETS[subset]], [PAIRS[i][1] for i in SUBSETS[subset]]
    coco_bleu, coco_rouge = pycoco_scores(hyps, refs)
    ours = bleu_scores(hyps, refs)
    for n in range(1, 5):
        assert ours[f"bleu{n}"] == pytest.approx(coco_bleu[n - 1], abs=1e-8)  # asked: 4 decimals
    assert rouge_l(hyps, refs) == pytest.approx(coco_rouge, abs=1e-12)


def test_brevity_penalty_is_active_in_short_subset() -> None:
    stats = bleu_statistics(*zip(*[PAIRS[i] for i in SUBSETS["short_hypotheses"]], strict=True))
    assert stats[:, 0].sum() < stats[:, 1].sum()


def test_rouge_per_report_edge_cases_equal_pycocoevalcap() -> None:
    cases = [("", ""), ("", "a b"), ("a b", ""), ("a a a", "a"), ("b a", "a b"), ("a b c d", "a x c y d")]
    for hyp, ref in cases:
        _, coco = pycoco_scores([hyp], [ref])
        assert rouge_l([hyp], [ref]) == pytest.approx(coco, abs=1e-12), (hyp, ref)


def test_lcs_equals_dynamic_programme() -> None:
    rng = np.random.default_rng(1)
    for _ in range(300):
        a = list(rng.choice(list("abcd"), size=rng.integers(0, 25)))
        b = list(rng.choice(list("abce"), size=rng.integers(0, 25)))
        table = np.zeros((len(a) + 1, len(b) + 1), dtype=int)
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                same = a[i - 1] == b[j - 1]
                table[i, j] = table[i - 1, j - 1] + 1 if same else max(table[i - 1, j], table[i, j - 1])
        assert _lcs_length(a, b) == table[-1, -1]


def test_known_difference_on_degenerate_corpus() -> None:
    """No 4-gram match at all: sacrebleu (ours) says 0, pycocoevalcap's epsilons give a small positive."""
    hyps, refs = ["pleural effusion left side"], ["left pleural effusion is seen"]
    coco_bleu, _ = pycoco_scores(hyps, refs)
    ours = bleu_scores(hyps, refs)
    assert ours["bleu4"] == 0.0 and 0 < coco_bleu[3] < 1e-3
    assert ours["bleu2"] == pytest.approx(coco_bleu[1], abs=5e-5)


# ---- Bootstrap -------------------------------------------------------------------------------------

SENTENCES = [clean_for_bleu(h) for pair in PAIRS for h in pair if len(h.split()) > 3]


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


def test_bleu_statistics_give_sacrebleu_corpus_bleu_on_resamples() -> None:
    hyps, refs = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    stats = bleu_statistics(hyps, refs)
    assert bleu_from_statistics(stats.sum(0)) == pytest.approx(bleu_scores(hyps, refs), abs=1e-12)
    rng = np.random.default_rng(5)
    for _ in range(5):
        idx = rng.integers(0, len(hyps), size=len(hyps))
        expected = bleu_scores([hyps[i] for i in idx], [refs[i] for i in idx])
        assert bleu_from_statistics(stats[idx].sum(0)) == pytest.approx(expected, abs=1e-12)


def test_bootstrap_helpers_equal_generic_bootstrap_of_reference_metrics() -> None:
    y_true, y_pred = synthetic_labels(60, seed=2)
    by_sklearn = bootstrap_ci(lambda idx: f1_score(y_true[idx], y_pred[idx], average="macro", zero_division=0),
                              60, n_resamples=100, seed=3)
    assert macro_f1_ci(y_true, y_pred, n_resamples=100, seed=3) == pytest.approx(by_sklearn, abs=1e-12)
    hyps, refs = synthetic_reports(30, seed=2)
    by_sacrebleu = bootstrap_ci(lambda idx: bleu_scores([hyps[i] for i in idx], [refs[i] for i in idx])["bleu_mean"],
                                30, n_resamples=20, seed=3)
    assert bleu_mean_ci(hyps, refs, n_resamples=20, seed=3) == pytest.approx(by_sacrebleu, abs=1e-12)


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
