"""Clinical (label) and language (BLEU, ROUGE-L) metrics with the conventions of REFERENCE.md section 3.

F1/precision/recall: per class with zero_division=0, then the unweighted (macro) mean; the
support-weighted mean is reported next to it under its own name. BLEU: corpus-level BLEU-1..4 on
whitespace tokens of cleaned text (lowercase, punctuation removed), brevity penalty against the
closest reference length, no smoothing; BLEU-mean is the mean of BLEU-1..4 on a 0-1 scale. This equals
pycocoevalcap's Bleu (tested to 1e-8) except on degenerate corpora, where pycocoevalcap's
epsilons (1e-15 / 1e-9) turn a zero n-gram precision into a small positive score instead of 0.
ROUGE-L: pycocoevalcap's Rouge (per-report LCS F-measure, beta=1.2, averaged). Confidence intervals:
percentile bootstrap over reports.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
from sacrebleu.metrics import BLEU
from sklearn.metrics import precision_recall_fscore_support

from uvlm.constants import CT_RATE_LABELS

_PUNCT = re.compile(r"[^\w\s]")


def clean_for_bleu(text: str) -> str:
    """Lowercase and drop punctuation, keeping decimal numbers ('12.5') whole."""
    text = re.sub(r"(?<=\d)\.(?=\d)", "qqdecimalqq", text.lower())
    text = _PUNCT.sub(" ", text).replace("qqdecimalqq", ".")
    return " ".join(text.split())


def bleu_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-1..4 and their mean (0-1 scale) via sacrebleu with tokenize='none', no smoothing."""
    hyps = [clean_for_bleu(h) for h in hypotheses]
    refs = [clean_for_bleu(r) for r in references]
    out = {}
    for n in range(1, 5):
        bleu = BLEU(tokenize="none", smooth_method="none", max_ngram_order=n, effective_order=False)
        out[f"bleu{n}"] = bleu.corpus_score(hyps, [refs]).score / 100.0
    out["bleu_mean"] = float(np.mean([out[f"bleu{n}"] for n in range(1, 5)]))
    return out


def label_scores(y_true: np.ndarray, y_pred: np.ndarray,
                 names: Sequence[str] = CT_RATE_LABELS) -> dict[str, object]:
    """Macro and support-weighted precision/recall/F1 plus per-class values (zero_division=0)."""
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    weights = support / max(support.sum(), 1)
    return {
        "macro_f1": float(f.mean()), "macro_precision": float(p.mean()), "macro_recall": float(r.mean()),
        "weighted_f1": float((f * weights).sum()), "weighted_precision": float((p * weights).sum()),
        "weighted_recall": float((r * weights).sum()),
        "per_class": {n: {"precision": float(pi), "recall": float(ri), "f1": float(fi), "support": int(si)}
                      for n, pi, ri, fi, si in zip(names, p, r, f, support, strict=True)},
    }


# ---- ROUGE-L -------------------------------------------------------------------------------------

