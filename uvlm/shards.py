"""Run per-volume work over one shard of the manifest, keeping going past bad volumes.

A shard's outputs are written into `<out>.partial/` and renamed to `<out>/` only when the shard is
done, so an interrupted shard never looks complete. Each volume is processed independently: with
on_error="fail" the shard still processes every other volume, then fails with one message naming
every bad file; with on_error="skip" the bad volumes are listed in errors.csv and left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from uvlm.io import atomic_dir

log = logging.getLogger(__name__)


class ShardError(RuntimeError):
    """Some volumes of a shard failed; the message lists each case and its problem."""


def run_shard(rows: pd.DataFrame, work: Callable[[pd.Series, Path], dict], out_dir: str | Path,
              on_error: str = "fail", desc: str = "volumes",
              finalize: Callable[[Path], None] | None = None) -> pd.DataFrame:
    """Call work(row, partial_dir) for every row; write index.parquet and errors.csv; return the index.

    finalize(partial_dir), if given, writes shard-level files before the folder is renamed.
    """
    with atomic_dir(out_dir) as partial:  # a failed shard leaves neither a final folder nor a half-written one
        records, errors = _run_rows(rows, work, partial, desc)
        if errors and on_error == "fail":
            details = "\n".join(f"  {e['volume_name']}: {e['error']}" for e in errors)
            raise ShardError(f"{len(errors)} of {len(rows)} volumes failed:\n{details}")
        index = pd.DataFrame(records)
        index.to_parquet(partial / "index.parquet", index=False)
        pd.DataFrame(errors, columns=ERROR_COLUMNS).to_csv(partial / "errors.csv", index=False)
        if finalize is not None:
            finalize(partial)
    return index


ERROR_COLUMNS = ["volume_name", "file", "error"]


def _run_rows(rows: pd.DataFrame, work: Callable[[pd.Series, Path], dict], partial: Path,
              desc: str) -> tuple[list[dict], list[dict]]:
    """Every volume independently: any exception (ITK's RuntimeError, a bug) is recorded with the case and
    its file, and the others still run. Only interrupts (KeyboardInterrupt, SystemExit) stop the shard."""
    records, errors = [], []
    start = time.monotonic()
    for _, row in tqdm(rows.iterrows(), total=len(rows), desc=desc, mininterval=5.0):
        case = row["volume_name"]
        try:
            rec = work(row, partial)
        except Exception as err:  # one volume must never take the shard down
            text = str(err) if case in str(err) else f"case {case}: {type(err).__name__}: {err}"
            log.error("%s", text)
            errors.append({"volume_name": case, "file": str(row.get("image_path", "")), "error": text})
            continue
        records.append({"volume_name": case, **rec})
    log.info("%d %s in %.1f s, %d failed", len(records), desc, time.monotonic() - start, len(errors))
    return records, errors


def read_shard_indexes(shard_dirs: list[str | Path]) -> pd.DataFrame:
    """Concatenate the index.parquet of several shard folders (the hand-over to training).

    Adds `shard_dir`, so a row's files are found as shard_dir / <file column>.
    """
    frames = [pd.read_parquet(Path(d) / "index.parquet").assign(shard_dir=str(d)) for d in shard_dirs]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_shard_errors(shard_dirs: list[str | Path]) -> pd.DataFrame:
    """Concatenate the errors.csv of several shard folders: volume_name, file, error."""
    frames = [pd.read_csv(Path(d) / "errors.csv", keep_default_na=False) for d in shard_dirs]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ERROR_COLUMNS)
