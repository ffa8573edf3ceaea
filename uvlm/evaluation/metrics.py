"""Clinical (label) and language (BLEU) metrics with the conventions of REFERENCE.md section 3.

F1/precision/recall: per class with zero_division=0, then the unweighted (macro) mean; the
support-weighted mean is reported next to it under its own name. BLEU: corpus-level BLEU-1..4 on
whitespace tokens of cleaned text (lowercase, punctuation removed), brevity penalty against the
closest reference length, no smoothing; BLEU-mean is the mean of BLEU-1..4 on a 0-1 scale.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

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