def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists.

    Bit-parallel form of the textbook dynamic programme (Allison & Dix 1986, Hyyro 2004): `row` holds
    one DP row as bits, a 0 at bit j where the LCS length steps up between b[:j] and b[:j+1]. Each
    token of `a` updates the whole row with one add/subtract on a Python int, so a report pair costs
    O(len(a)) big-int operations instead of O(len(a) * len(b)) Python steps. The LCS length is the
    number of 0 bits.
    """
    positions: dict[str, int] = {}
    for i, token in enumerate(b):
        positions[token] = positions.get(token, 0) | (1 << i)
    full = (1 << len(b)) - 1
    row = full
    for token in a:
        hit = row & positions.get(token, 0)
        row = ((row + hit) | (row - hit)) & full
    return len(b) - row.bit_count()


def rouge_l(hypotheses: Sequence[str], references: Sequence[str], beta: float = 1.2) -> float:
    """Mean per-report ROUGE-L F-measure (beta=1.2) on cleaned text, as pycocoevalcap's Rouge.

    pycocoevalcap splits on a single space, so an empty text is one empty token: two empty texts
    score 1 and an empty text against a non-empty one scores 0; this is kept for equality.
    """
    scores = []
    for hyp, ref in zip(hypotheses, references, strict=True):
        h, r = clean_for_bleu(hyp).split(" "), clean_for_bleu(ref).split(" ")
        lcs = _lcs_length(h, r)
        precision, recall = lcs / len(h), lcs / len(r)
        if precision == 0 or recall == 0:
            scores.append(0.0)
        else:
            scores.append((1 + beta**2) * precision * recall / (recall + beta**2 * precision))
    return float(np.mean(scores)) if scores else 0.0


# ---- Bootstrap confidence intervals ----------------------------------------------------------------

def bleu_statistics(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-report BLEU sufficient statistics on cleaned text, shape (N, 10).

    Columns: hypothesis length, reference length, clipped matches for n=1..4, hypothesis n-gram
    counts for n=1..4. Corpus BLEU of any subset (or resample) is a function of the column sums,
    which is what makes a BLEU bootstrap cheap.
    """
    rows = []
    for hyp, ref in zip(hypotheses, references, strict=True):
        h, r = clean_for_bleu(hyp).split(), clean_for_bleu(ref).split()
        matches, totals = [], []
        for n in range(1, 5):
            h_ngrams = Counter(tuple(h[i:i + n]) for i in range(len(h) - n + 1))
            r_ngrams = Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
            matches.append(sum((h_ngrams & r_ngrams).values()))
            totals.append(max(len(h) - n + 1, 0))
        rows.append([len(h), len(r), *matches, *totals])
    return np.array(rows, dtype=np.int64).reshape(-1, 10)


def bleu_from_statistics(summed: np.ndarray) -> dict[str, float]:
    """Corpus BLEU-1..4 and mean from summed `bleu_statistics` rows (sacrebleu's formula, no smoothing)."""
    hyp_len, ref_len = float(summed[0]), float(summed[1])
    matches, totals = summed[2:6].astype(float), summed[6:10].astype(float)
    bp = min(1.0, math.exp(1 - ref_len / hyp_len)) if hyp_len > 0 else 0.0  # brevity penalty
    out = {}
    for n in range(1, 5):
        if (matches[:n] == 0).any():
            out[f"bleu{n}"] = 0.0
        else:
            out[f"bleu{n}"] = bp * math.exp(float(np.mean(np.log(matches[:n] / totals[:n]))))
    out["bleu_mean"] = float(np.mean([out[f"bleu{n}"] for n in range(1, 5)]))
    return out


def bootstrap_ci(metric_fn: Callable[[np.ndarray], float], n_items: int, n_resamples: int = 1000,
                 alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of a corpus metric over reports.

    `metric_fn(indices)` scores the corpus made of the reports at `indices` (drawn with replacement,
    n_items of them per resample); resampling whole reports keeps each report's labels and text
    together. The same seed gives the same interval.
    """
    if n_items < 1:
        raise ValueError("bootstrap_ci needs at least one item")
    rng = np.random.default_rng(seed)
    values = [metric_fn(rng.integers(0, n_items, size=n_items)) for _ in range(n_resamples)]
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def macro_f1_ci(y_true: np.ndarray, y_pred: np.ndarray, n_resamples: int = 1000, alpha: float = 0.05,
                seed: int = 0) -> tuple[float, float]:
    """Bootstrap CI of macro F1 (per class, zero_division=0, unweighted mean), from per-report counts."""
    y_true, y_pred = np.asarray(y_true) == 1, np.asarray(y_pred) == 1
    tp, fp, fn = (y_true & y_pred).astype(int), (~y_true & y_pred).astype(int), (y_true & ~y_pred).astype(int)

    def macro_f1(idx: np.ndarray) -> float:
        t, p, n = tp[idx].sum(0), fp[idx].sum(0), fn[idx].sum(0)
        denominator = 2 * t + p + n
        return float(np.mean(np.where(denominator > 0, 2 * t / np.maximum(denominator, 1), 0.0)))

    return bootstrap_ci(macro_f1, len(tp), n_resamples, alpha, seed)


def bleu_mean_ci(hypotheses: Sequence[str], references: Sequence[str], n_resamples: int = 1000,
                 alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Bootstrap CI of corpus BLEU-mean; n-gram statistics are computed once, each resample only sums."""
    stats = bleu_statistics(hypotheses, references)
    return bootstrap_ci(lambda idx: bleu_from_statistics(stats[idx].sum(0))["bleu_mean"], len(stats),
                        n_resamples, alpha, seed)
