"""Tables 2, 4 and 5 (and the AbdomenAtlas columns of 4 and 5) for config/ct_rate.yaml: each paper row once, with the published numbers beside ours."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from uvlm.config import REPO_ROOT, validate_config, with_defaults
from uvlm.evaluation.paper_tables import table4, table5
from uvlm.evaluation.tables import main_table, to_markdown
from uvlm.experiments import Experiment, Plan

PUBLISHED = REPO_ROOT / "config" / "published.yaml"


def fake_metrics(folder: Path, names: list[str]) -> dict[str, Path]:
    """A metrics file per experiment whose F1 encodes its position, so a mismatch shows."""
    out = {}
    for i, name in enumerate(names):
        path = folder / f"{name}.json"
        path.write_text(json.dumps({"macro_f1": 0.01 * (i + 1), "macro_precision": 0.5, "macro_recall": 0.5,
                                    "bleu1": 0.4, "bleu2": 0.3, "bleu3": 0.2, "bleu4": 0.1, "bleu_mean": 0.25,
                                    "macro_f1_ci": [0.0, 0.1], "bleu_mean_ci": [0.2, 0.3], "rouge_l": 0.3,
                                    "macro_auc": 0.7, "holdout": {"macro_auc": 0.72}}))
        out[name] = path
    return out


def test_ct_rate_table5_lists_each_paper_row_once_beside_ours(tmp_path: Path) -> None:
    cfg = with_defaults(yaml.safe_load((REPO_ROOT / "config" / "ct_rate.yaml").read_text()))
    plan = Plan.from_config(validate_config(cfg))
    metrics = fake_metrics(tmp_path, plan.names)
    df = table5(PUBLISHED, list(plan.experiments), metrics, "CT-RATE")
    paper = yaml.safe_load(PUBLISHED.read_text())["rep_table5"]
    assert len(df) == 17 and df["paper_f1"].tolist() == [r["ct_rate"][0] for r in paper]  # no extra rows
    assert df["source"].str.split(": ").str[-1].tolist() == plan.names  # ours beside, in the paper's order
    assert df["f1"].tolist() == [0.01 * (i + 1) for i in range(17)]
    best = df[(df["training"] == "Seg(F+L) Cls Rep") & df["sc"] & df["frz"]]
    assert best[["paper_f1", "paper_bleu_mean"]].values.tolist() == [[0.414, 0.349]]
    assert best["source"].tolist() == ["ours (CT-RATE): seg_fl_cls_rep_sc"]
    assert set(df["dec"]) == {"0.1B", "Q4B-L", "Q4B-F"} and set(df["vt"]) == {384, 3072}
    assert "F1 (paper)" in to_markdown(df, "Table 5")

    runs = list(plan.stage2)
    t4 = table4(PUBLISHED, runs, fake_metrics(tmp_path, [r.name for r in runs]), "CT-RATE")
    assert t4["training"].tolist() == ["None Cls", "Seg(C) Cls", "Seg(C+L) Cls", "Seg(F+L) Cls"]
    assert t4["paper_f1"].tolist() == [0.451, 0.546, 0.553, 0.555] and t4["f1"].notna().all()
    assert t4["holdout_auc"].tolist() == [0.72] * 4

    # the AbdomenAtlas columns of the same tables: the paper's abdomen numbers beside ours
    t5a = table5(PUBLISHED, list(plan.experiments), metrics, "AbdomenAtlas 3.0", "abdomen_atlas")
    assert t5a["paper_f1"].tolist() == [r["abdomen_atlas"][0] for r in paper]
    assert t5a.loc[best.index, ["paper_f1", "paper_bleu_mean"]].values.tolist() == [[0.553, 0.417]]
    t4a = table4(PUBLISHED, runs, fake_metrics(tmp_path, [r.name for r in runs]), "AbdomenAtlas 3.0", "abdomen_atlas")
    assert t4a["paper_f1"].tolist() == [0.373, 0.617, 0.646, 0.578]

    main = next(e for e in plan.experiments if e.name == cfg["main_experiment"])
    t2 = main_table(PUBLISHED, (main.name, main.title, metrics[main.name]), metrics[plan.names[0]], "CT-RATE")
    assert t2["method"].tolist()[-3:] == ["U-VLM (paper)", "Most frequent label set (baseline)",
                                          "U-VLM (ours): Seg(F+L) Cls Rep, SC + Frz"]


def test_an_experiment_without_a_paper_row_follows_the_paper_rows(tmp_path: Path) -> None:
    """E.g. SC on a fine-tuned encoder: the paper has no such row, so it is listed after its 17 rows."""
    odd = Experiment("sc_ft", "Seg(C+L) Cls Rep, SC, fine-tuned", "CL", True, multi_layer=True, frozen=False,
                     visual_tokens=384)
    match = Experiment("cl_sc", "Seg(C+L) Cls Rep, SC + Frz", "CL", True, multi_layer=True, frozen=True,
                       visual_tokens=384)
    df = table5(PUBLISHED, [odd, match], fake_metrics(tmp_path, ["sc_ft", "cl_sc"]), "demo")
    assert len(df) == 18 and df["paper_f1"].isna().tolist() == [False] * 17 + [True]
    assert df.iloc[-1]["source"].endswith("sc_ft") and df.iloc[7]["source"].endswith("cl_sc")


def _metrics(path: Path, f1: float, ci: tuple[float, float], bleu: float, shuffled: float) -> Path:
    path.write_text(json.dumps({"macro_f1": f1, "macro_f1_ci": list(ci), "bleu_mean": bleu,
                                "bleu_mean_ci": [bleu - 0.02, bleu + 0.02], "n_reports": 50,
                                "distinct_reports": 40, "shuffled_macro_f1": shuffled}))
    return path


def test_claims_verdicts_follow_the_numbers(tmp_path: Path) -> None:
    from uvlm.evaluation.claims import claims_section

    sc = Experiment("sc", "Seg Cls Rep SC", "CL", True, multi_layer=True, frozen=True)
    inp = Experiment("inp", "Seg Cls Rep", "CL", True, multi_layer=False, frozen=True)
    cls_rep = Experiment("cls", "Cls Rep", None, True, multi_layer=False, frozen=True)
    rep = Experiment("rep", "Rep only", None, False, multi_layer=False, frozen=True)
    metrics = {"sc": _metrics(tmp_path / "sc.json", 0.50, (0.45, 0.55), 0.40, 0.30),
               "inp": _metrics(tmp_path / "inp.json", 0.48, (0.43, 0.53), 0.38, 0.30),
               "cls": _metrics(tmp_path / "cls.json", 0.47, (0.42, 0.52), 0.41, 0.30),
               "rep": _metrics(tmp_path / "rep.json", 0.30, (0.25, 0.35), 0.41, 0.30)}
    base = _metrics(tmp_path / "base.json", 0.05, (0.04, 0.06), 0.30, 0.05)
    text = claims_section([sc, inp, cls_rep, rep], metrics, base)
    lines = [line for line in text.splitlines() if line.startswith("- Claim")]
    assert "vs Rep only" in lines[0] and "apart (holds)" in lines[0] and "+0.200" in lines[0]
    assert "vs Cls -> Rep" in lines[1] and "intervals overlap" in lines[1]
    assert "Claim 2" in lines[2] and "(+0.020)" in lines[2] and lines[2].endswith(
        "holds (holds = higher B-mean, and the input-layer row's F1 inside or below the SC row's interval).")
    assert sum("Claim 3" in line for line in lines) == 4 and "40 distinct reports for 50 volumes" in lines[3]
    assert "| Most frequent label set (baseline) |" in text.replace("  ", " ").replace("  ", " ")
    # SC with lower BLEU-mean than its input-layer twin: the claim is reported as not holding
    metrics["sc"] = _metrics(tmp_path / "sc.json", 0.50, (0.45, 0.55), 0.30, 0.30)
    assert "does not hold" in claims_section([sc, inp, cls_rep, rep], metrics, base)
    # the pretrained row below Cls -> Rep: within its interval, then wholly below it
    metrics["cls"] = _metrics(tmp_path / "cls.json", 0.52, (0.47, 0.57), 0.41, 0.30)
    assert "-0.020, lower, intervals overlap." in claims_section([sc, inp, cls_rep, rep], metrics, base)
    metrics["cls"] = _metrics(tmp_path / "cls.json", 0.70, (0.65, 0.75), 0.41, 0.30)
    assert "-0.200, lower, intervals apart (reversed)." in claims_section([sc, inp, cls_rep, rep], metrics, base)
