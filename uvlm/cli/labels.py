"""Labels phase: the Stage 1 case list, anatomy pseudo-labels, merged label maps and their QC (DVC stage
`labels`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("uvlm")


def cmd_stage1_cases(a: argparse.Namespace, cfg: dict) -> None:
    import pandas as pd

    from uvlm.data.manifest import n_shards, stage1_cases
    from uvlm.io import write_parquet

    df = pd.read_parquet(a.manifest)
    cases = stage1_cases(df, cfg["lesions_complete"], cfg["stage1"]["max_cases"], cfg["seed"], cfg["shard_size"])
    write_parquet(cases, a.out)
    log.info("Stage 1 cases: %d of %d training volumes (%s), %d shards -> %s", len(cases),
             int((df["split"] == "train").sum()),
             "lesions complete" if cfg["lesions_complete"] else "those with lesion masks", n_shards(cases), a.out)


def cmd_pseudolabel(a: argparse.Namespace, cfg: dict) -> None:
    import pandas as pd
    import torch

    from uvlm.data.manifest import shard_rows
    from uvlm.data.roots import ct_rate_root
    from uvlm.device import pick_device
    from uvlm.pseudolabel.reference import label_folder
    from uvlm.pseudolabel.run import pseudolabel_shard

    pl = cfg["pseudolabels"]
    spec = pl["labelers"].get(a.labeler)
    if spec is None:
        raise SystemExit(f"no labeler '{a.labeler}' in pseudolabels.labelers")
    torch.set_num_threads(cfg["threads"])
    rows = shard_rows(pd.read_parquet(a.manifest), a.shard)  # a shard of the Stage 1 case list
    pseudolabel_shard(rows, a.labeler, spec, a.out, cfg["on_volume_error"], pick_device(cfg["device"]).type,
                      cfg["threads"], default_folder=str(label_folder(spec, ct_rate_root(cfg))),
                      montages=pl["montages"])


def cmd_pseudolabel_qc(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.evaluation.tables import write_table
    from uvlm.io import write_text
    from uvlm.labels.label_map import load_label_map
    from uvlm.pseudolabel.reference import qc_reference
    from uvlm.qc.summary import agreement, agreement_table, class_summary

    out = Path(a.out)
    table, missing = class_summary(a.shards)
    no_reference = ""  # why there is no Dice table: said in classes.md, agreement.md and the log
    if not a.reference:
        ref = qc_reference(cfg)
        no_reference = ref.note or (f"{a.labeler} is itself the reference labeler" if ref.labeler == a.labeler
                                    else f"the reference labeler '{ref.labeler}' was not given (--reference)")
        for stale in ("agreement.csv", "agreement_per_case.csv"):  # an earlier run's scores are not this one's
            (out / stale).unlink(missing_ok=True)
        write_text(f"No agreement with a reference for {a.labeler}: {no_reference}.\n", out / "agreement.md")
        log.log(logging.WARNING if cfg["pseudolabels"]["reference"] else logging.INFO, "no reference for QC: %s",
                no_reference)
    write_table(table, out / "classes.csv", out / "classes.md",
                f"Labeler {a.labeler}: volume per class over {int(table['cases_with_class'].max() if len(table) else 0)}"
                " cases (ml, cases where the class is present) and cases missing each class.",
                footer=f"No Dice against a reference: {no_reference}.\n" if no_reference else "")
    missing.to_csv(out / "missing.csv", index=False)
    if a.reference:
        per_case = agreement(a.shards, a.reference, load_label_map(a.label_map, a.granularity))
        per_case.to_csv(out / "agreement_per_case.csv", index=False)
        summary = agreement_table(per_case)
        write_table(summary, out / "agreement.csv", out / "agreement.md",
                    f"Dice of {a.labeler} against the reference labeler, per {a.granularity} class.")
        log.info("agreement with reference:\n%s", summary.to_string(index=False))


def cmd_labels(a: argparse.Namespace, cfg: dict) -> None:
    import pandas as pd

    from uvlm.data.manifest import shard_rows
    from uvlm.labels.label_map import load_label_map
    from uvlm.labels.shard import label_shard

    maps = [load_label_map(a.label_map, g) for g in a.granularities]
    rows = shard_rows(pd.read_parquet(a.manifest), a.shard)
    label_shard(rows, maps, a.sources, a.out, cfg["lesions_complete"], cfg["on_volume_error"])


def cmd_mask_labels(a: argparse.Namespace, cfg: dict) -> None:
    import pandas as pd

    from uvlm.data.manifest import shard_rows
    from uvlm.labels.abdomen_shard import label_abdomen_shard
    from uvlm.labels.label_map import granularity_names, load_label_map

    maps = [load_label_map(a.label_map, g) for g in granularity_names(a.label_map)]
    rows = shard_rows(pd.read_parquet(a.manifest), a.shard)
    label_abdomen_shard(rows, maps, a.out, cfg["on_volume_error"], cfg["abdomen_atlas"]["lesion_min_mm3"])


def cmd_abdomen_cases(a: argparse.Namespace, cfg: dict) -> None:
    import pandas as pd

    from uvlm.data.abdomen_atlas import with_lesion_labels
    from uvlm.io import write_parquet
    from uvlm.shards import read_shard_errors, read_shard_indexes

    df = with_lesion_labels(pd.read_parquet(a.manifest), read_shard_indexes(a.labels), read_shard_errors(a.labels))
    write_parquet(df, a.out)
    log.info("AbdomenAtlas cases: %d, %d with lesion labels, %d with a report -> %s", len(df),
             int(df["labels_known"].sum()), int(df["has_report"].sum()), a.out)


def cmd_abdomen_qc(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.evaluation.tables import write_table
    from uvlm.qc.summary import class_summary, lesion_label_table, missing_class_table
    from uvlm.shards import read_shard_indexes

    index = read_shard_indexes(a.shards)
    out = Path(a.out)
    write_table(lesion_label_table(index), out / "lesion_labels.csv", out / "lesion_labels.md",
                "AbdomenAtlas 3.0: cases with each lesion label (RadGPT rule on the masks) per split.")
    write_table(missing_class_table(index), out / "missing_classes.csv", out / "missing_classes.md",
                "AbdomenAtlas 3.0: cases whose label map lacks each class, per granularity.")
    table, _ = class_summary(a.shards, column="voxels_FL", missing_column="missing_FL")
    write_table(table, out / "classes_FL.csv", out / "classes_FL.md",
                "AbdomenAtlas 3.0: volume per F+L class (ml, over the cases where the class is present).")
