"""The paper's claims, checked on our own rows: a table of every experiment run and a verdict per claim.

1. Progressive pretraining raises clinical F1: the best Seg -> Cls -> Rep row against Cls -> Rep and Rep
   only (no pretraining), and whether their 95% bootstrap intervals are apart.
2. Multi-layer (SC) injection raises BLEU-mean without losing F1, against input-layer injection with every
   other setting equal.
3. The reports are grounded in the image: distinct reports, and macro F1 when reports are scored against
   other volumes' labels (shuffled images).

Verdicts are computed from the numbers, so the table says plainly when a claim does not hold on a run.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd

from uvlm.evaluation.tables import format_ci
from uvlm.experiments import Experiment

COLUMNS = {"method": "Row", "f1": "F1", "f1_ci": "F1 95% CI", "bleu_mean": "B-mean", "bleu_mean_ci": "B-mean 95% CI",
           "distinct": "Distinct reports", "shuffled_f1": "F1, images shuffled"}


def _row(title: str, m: dict) -> dict:
    return {"method": title, "f1": m["macro_f1"], "f1_ci": format_ci(m.get("macro_f1_ci")),
            "bleu_mean": m["bleu_mean"], "bleu_mean_ci": format_ci(m.get("bleu_mean_ci")),
            "distinct": f"{m['distinct_reports']}/{m['n_reports']}" if "distinct_reports" in m else None,
            "shuffled_f1": m.get("shuffled_macro_f1")}


def _apart(a: dict, b: dict) -> bool:
    """True when a's F1 interval lies wholly above b's."""
    return a["macro_f1_ci"][0] > b["macro_f1_ci"][1]


def claim_progressive(exps: list[Experiment], m: dict[str, dict]) -> list[str]:
    full = [e for e in exps if e.seg and e.cls and e.decoder == "own"]
    if not full:
        return ["Claim 1 (progressive pretraining raises F1): not checked, no Seg -> Cls -> Rep row was run."]
    best = max(full, key=lambda e: m[e.name]["macro_f1"])
    b = m[best.name]
    lines = []
    for label, seg, cls in (("Rep only", None, False), ("Cls -> Rep", None, True)):
        others = [e for e in exps if e.seg == seg and e.cls == cls and e.decoder == "own"]
        for o in others:
            r = m[o.name]
            verdict = ("intervals apart (holds)" if _apart(b, r) else "lower, intervals apart (reversed)"
                       if _apart(r, b) else "intervals overlap" if b["macro_f1"] >= r["macro_f1"]
                       else "lower, intervals overlap")
            lines.append(f"Claim 1 vs {label}: {best.title} F1 {b['macro_f1']:.3f} [{format_ci(b['macro_f1_ci'])}] "
                         f"against {o.title} {r['macro_f1']:.3f} [{format_ci(r['macro_f1_ci'])}]: "
                         f"{b['macro_f1'] - r['macro_f1']:+.3f}, {verdict}.")
    if not lines:
        lines.append("Claim 1: no Rep only or Cls -> Rep row was run.")
    return lines


def claim_injection(exps: list[Experiment], m: dict[str, dict]) -> list[str]:
    lines = []
    for sc in (e for e in exps if e.multi_layer):
        twin = next((e for e in exps if not e.multi_layer and replace(e, name=sc.name, title=sc.title,
                                                                       multi_layer=True) == sc), None)
        if twin is None:
            continue
        a, b = m[sc.name], m[twin.name]
        d_bleu, d_f1 = a["bleu_mean"] - b["bleu_mean"], a["macro_f1"] - b["macro_f1"]
        verdict = "holds" if d_bleu > 0 and a["macro_f1_ci"][1] >= b["macro_f1"] else "does not hold"
        lines.append(f"Claim 2: {sc.title} against {twin.title}: B-mean {a['bleu_mean']:.3f} "
                     f"[{format_ci(a['bleu_mean_ci'])}] vs {b['bleu_mean']:.3f} [{format_ci(b['bleu_mean_ci'])}] "
                     f"({d_bleu:+.3f}); F1 {a['macro_f1']:.3f} vs {b['macro_f1']:.3f} ({d_f1:+.3f}): {verdict} "
                     "(holds = higher B-mean, and the input-layer row's F1 inside or below the SC row's interval).")
    return lines or ["Claim 2 (SC raises BLEU-mean): not checked, no SC row with an input-layer twin was run."]


def claim_grounding(exps: list[Experiment], m: dict[str, dict]) -> list[str]:
    lines = []
    for e in exps:
        r = m[e.name]
        if "shuffled_macro_f1" not in r:
            continue
        lines.append(f"Claim 3: {e.title}: {r['distinct_reports']} distinct reports for {r['n_reports']} volumes; "
                     f"F1 {r['macro_f1']:.3f}, with images shuffled {r['shuffled_macro_f1']:.3f} "
                     f"({r['shuffled_macro_f1'] - r['macro_f1']:+.3f}).")
    return lines


def claim_lines(exps: list[Experiment], m: dict[str, dict]) -> list[str]:
    """One verdict line per claim check, from each experiment's metrics (name -> metrics JSON dict)."""
    return claim_progressive(exps, m) + claim_injection(exps, m) + claim_grounding(exps, m)


def claims_section(exps: list[Experiment], metrics: dict[str, str | Path], baseline_path: str | Path) -> str:
    """Markdown: one table of every experiment run (and the baseline), then one line per claim check."""
    m = {e.name: json.loads(Path(metrics[e.name]).read_text()) for e in exps}
    rows = [_row("Most frequent label set (baseline)", json.loads(Path(baseline_path).read_text()))]
    rows += [_row(e.title, m[e.name]) for e in exps]
    df = pd.DataFrame(rows, columns=list(COLUMNS)).rename(columns=COLUMNS)
    df = df.astype(object).where(df.notna(), None)
    lines = claim_lines(exps, m)
    return ("## The paper's claims on our rows\n\nEvery experiment run, on the same split and with the same "
            "extractor as above.\n\n" + df.to_markdown(index=False, floatfmt=".3f", missingval="") + "\n\n"
            + "\n".join(f"- {line}" for line in lines) + "\n")
