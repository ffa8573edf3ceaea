"""Metrics against independent computations: BLEU by hand and by pycocoevalcap (on the authors' cleaned,
cased text and on the lowercase variant), the authors' cleaning on explicit strings, ROUGE-L by
pycocoevalcap, F1 by scikit-learn's f1_score, bootstrap helpers against a generic bootstrap of those."""

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
    bleu_scores_lowercase,
    bleu_statistics,
    bootstrap_ci,
    clean_text_authors,
    clean_text_lowercase,
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
    """Textbook corpus BLEU without epsilons: clipped n-gram precisions summed over the corpus, geometric
    mean, BP. On corpora with some match at every order it differs from pycocoevalcap by ~1e-9."""
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


# ---- The authors' cleaning ---------------------------------------------------------------------------

CLEANING_CASES = [
    ("No effusion.<|eot_id|>", "No effusion."),  # the end-of-turn token goes
    ("No<|eot_id|> effusion", "No effusion"),
    ("Heart normal\nLungs clear", "Heart normal Lungs clear"),  # newline -> space
    ("Heart normal\n\n\nLungs clear", "Heart normal Lungs clear"),
    ('A "ground glass" opacity', "A ground glass opacity"),  # '"' dropped; "'" kept
    ("The patient's \"left\" lung", "The patient's left lung"),
    ("Heart   normal \t size", "Heart normal size"),  # whitespace collapsed
    ("A 3.5 cm mass", "A 3. 5 cm mass"),  # every full stop becomes ". ", decimals too
    ("A 12.5 mm nodule", "A 12. 5 mm nodule"),
    ("effusion.Heart normal", "effusion. Heart normal"),
    ("effusion .  Heart", "effusion. Heart"),
    ("effusion..Heart", "effusion. Heart"),  # ". ." folded to "."
    ("effusion . . Heart", "effusion. Heart"),
    ("a...b", "a. . b"),  # non-overlapping fold: a triple stop keeps two (the authors' regex)
    ('effusion.".Heart', "effusion. Heart"),  # '"' dropped before the full stops are handled
    ("Normal.<|eot_id|>.", "Normal."),  # token removed first, then ".." folded
    ("  Normal.  ", "Normal."),  # stripped, the final full stop stays on its word
    ("No Effusion, mild (left) atelectasis; see 12 mm!", "No Effusion, mild (left) atelectasis; see 12 mm!"),
    ("CT: Mild/moderate emphysema - upper lobes?", "CT: Mild/moderate emphysema - upper lobes?"),
    ("", ""),
    (".", "."),
]


@pytest.mark.parametrize(("text", "expected"), CLEANING_CASES)
def test_clean_text_authors(text: str, expected: str) -> None:
    assert clean_text_authors(text) == expected


def test_cleaners_map_non_strings_to_empty_text() -> None:
    for value in (None, float("nan"), 3):
        assert clean_text_authors(value) == "" and clean_text_lowercase(value) == ""


def test_clean_text_lowercase() -> None:
    assert clean_text_lowercase("A 12.5 mm Nodule, right lobe.") == "a 12.5 mm nodule right lobe"
    assert clean_text_lowercase('"Effusion."\nHeart') == "effusion heart"


def test_bleu_equals_independent_computation() -> None:
    hyps, refs = [clean_text_authors(h) for h in HYPS], [clean_text_authors(r) for r in REFS]
    assert hyps[0].split()[2] == "effusion."  # case and full stops are in the tokens
    scores = bleu_scores(HYPS, REFS)
    for n in range(1, 5):
        assert scores[f"bleu{n}"] == pytest.approx(reference_bleu(hyps, refs, n), abs=1e-8)
    assert scores["bleu_mean"] == pytest.approx(np.mean([scores[f"bleu{n}"] for n in range(1, 5)]), abs=1e-15)
    assert 0 < scores["bleu4"] < scores["bleu1"] < 1
    lower = bleu_scores_lowercase(HYPS, REFS)
    hyps, refs = [clean_text_lowercase(h) for h in HYPS], [clean_text_lowercase(r) for r in REFS]
    for n in range(1, 5):
        assert lower[f"bleu{n}_lower"] == pytest.approx(reference_bleu(hyps, refs, n), abs=1e-8)
    assert set(lower) == {"bleu1_lower", "bleu2_lower", "bleu3_lower", "bleu4_lower", "bleu_mean_lower"}


