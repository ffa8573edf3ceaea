r"""Clinical (label) and language (BLEU, ROUGE-L) metrics with the conventions of REFERENCE.md sections 3 and 6.

F1/precision/recall: per class with zero_division=0, then the unweighted (macro) mean; the
support-weighted mean is reported next to it under its own name.

BLEU (`bleu_scores`, keys bleu1..bleu4, bleu_mean) follows the authors' evaluation:
  * text: `clean_text_authors`, the authors' light cleaning, in this order: remove the literal
    "<|eot_id|>"; newline -> space; drop '"'; collapse whitespace runs to one space; replace every
    match of r"\s*\.\s*" by ". " (so "3.5" -> "3. 5", "effusion.Heart" -> "effusion. Heart");
    replace r"\.\s*\." by "."; strip. Case and all other punctuation stay ("effusion." and
    "effusion" are different tokens). A non-string (None, NaN) is the empty text.
  * score: corpus BLEU-1..4 exactly as pycocoevalcap's `Bleu(4).compute_score` (whitespace tokens, no
    PTB tokenizer; one reference per report, so "closest" reference length is that reference's
    length; clipped n-gram matches and hypothesis n-gram counts summed over the corpus; BLEU-n is
    the cumulative product of (matches_k + 1e-15) / (count_k + 1e-9), k = 1..n, to the power 1/n;
    brevity penalty exp(1 - 1/ratio) when ratio = (hyp_len + 1e-15) / (ref_len + 1e-9) < 1).
    The epsilons are pycocoevalcap's: a zero n-gram precision gives a tiny positive score, not 0.
    BLEU-mean is the mean of BLEU-1..4; all on a 0-1 scale.
The lowercase variant (`bleu_scores_lowercase`, keys bleu1_lower..bleu4_lower, bleu_mean_lower)
scores `clean_text_lowercase` text (lowercase, punctuation removed, decimals like "12.5" kept whole)
with the same formula; it is not the paper's convention (on cased, punctuated reports it usually
reads higher, since "Effusion." and "effusion" then match).
Bootstrap: `bleu_statistics` gives per-report sufficient statistics with the same cleaning, and
`bleu_from_statistics` applies the same formula to their sums, so `bleu_from_statistics(
bleu_statistics(h, r).sum(0)) == bleu_scores(h, r)`.

ROUGE-L (`rouge_l`): pycocoevalcap's Rouge (per-report LCS F-measure, beta=1.2, averaged) on the
`clean_text_authors` text (case and punctuation kept). Confidence intervals: percentile bootstrap
over reports.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

BLEU_CONVENTION = ("authors: light cleaning (clean_text_authors), case and punctuation kept, "
                   "pycocoevalcap Bleu(4)")
BLEU_LOWER_CONVENTION = ("lowercase: clean_text_lowercase (lowercase, punctuation removed), "
                         "pycocoevalcap Bleu(4) formula")

_PUNCT = re.compile(r"[^\w\s]")
_SPACES = re.compile(r"\s+")
_FULL_STOP = re.compile(r"\s*\.\s*")
_DOUBLE_STOP = re.compile(r"\.\s*\.")
_TINY, _SMALL = 1e-15, 1e-9  # pycocoevalcap's epsilons (bleu_scorer.py)


def clean_text_authors(text: object) -> str:
    r"""The authors' light cleaning before BLEU: case kept, punctuation kept but '"' (full stops re-spaced).

    In order: remove "<|eot_id|>"; newline -> space; drop '"'; collapse whitespace to one space;
    every r"\s*\.\s*" -> ". "; every r"\.\s*\." -> "."; strip. A non-string gives "".
    """
    if not isinstance(text, str):
        return ""
    text = text.replace("<|eot_id|>", "").replace("\n", " ").replace('"', "")
    text = _SPACES.sub(" ", text)
    text = _FULL_STOP.sub(". ", text)
    text = _DOUBLE_STOP.sub(".", text)
    return text.strip()


def clean_text_lowercase(text: object) -> str:
    """Lowercase and drop punctuation, keeping decimal numbers ('12.5') whole. A non-string gives ""."""
    if not isinstance(text, str):
        return ""
    text = re.sub(r"(?<=\d)\.(?=\d)", "qqdecimalqq", text.lower())
    text = _PUNCT.sub(" ", text).replace("qqdecimalqq", ".")
    return " ".join(text.split())


def bleu_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-1..4 and their mean (0-1 scale), the authors' way: `clean_text_authors` text,
    pycocoevalcap's Bleu(4) formula (module docstring). Keys bleu1..bleu4, bleu_mean."""
    return bleu_from_statistics(bleu_statistics(hypotheses, references).sum(0))


