"""Figures people look at: per-class F1 per experiment, training curves, qualitative examples."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from uvlm.io import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def per_class_f1(metrics: dict[str, str | Path], out_png: str | Path) -> None:
    """Horizontal grouped bars: one group per label, one bar per experiment (incl. the baseline)."""
    per = {title: json.loads(Path(p).read_text())["per_class"] for title, p in metrics.items()}
    labels = list(next(iter(per.values())))
    n_exp = len(per)
    height = 0.8 / n_exp
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.2))
    y = np.arange(len(labels))
    for i, (title, classes) in enumerate(per.items()):
        ax.barh(y + i * height - 0.4 + height / 2, [classes[c]["f1"] for c in labels], height, label=title)
    ax.set_yticks(y, [f"{c} (n={per[next(iter(per))][c]['support']})" for c in labels], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 (labels extracted from generated reports vs the dataset's labels)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Per-class F1 on the validation split")
    _save(fig, out_png)


def training_curves(runs: dict[str, str | Path], out_png: str | Path) -> None:
    """One panel per training run folder (training_log.csv): loss against step (or epoch for Stage 1)."""
    runs = {t: Path(f) for t, f in runs.items() if (Path(f) / "training_log.csv").is_file()}
    n = max(len(runs), 1)
    cols = min(n, 3)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(4.2 * cols, 3.0 * ((n + cols - 1) // cols)),
                             squeeze=False)
    for ax, (title, folder) in zip(axes.ravel(), runs.items(), strict=False):
        df = pd.read_csv(folder / "training_log.csv")
        if "epoch" in df:  # Stage 1: nnU-Net's per-epoch losses
            for col in ("train_losses", "val_losses"):
                if col in df:
                    ax.plot(df["epoch"], df[col], label=col.replace("_losses", ""))
            ax.set_xlabel("epoch")
        else:
            ax.plot(df["step"], df["loss"], alpha=0.3, label="loss")
            ax.plot(df["step"], df["loss"].rolling(max(1, len(df) // 20), min_periods=1).mean(), label="smoothed")
            ax.set_xlabel("step")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(runs):]:
        ax.set_axis_off()
    fig.tight_layout()
    _save(fig, out_png)


def qualitative(examples: list[dict], out_png: str | Path, title: str) -> None:
    """examples: [{name, image (D, H, W) array, generated, reference}] -> per row: axial and coronal
    slices, then the generated and the reference report side by side."""
    fig, axes = plt.subplots(len(examples), 4, figsize=(17, 4.2 * len(examples)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1.9, 1.9]})
    for row, ex in zip(axes, examples, strict=True):
        vol = ex["image"]
        d, h, _ = vol.shape
        row[0].imshow(vol[d // 2], cmap="gray")
        row[0].set_title(f"{ex['name']} axial", fontsize=8)
        row[1].imshow(vol[::-1, h // 2], cmap="gray", aspect="auto")  # superior at the top
        row[1].set_title("coronal", fontsize=8)
        for ax, head, text, colour in ((row[2], "Generated", ex["generated"], "#222222"),
                                       (row[3], "Reference", ex["reference"], "#1f4e79")):
            lines = textwrap.wrap(text, 62)
            shown = "\n".join(lines[:26] + (["[...]"] if len(lines) > 26 else []))
            ax.text(0, 1, f"{head}:\n{shown}", va="top", fontsize=6.8, family="monospace", color=colour)
        for ax in row:
            ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out_png)


def write_figures(out_dir: str | Path, experiments: list, metrics: list[str], baseline: str, models: list[str],
                  reports: list[str], preprocessed: list[str], n_examples: int) -> None:
    """The run's figures: per_class_f1.png, training_curves.png and qualitative_<experiment>.png.

    experiments: uvlm.experiments.Experiment rows (name, title); metrics and reports: one
    <experiment>.json / .parquet each; models: trained model folders; preprocessed: the shards whose
    arrays the qualitative examples show."""
    from uvlm.shards import read_shard_indexes

    out = Path(out_dir)
    by_name = {Path(m).stem: m for m in metrics}
    report_of = {Path(r).stem: r for r in reports}
    per_class_f1({"Most frequent label set": baseline, **{e.title: by_name[e.name] for e in experiments}},
                 out / "per_class_f1.png")
    training_curves({Path(m).parent.name + "/" + Path(m).name: m for m in models}, out / "training_curves.png")
    index = read_shard_indexes(preprocessed)
    arrays = dict(zip(index["volume_name"], (Path(d) / f for d, f in zip(index["shard_dir"], index["array_file"],
                                                                          strict=True)), strict=True))
    for exp in experiments:
        rows = pd.read_parquet(report_of[exp.name]).sort_values("volume_name")
        examples = [{"name": r.volume_name, "image": np.load(arrays[r.volume_name]).astype(np.float32),
                     "generated": r.generated, "reference": r.reference} for r in rows.head(n_examples).itertuples()]
        qualitative(examples, out / f"qualitative_{exp.name}.png", exp.title)