def test_bleu_lowercase_equals_sacrebleu_without_tokenizer_or_smoothing() -> None:
    """REFERENCE.md section 3: sacrebleu agrees to 4 decimals with tokenize='none', smooth_method='none'."""
    sacrebleu = pytest.importorskip("sacrebleu.metrics")
    hyps, refs = [clean_text_lowercase(h) for h in HYPS], [clean_text_lowercase(r) for r in REFS]
    lower = bleu_scores_lowercase(HYPS, REFS)
    for n in range(1, 5):
        bleu = sacrebleu.BLEU(tokenize="none", smooth_method="none", max_ngram_order=n, effective_order=False)
        assert lower[f"bleu{n}_lower"] == pytest.approx(bleu.corpus_score(hyps, [refs]).score / 100, abs=1e-8)


def test_bleu_of_identical_texts_is_one() -> None:
    assert bleu_scores(REFS, REFS)["bleu_mean"] == pytest.approx(1.0)
    assert bleu_scores_lowercase(REFS, REFS)["bleu_mean_lower"] == pytest.approx(1.0)


def test_authors_convention_reads_lower_than_lowercase_on_real_looking_reports() -> None:
    """The four report pairs above (capitals, full stops, commas, "12.5 mm"): measured BLEU-mean 0.2702
    the authors' way against 0.4459 lowercased without punctuation, a gap of 0.176."""
    authors = bleu_scores(HYPS, REFS)["bleu_mean"]
    lower = bleu_scores_lowercase(HYPS, REFS)["bleu_mean_lower"]
    assert authors == pytest.approx(0.2702, abs=5e-4)
    assert lower == pytest.approx(0.4459, abs=5e-4)
    assert lower - authors > 0.15


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


# A second corpus with what real generated and reference reports carry: newlines, quotes, decimals,
# double full stops, glued sentences, the end-of-turn token, capitals and commas.
PAIRS_RAW = [
    ("Findings:\nNo pleural effusion.. Heart size is normal.<|eot_id|>",
     "Findings:\nNo pleural effusion. Heart size is normal. Trachea is patent."),
    ('A 12.5 mm nodule in the "right upper lobe".', "A 12.5 mm solid nodule in the right upper lobe, unchanged."),
    ("Emphysema.Bronchiectasis in both lower lobes.", "Emphysema. Bronchiectasis in both lower lobes."),
    ("Normal.", "Mediastinal lymph nodes up to 9.8 mm.\nNo consolidation.\nNo pleural effusion. Heart normal."),
    ("Aorta 3.5 cm , ectatic . Coronary calcification .", "Ascending aorta 3.5 cm, ectatic. Coronary calcification."),
    ("IMPRESSION: Ground-glass opacities, bilateral.  Atelectasis.",
     "Impression: Ground-glass opacities, bilateral. Atelectasis."),
    ("Thyroid normal", "The thyroid gland is normal in size."),
    ("Hiatal hernia. Hiatal hernia. Hiatal hernia. Liver cyst 2.1 cm. Spleen normal. Pancreas normal.",
     "Hiatal hernia."),
]