def bleu_scores_lowercase(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """As `bleu_scores` on `clean_text_lowercase` text. Keys bleu1_lower..bleu4_lower, bleu_mean_lower."""
    scores = bleu_from_statistics(bleu_statistics(hypotheses, references, clean_text_lowercase).sum(0))
    return {f"{key}_lower": value for key, value in scores.items()}


def label_scores(y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str] | None = None) -> dict[str, object]:
    """Macro and support-weighted precision/recall/F1 plus per-class values (zero_division=0), per class by
    `names` (the label set's columns; default their indices)."""
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    names = [str(i) for i in range(len(f))] if names is None else names
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
    """Mean per-report ROUGE-L F-measure (beta=1.2), as pycocoevalcap's Rouge, on `clean_text_authors`
    text (the authors' light cleaning: case and punctuation kept, full stops as ". ").

    pycocoevalcap splits on a single space, so an empty text is one empty token: two empty texts
    score 1 and an empty text against a non-empty one scores 0; this is kept for equality.
    """
    scores = []
    for hyp, ref in zip(hypotheses, references, strict=True):
        h, r = clean_text_authors(hyp).split(" "), clean_text_authors(ref).split(" ")
        lcs = _lcs_length(h, r)
        precision, recall = lcs / len(h), lcs / len(r)
        if precision == 0 or recall == 0:
            scores.append(0.0)
        else:
            scores.append((1 + beta**2) * precision * recall / (recall + beta**2 * precision))
    return float(np.mean(scores)) if scores else 0.0


# ---- Bootstrap confidence intervals ----------------------------------------------------------------

def bleu_statistics(hypotheses: Sequence[str], references: Sequence[str],
                    clean: Callable[[object], str] = clean_text_authors) -> np.ndarray:
    """Per-report BLEU sufficient statistics on `clean`ed text (default: the authors'), shape (N, 10).

    Columns: hypothesis length, reference length, clipped matches for n=1..4, hypothesis n-gram
    counts for n=1..4 (pycocoevalcap's testlen, reflen, correct, guess; whitespace tokens). Corpus
    BLEU of any subset (or resample) is a function of the column sums, which is what makes a BLEU
    bootstrap cheap.
    """
    rows = []
    for hyp, ref in zip(hypotheses, references, strict=True):
        h, r = clean(hyp).split(), clean(ref).split()
        matches, totals = [], []
        for n in range(1, 5):
            h_ngrams = Counter(tuple(h[i:i + n]) for i in range(len(h) - n + 1))
            r_ngrams = Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
            matches.append(sum((h_ngrams & r_ngrams).values()))
            totals.append(max(len(h) - n + 1, 0))
        rows.append([len(h), len(r), *matches, *totals])
    return np.array(rows, dtype=np.int64).reshape(-1, 10)


def bleu_from_statistics(summed: np.ndarray) -> dict[str, float]:
    """Corpus BLEU-1..4 and mean from summed `bleu_statistics` rows, with pycocoevalcap's formula and
    epsilons, operation for operation (BleuScorer.compute_score), so the floats agree exactly."""
    hyp_len, ref_len = int(summed[0]), int(summed[1])
    matches, totals = [int(x) for x in summed[2:6]], [int(x) for x in summed[6:10]]
    out = {}
    product = 1.0
    for n in range(1, 5):
        product *= float(matches[n - 1] + _TINY) / (totals[n - 1] + _SMALL)
        out[f"bleu{n}"] = product ** (1.0 / n)
    ratio = (hyp_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:  # brevity penalty; an empty hypothesis side gives exp(-huge) = 0
        for n in range(1, 5):
            out[f"bleu{n}"] *= math.exp(1 - 1 / ratio)
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
                 alpha: float = 0.05, seed: int = 0,
                 clean: Callable[[object], str] = clean_text_authors) -> tuple[float, float]:
    """Bootstrap CI of corpus BLEU-mean as `bleu_scores` computes it (default: the authors' cleaning);
    n-gram statistics are computed once, each resample only sums."""
    stats = bleu_statistics(hypotheses, references, clean)
    return bootstrap_ci(lambda idx: bleu_from_statistics(stats[idx].sum(0))["bleu_mean"], len(stats),
                        n_resamples, alpha, seed)
