"""Funnel statistics: documents and bytes into and out of each step, with the drop reasons and
the seconds each step took in its worker, summed over shards; printed as a table and written to
stats.json.

Every timing is stored under a key named ``seconds`` and nothing else is: a rerun or a resumed
run reproduces everything in stats.json except those keys (see :func:`without_timings`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, TextIO

from fullchain.data.config import PipelineConfig

TIMING_KEY = "seconds"


def without_timings(obj: Any) -> Any:
    """``obj`` (stats, a marker) with every ``seconds`` key removed, at any depth: the part of
    the statistics that reruns reproduce exactly."""
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if k != TIMING_KEY}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    return obj


def _add(total: dict[str, Any], row: dict[str, Any]) -> None:
    for key in ("docs_in", "docs_out", "bytes_in", "bytes_out", TIMING_KEY):
        total[key] = total.get(key, 0) + row.get(key, 0)
    for key in ("dropped", "modified"):
        c = Counter(total.get(key, {}))
        c.update(row.get(key, {}))
        total[key] = dict(sorted(c.items()))


def funnel_stats(cfg: PipelineConfig, cleaned: dict[int, dict], written: dict[int, dict], *,
                 dedup: dict | None = None) -> dict:
    """Sum the per-shard markers into ``{"steps": [{"step", docs/bytes in/out, "seconds",
    "dropped", "modified"}], "rejected", "documents_out", "shards", "dedup"}`` in pipeline
    order. ``dedup`` is the cluster pass's result (with its ``seconds``)."""
    read: dict[str, Any] = {"step": "read"}
    rejected: Counter = Counter()
    per_step: dict[str, dict[str, Any]] = {name: {"step": name} for name in cfg.steps}
    index_seconds = 0.0
    for marker in cleaned.values():
        r = marker["read"]
        _add(read, {"docs_out": r["docs_out"], "bytes_out": r["bytes_out"],
                    TIMING_KEY: r.get(TIMING_KEY, 0.0)})
        rejected.update(r["rejected"])
        index_seconds += marker.get("dedup_index", {}).get(TIMING_KEY, 0.0)
        for name, row in marker["steps"].items():
            _add(per_step[name], row)
    for marker in written.values():
        for name, row in marker["steps"].items():
            _add(per_step[name], row)
    read["docs_in"] = read["docs_out"] + sum(rejected.values())
    read["dropped"] = dict(sorted(rejected.items()))
    stats = {"steps": [read, *per_step.values()], "rejected": dict(sorted(rejected.items())),
             "documents_out": sum(m["documents"] for m in written.values()),
             "shards": len(cleaned)}
    stats["dedup"] = _dedup_timing(cfg, per_step, dict(dedup or {}), index_seconds) \
        if cfg.dedup_steps else {}
    return stats


def _dedup_timing(cfg: PipelineConfig, per_step: dict[str, dict], dedup: dict,
                  index_seconds: float) -> dict:
    """Both dedup steps share one index pass (in the workers) and one cluster pass, so the whole
    dedup time goes on the first dedup step's row and a second one is marked ``timed_with``."""
    cluster_seconds = dedup.pop(TIMING_KEY, 0.0)
    first, *rest = cfg.dedup_steps
    per_step[first][TIMING_KEY] = per_step[first].get(TIMING_KEY, 0.0) + sum(
        per_step[name].pop(TIMING_KEY, 0.0) for name in rest) + index_seconds + cluster_seconds
    for name in rest:
        per_step[name]["timed_with"] = first
    return {**dedup, TIMING_KEY: {"index": index_seconds, "cluster": cluster_seconds}}


def _rate(row: dict) -> str:
    if "timed_with" in row:
        return "(above)"
    seconds = row.get(TIMING_KEY, 0.0)
    return f"{row.get('docs_in', 0) / seconds:,.0f}" if seconds > 0 else "-"


def funnel_rows(stats: dict) -> list[list[str]]:
    """Table rows: step, docs in, docs out, MB in, MB out, kept %, docs/s, top drop reasons.
    docs/s is per worker: documents in over the seconds the step took in its workers."""
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
                     f"{100 * d_out / d_in:.1f}" if d_in else "-", _rate(row), why])
    return rows


HEADER = ["step", "docs in", "docs out", "MB in", "MB out", "kept %", "docs/s",
          "dropped (top reasons)"]


def print_funnel(stats: dict, *, file: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title="data funnel",
                  caption="docs/s: per worker process (documents in / seconds in the step); "
                          "the first dedup step's figure covers both dedup passes (index and "
                          "cluster) of all dedup steps")
    for col in HEADER:
        table.add_column(col, justify="left" if col in ("step", HEADER[-1]) else "right")
    for row in funnel_rows(stats):
        table.add_row(*row)
    Console(file=file).print(table)
