"""Commands outside the pipeline's steps: parameter counts and pulling versioned results."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_params(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.param_count import parameter_table

    df = parameter_table(cfg)
    print(f"Parameter counts for {a.config} (input grid {cfg['preprocess']['grid']}, stage shapes "
          f"{df.attrs['stage_shapes']}, {df.attrs['n_visual_tokens']} visual tokens):\n")
    print(df.to_markdown(index=False, intfmt=","))


def cmd_pull(a: argparse.Namespace, cfg: dict) -> None:
    from uvlm.versioning import pull_results

    pull_results(Path.cwd(), a.targets, a.cores)
