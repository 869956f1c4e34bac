"""Funnel statistics: documents and bytes into and out of each step, with the drop reasons,
summed over shards; printed as a table and written to stats.json."""

from __future__ import annotations

from collections import Counter
from typing import Any, TextIO

from fullchain.data.config import PipelineConfig


def _add(total: dict[str, Any], row: dict[str, Any]) -> None:
    for key in ("docs_in", "docs_out", "bytes_in", "bytes_out"):
        total[key] = total.get(key, 0) + row.get(key, 0)
    for key in ("dropped", "modified"):
        c = Counter(total.get(key, {}))
        c.update(row.get(key, {}))
        total[key] = dict(sorted(c.items()))


def funnel_stats(cfg: PipelineConfig, cleaned: dict[int, dict], written: dict[int, dict]) -> dict:
    """Sum the per-shard markers into ``{"steps": [{"step", docs/bytes in/out, "dropped",
    "modified"}], "rejected", "documents_out", "shards"}`` in pipeline order."""
    read: dict[str, Any] = {"step": "read"}
    rejected: Counter = Counter()
    per_step: dict[str, dict[str, Any]] = {name: {"step": name} for name in cfg.steps}
    for marker in cleaned.values():
        r = marker["read"]
        _add(read, {"docs_out": r["docs_out"], "bytes_out": r["bytes_out"]})
        rejected.update(r["rejected"])
        for name, row in marker["steps"].items():
            _add(per_step[name], row)
    for marker in written.values():
        for name, row in marker["steps"].items():
            _add(per_step[name], row)
    read["docs_in"] = read["docs_out"] + sum(rejected.values())
    read["dropped"] = dict(sorted(rejected.items()))
    return {"steps": [read, *per_step.values()], "rejected": dict(sorted(rejected.items())),
            "documents_out": sum(m["documents"] for m in written.values()),
            "shards": len(cleaned)}


def funnel_rows(stats: dict) -> list[list[str]]:
    """Table rows: step, docs in, docs out, MB in, MB out, kept %, top drop reasons."""
    rows = []
    for row in stats["steps"]:
        d_in, d_out = row.get("docs_in", 0), row.get("docs_out", 0)
        reasons = sorted(row.get("dropped", {}).items(), key=lambda kv: -kv[1])[:3]
        mods = sorted(row.get("modified", {}).items(), key=lambda kv: -kv[1])[:2]
        why = ", ".join(f"{k} {v}" for k, v in reasons)
        if mods:
            why += ("; " if why else "") + ", ".join(f"{k} {v}" for k, v in mods)
        rows.append([row["step"], f"{d_in:,}", f"{d_out:,}",
                     f"{row.get('bytes_in', 0) / 1e6:.2f}", f"{row.get('bytes_out', 0) / 1e6:.2f}",
                     f"{100 * d_out / d_in:.1f}" if d_in else "-", why])
    return rows


HEADER = ["step", "docs in", "docs out", "MB in", "MB out", "kept %", "dropped (top reasons)"]


def print_funnel(stats: dict, *, file: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title="data funnel")
    for col in HEADER:
        table.add_column(col, justify="left" if col in ("step", HEADER[-1]) else "right")
    for row in funnel_rows(stats):
        table.add_row(*row)
    Console(file=file).print(table)
