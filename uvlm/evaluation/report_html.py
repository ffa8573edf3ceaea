"""One self-contained HTML page linking every table and figure of a run (opened from results/)."""

from __future__ import annotations

import html
import os
from pathlib import Path

import pandas as pd

from uvlm.io import write_text

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:12px;margin:0.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#eee}
td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd}
.caption{color:#555;font-size:13px}"""


def write_html_report(out_html: str | Path, title: str, tables: list[tuple[str, str | Path, str]],
                      figures: list[tuple[str, str | Path]], notes: list[str] | None = None) -> None:
    """tables: (heading, csv path, caption); figures: (heading, png path). Figures are linked by
    paths relative to the page, so the folder can be moved or published as a whole."""
    out = Path(out_html)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p class='caption'>{html.escape(n)}</p>" for n in notes or []]
    parts.append("<h2>Contents</h2><ul>" + "".join(
        f"<li><a href='#t{i}'>{html.escape(h)}</a></li>" for i, (h, _, _) in enumerate(tables)) + "".join(
        f"<li><a href='#f{i}'>{html.escape(h)}</a></li>" for i, (h, _) in enumerate(figures)) + "</ul>")
    for i, (heading, csv, caption) in enumerate(tables):
        df = pd.read_csv(csv)
        rel = os.path.relpath(csv, out.parent)
        parts.append(f"<h2 id='t{i}'>{html.escape(heading)}</h2><p class='caption'>{html.escape(caption)} "
                     f"(<a href='{html.escape(rel)}'>CSV</a>)</p>")
        parts.append(df.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="", border=0))
    for i, (heading, png) in enumerate(figures):
        rel = os.path.relpath(png, out.parent)
        parts.append(f"<h2 id='f{i}'>{html.escape(heading)}</h2><a href='{html.escape(rel)}'>"
                     f"<img src='{html.escape(rel)}' alt='{html.escape(heading)}'></a>")
    parts.append("</body></html>")
    write_text("\n".join(parts), out)


def write_results_page(out_html: str | Path, tables: list[str], figures: list[str], dataset: str,
                       experiments: list[str], config_file: str) -> None:
    """The run's page: every table (its caption is the first line of the .md beside its .csv) and figure.
    `dataset` names the datasets run; `experiments` says which experiments ran (per dataset)."""
    entries = [(Path(t).stem.replace("_", " "), t, Path(t).with_suffix(".md").read_text().split("\n", 1)[0])
               for t in tables]
    write_html_report(out_html, f"U-VLM results ({dataset})", entries,
                      [(Path(f).stem.replace("_", " "), f) for f in figures],
                      notes=[f"Experiments: {'; '.join(experiments)}. Configuration: {config_file}."])