def pycoco_scores(hyps: list[str], refs: list[str], clean=clean_text_authors) -> tuple[list[float], float]:
    """pycocoevalcap's Bleu(4) (closest ref length) and Rouge on `clean`ed texts."""
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge
    gts = {i: [clean(r)] for i, r in enumerate(refs)}
    res = {i: [clean(h)] for i, h in enumerate(hyps)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge = Rouge().compute_score(gts, res)[0] if gts else float("nan")
    return bleu, float(rouge)


SUBSETS = {
    "all": [PAIRS[i] for i in range(len(PAIRS))],
    "short_hypotheses": [PAIRS[i] for i in (1, 3, 4, 5, 6, 9, 15, 17, 19)],  # corpus brevity penalty < 1
    "long_hypotheses": [PAIRS[i] for i in (0, 7, 8, 11, 12, 20)],
    "first_half": [PAIRS[i] for i in range(11)],
    "raw_reports": PAIRS_RAW,
    "raw_much_shorter": [PAIRS_RAW[3], PAIRS_RAW[6]],  # hypotheses far shorter than references
    "raw_longer": [PAIRS_RAW[0], PAIRS_RAW[7]],  # hypotheses longer than references
}


def _split(pairs: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    return [p[0] for p in pairs], [p[1] for p in pairs]


def test_subsets_cover_short_and_long_hypotheses() -> None:
    for name, shorter in (("short_hypotheses", True), ("raw_much_shorter", True), ("long_hypotheses", False),
                          ("raw_longer", False)):
        stats = bleu_statistics(*_split(SUBSETS[name]))
        assert (stats[:, 0].sum() < stats[:, 1].sum()) == shorter, name
    stats = bleu_statistics(*_split(SUBSETS["raw_much_shorter"]))
    assert stats[:, 0].sum() * 4 < stats[:, 1].sum()


@pytest.mark.parametrize("subset", SUBSETS)
def test_bleu_and_rouge_equal_pycocoevalcap(subset: str) -> None:
    hyps, refs = _split(SUBSETS[subset])
    coco_bleu, coco_rouge = pycoco_scores(hyps, refs)
    ours = bleu_scores(hyps, refs)
    for n in range(1, 5):
        assert ours[f"bleu{n}"] == pytest.approx(coco_bleu[n - 1], abs=1e-12)  # asked: 1e-6
    assert ours["bleu_mean"] == pytest.approx(sum(coco_bleu) / 4, abs=1e-12)
    assert rouge_l(hyps, refs) == pytest.approx(coco_rouge, abs=1e-12)
    coco_lower, _ = pycoco_scores(hyps, refs, clean_text_lowercase)
    lower = bleu_scores_lowercase(hyps, refs)
    for n in range(1, 5):
        assert lower[f"bleu{n}_lower"] == pytest.approx(coco_lower[n - 1], abs=1e-12)
    assert lower["bleu_mean_lower"] == pytest.approx(sum(coco_lower) / 4, abs=1e-12)


def test_cleaning_changes_the_score() -> None:
    """The raw corpus scores differently under the two cleanings, and raw whitespace tokens differ again:
    the equality above depends on which cleaning is applied."""
    hyps, refs = _split(PAIRS_RAW)
    ours = bleu_scores(hyps, refs)
    coco_lower, _ = pycoco_scores(hyps, refs, clean_text_lowercase)
    coco_raw, _ = pycoco_scores(hyps, refs, lambda t: t)
    for n in range(1, 5):
        assert abs(ours[f"bleu{n}"] - coco_lower[n - 1]) > 1e-3
        assert abs(ours[f"bleu{n}"] - coco_raw[n - 1]) > 1e-3


DEGENERATE = {
    "no_4gram_match": (["pleural effusion left side"], ["left pleural effusion is seen"]),
    "no_match_at_all": (["Normal."], ["Cardiomegaly."]),
    "one_token_hypothesis": (["Effusion."], ["Effusion. Atelectasis."]),
    "empty_hypothesis": (["", "No effusion."], ["Heart normal.", "No effusion."]),
    "empty_reference": (["No effusion."], [""]),
    "all_empty": (["", "<|eot_id|>"], ["", '""']),
    "empty_corpus": ([], []),
}


@pytest.mark.parametrize("case", DEGENERATE)
def test_bleu_equals_pycocoevalcap_on_degenerate_corpora(case: str) -> None:
    """pycocoevalcap's epsilons: a zero n-gram precision gives a tiny positive score, reproduced exactly."""
    hyps, refs = DEGENERATE[case]
    coco_bleu, _ = pycoco_scores(hyps, refs)
    ours = bleu_scores(hyps, refs)
    for n in range(1, 5):
        assert ours[f"bleu{n}"] == pytest.approx(coco_bleu[n - 1], rel=1e-12, abs=1e-300), (n, ours, coco_bleu)
    coco_lower, _ = pycoco_scores(hyps, refs, clean_text_lowercase)
    lower = bleu_scores_lowercase(hyps, refs)
    for n in range(1, 5):
        assert lower[f"bleu{n}_lower"] == pytest.approx(coco_lower[n - 1], rel=1e-12, abs=1e-300)


def test_degenerate_epsilon_is_positive_not_zero() -> None:
    ours = bleu_scores(*DEGENERATE["no_4gram_match"])
    assert 0 < ours["bleu4"] < 1e-3 and ours["bleu2"] > 0.1


def test_rouge_per_report_edge_cases_equal_pycocoevalcap() -> None:
    cases = [("", ""), ("", "a b"), ("a b", ""), ("a a a", "a"), ("b a", "a b"), ("a b c d", "a x c y d"),
             ("Effusion.", "effusion"), ("No effusion.Heart", "No effusion. Heart")]
    for hyp, ref in cases:
        _, coco = pycoco_scores([hyp], [ref])
        assert rouge_l([hyp], [ref]) == pytest.approx(coco, abs=1e-12), (hyp, ref)
    assert rouge_l(["Effusion."], ["effusion"]) == 0.0  # case and the full stop are kept
    assert rouge_l(["No effusion.Heart"], ["No effusion. Heart"]) == pytest.approx(1.0)


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
    hyps, refs = _split(pairs)
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
