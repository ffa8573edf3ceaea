"""Run per-volume work over one shard of the manifest, keeping going past bad volumes.

A shard's outputs are written into `<out>.partial/` and renamed to `<out>/` only when the shard is
done, so an interrupted shard never looks complete. Each volume is processed independently: with
on_error="fail" the shard still processes every other volume, then fails with one message naming
every bad file; with on_error="skip" the bad volumes are listed in errors.csv and left out.

With workers > 1 the volumes run over a pool of that many processes (one thread each), so a shard uses
every core; the index, errors.csv and every message are the same as with one worker, in row order.
`work` must then be picklable (a module-level function, or a functools.partial of one).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from uvlm.io import atomic_dir

log = logging.getLogger(__name__)


class ShardError(RuntimeError):
    """Some volumes of a shard failed; the message lists each case and its problem."""


def run_shard(rows: pd.DataFrame, work: Callable[[pd.Series, Path], dict], out_dir: str | Path,
              on_error: str = "fail", desc: str = "volumes",
              finalize: Callable[[Path], None] | None = None, workers: int = 1) -> pd.DataFrame:
    """Call work(row, partial_dir) for every row; write index.parquet and errors.csv; return the index.

    finalize(partial_dir), if given, writes shard-level files before the folder is renamed.
    workers > 1: rows run in that many processes (see the module docstring).
    """
    with atomic_dir(out_dir) as partial:  # a failed shard leaves neither a final folder nor a half-written one
        run = _run_rows if workers <= 1 or len(rows) <= 1 else _pool_runner(workers)
        records, errors = run(rows, work, partial, desc)
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
    start = time.monotonic()
    outcomes = [_attempt(work, row, partial) for _, row in tqdm(rows.iterrows(), total=len(rows), desc=desc,
                                                                   mininterval=5.0)]
    return _collect(rows, outcomes, desc, start)


def _attempt(work: Callable[[pd.Series, Path], dict], row: pd.Series, partial: Path) -> tuple[bool, dict | str]:
    """(True, record) or (False, the error text naming the case): plain data, so it crosses processes."""
    case = row["volume_name"]
    try:
        return True, work(row, partial)
    except Exception as err:  # one volume must never take the shard down
        return False, str(err) if case in str(err) else f"case {case}: {type(err).__name__}: {err}"


def _collect(rows: pd.DataFrame, outcomes: list[tuple[bool, dict | str]], desc: str,
             start: float) -> tuple[list[dict], list[dict]]:
    records, errors = [], []
    for (_, row), (ok, value) in zip(rows.iterrows(), outcomes, strict=True):
        case = row["volume_name"]
        if ok:
            records.append({"volume_name": case, **value})
        else:
            log.error("%s", value)
            errors.append({"volume_name": case, "file": str(row.get("image_path", "")), "error": value})
    log.info("%d %s in %.1f s, %d failed", len(records), desc, time.monotonic() - start, len(errors))
    return records, errors


def _one_thread() -> None:
    """Pool worker set-up: the pool provides the parallelism, so each worker's libraries use one thread."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ[var] = "1"
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _pool_runner(workers: int) -> Callable[..., tuple[list[dict], list[dict]]]:
    def run(rows: pd.DataFrame, work: Callable[[pd.Series, Path], dict], partial: Path,
            desc: str) -> tuple[list[dict], list[dict]]:
        """As _run_rows, over `workers` fresh processes ("spawn": no threads or locks inherited)."""
        start = time.monotonic()
        pool = ProcessPoolExecutor(min(workers, len(rows)), mp_context=get_context("spawn"), initializer=_one_thread)
        try:
            futures = [pool.submit(_attempt, work, row, partial) for _, row in rows.iterrows()]
            for _ in tqdm(as_completed(futures), total=len(futures), desc=desc, mininterval=5.0):
                pass
            outcomes = [f.result() for f in futures]
        except BrokenProcessPool as err:  # a worker was killed (out of memory?): fail the shard, nothing written
            unfinished = [c for f, c in zip(futures, rows["volume_name"], strict=True)
                          if not f.done() or f.exception() is not None]
            raise ShardError(f"a worker process died while running {', '.join(map(str, unfinished))}: {err}") from err
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return _collect(rows, outcomes, desc, start)

    return run


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
