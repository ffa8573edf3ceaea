"""Metrics against independent computations: BLEU by hand and by pycocoevalcap (on the authors' cleaned,
cased text and on the lowercase variant), the authors' cleaning on explicit strings, ROUGE-L by
pycocoevalcap, F1 by scikit-learn's f1_score, bootstrap helpers against a generic bootstrap of those."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from metric_corpus import PAIRS, PAIRS_RAW, pycoco_scores, split_pairs
from sklearn.metrics import f1_score, precision_score, recall_score

from uvlm.constants import CT_RATE_LABELS
from uvlm.evaluation.metrics import (
    _lcs_length,
    bleu_scores,
    bleu_scores_lowercase,
    bleu_statistics,
    clean_text_authors,
    clean_text_lowercase,
    label_scores,
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
    s = label_scores(y_true, y_pred, CT_RATE_LABELS)
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

SUBSETS = {
    "all": [PAIRS[i] for i in range(len(PAIRS))],
    "short_hypotheses": [PAIRS[i] for i in (1, 3, 4, 5, 6, 9, 15, 17, 19)],  # corpus brevity penalty < 1
    "long_hypotheses": [PAIRS[i] for i in (0, 7, 8, 11, 12, 20)],
    "first_half": [PAIRS[i] for i in range(11)],
    "raw_reports": PAIRS_RAW,
    "raw_much_shorter": [PAIRS_RAW[3], PAIRS_RAW[6]],  # hypotheses far shorter than references
    "raw_longer": [PAIRS_RAW[0], PAIRS_RAW[7]],  # hypotheses longer than references
}


def test_subsets_cover_short_and_long_hypotheses() -> None:
    for name, shorter in (("short_hypotheses", True), ("raw_much_shorter", True), ("long_hypotheses", False),
                          ("raw_longer", False)):
        stats = bleu_statistics(*split_pairs(SUBSETS[name]))
        assert (stats[:, 0].sum() < stats[:, 1].sum()) == shorter, name
    stats = bleu_statistics(*split_pairs(SUBSETS["raw_much_shorter"]))
    assert stats[:, 0].sum() * 4 < stats[:, 1].sum()


@pytest.mark.parametrize("subset", SUBSETS)
def test_bleu_and_rouge_equal_pycocoevalcap(subset: str) -> None:
    hyps, refs = split_pairs(SUBSETS[subset])
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
    hyps, refs = split_pairs(PAIRS_RAW)
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
