"""What the labs' reports share: per-seed statistics, "mean ± sd" cells, the paired-difference
verdict, strict-JSON summaries and the report.md/summary.json writer.

Verdict rule for an effect with a published size P and our paired mean difference d
(standard error s over n seeds): **yes** if d has P's sign, |d| > 2s and |d| ≥ P/2;
**partly** if the sign matches and |d| > 2s but |d| < P/2; **no** otherwise. Where only a
direction is published, yes/no on sign and |d| > 2s.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mlx_hooks.atomic_io import atomic_write_bytes

from .run_folder import dump_json


def stat(values) -> dict:
    """Mean, sample sd, n, standard error, min and max of ``values`` (NaN where undefined)."""
    v = np.asarray(list(values), dtype=np.float64)
    n = int(v.size)
    sd = float(v.std(ddof=1)) if n > 1 else float("nan")
    return {"mean": float(v.mean()) if n else float("nan"), "sd": sd, "n": n,
            "se": sd / math.sqrt(n) if n > 1 else float("nan"),
            "min": float(v.min()) if n else float("nan"), "max": float(v.max()) if n else float("nan")}


def paired(a, b) -> dict:
    """Statistics of a − b over seeds."""
    return stat(np.asarray(list(a), dtype=np.float64) - np.asarray(list(b), dtype=np.float64))


def fmt(s: dict | None, sd: bool = True) -> str:
    """A :func:`stat` as "mean ± sd" (one decimal; just the mean for one seed, "—" for none)."""
    if not s or not s.get("n"):
        return "—"
    if sd and s["n"] > 1:
        return f"{s['mean']:.1f} ± {s['sd']:.1f}"
    return f"{s['mean']:.1f}"


def fmt_pub(value) -> str:
    """A published ``(mean, sd)`` pair (sd may be None) as "mean ± sd"."""
    mean, sd = value
    return f"{mean:.1f}" if sd is None else f"{mean:.1f} ± {sd:.1f}"


def verdict(diff: dict, published: float | None, direction: int = 1) -> str:
    """yes / partly / no for a paired difference against a published effect (see module doc).

    ``published`` is the published size (its sign is the direction), or None where only the
    ``direction`` (+1/−1) is published.
    """
    n, mean, se = diff["n"], diff["mean"], diff["se"]
    if n < 2 or not math.isfinite(se):
        return "n/a (needs ≥ 2 seeds)"
    sign = float(np.sign(published)) if published else float(direction)
    significant = sign * mean > 2 * se
    if not significant:
        return "no"
    if published is None or abs(mean) >= 0.5 * abs(published):
        return "yes"
    return "partly"


def json_safe(obj):
    """NaN/inf → None (through dicts, lists and tuples), so a summary is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def run_section(run_info: dict | None) -> list[str]:
    """Markdown lines of a report's "## Run" section (none without ``run_info``)."""
    if not run_info:
        return []
    return ["## Run", ""] + [f"- {k}: {v}" for k, v in run_info.items()] + [""]


def write_report_files(folder: Path, summary: dict, text: str, plots: dict[str, Path] | None) -> None:
    """Write ``report.md`` (``text`` plus a Plots section linking ``plots``) and ``summary.json``
    (strict JSON) into ``folder``, atomically. When plots were rendered (``plots`` not None, maybe
    empty) their paths relative to ``folder`` go in ``summary["plots"]``."""
    if plots is not None:
        summary["plots"] = {k: str(Path(v).relative_to(folder)) for k, v in plots.items()}
    if plots:
        text += "\n## Plots\n\n" + "\n".join(f"![{k}]({summary['plots'][k]})" for k in plots) + "\n"
    atomic_write_bytes(folder / "report.md", text.encode("utf-8"))
    dump_json(folder / "summary.json", json_safe(summary))


__all__ = ["fmt", "fmt_pub", "json_safe", "paired", "run_section", "stat", "verdict", "write_report_files"]
