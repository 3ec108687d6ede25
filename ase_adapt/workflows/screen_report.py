"""The RSS hole flags and the screen's outputs.

A relaxed structure is flagged (fine-tuning strategies paper, App. A.5) when any of these holds,
medians and MADs taken per composition over the structures whose energy is known:

- ``overlap``: the closest pair is under ``overlap_ratio`` (0.5) times its covalent-radius sum;
- ``volume``: volume per atom under ``volume_ratio`` (0.3) times the median;
- ``energy``: energy per atom more than max(``energy_mads`` (10) MADs, ``energy_floor`` (5 eV/atom))
  below the median;
- ``combined``: volume per atom under ``combined_volume_ratio`` (0.5) times the median *and*
  energy per atom below the median.

With an :class:`~ase_adapt.AdaptiveCalculator` (``--prior``), each row of ``screen.json`` lists the
adaptation events of its structure (``events``: kind and action, in order).
A structure whose relaxation failed (``error``) is counted apart; the geometric flags still apply
to the structure it failed on. Outputs: ``screen.csv`` and ``screen.json`` (one row per
structure, with its flags), the flagged fraction per composition (``screen.json`` and the
printed table), ``screen.png`` (a heat map: compositions x criteria) and ``flagged.extxyz``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._io import atomic_write, write_json

__all__ = ["HoleCriteria", "flag_records", "write_report", "CRITERIA"]

CRITERIA = ("overlap", "volume", "energy", "combined")
_COLUMNS = ("composition", "index", "space_group", "n_atoms", "energy_per_atom", "volume_per_atom",
            "min_distance_ratio", "converged", "steps", "error", "seconds", *CRITERIA, "flagged")


@dataclass(frozen=True)
class HoleCriteria:
    overlap_ratio: float = 0.5
    volume_ratio: float = 0.3
    energy_mads: float = 10.0
    energy_floor: float = 5.0          # eV/atom
    combined_volume_ratio: float = 0.5


def _median_mad(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    if not v.size:
        return float("nan"), float("nan")
    med = float(np.median(v))
    return med, float(np.median(np.abs(v - med)))


def flag_records(records: Sequence[dict[str, Any]], criteria: HoleCriteria = HoleCriteria()
                 ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """(records with their flags, per-composition statistics and flagged fractions)."""
    c = criteria
    by_comp: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_comp.setdefault(r["composition"], []).append(r)
    flagged, stats = [], {}
    for comp, rows in by_comp.items():
        e_med, e_mad = _median_mad([r["energy_per_atom"] for r in rows if r["energy_per_atom"] is not None])
        v_med, _ = _median_mad([r["volume_per_atom"] for r in rows if r["volume_per_atom"] is not None])
        e_cut = e_med - max(c.energy_mads * e_mad, c.energy_floor)
        out = []
        for r in rows:
            e, v, d = r["energy_per_atom"], r["volume_per_atom"], r["min_distance_ratio"]
            f = {
                "overlap": d is not None and d < c.overlap_ratio,
                "volume": v is not None and v < c.volume_ratio * v_med,
                "energy": e is not None and e < e_cut,
                "combined": v is not None and e is not None and v < c.combined_volume_ratio * v_med and e < e_med,
            }
            out.append({**r, **f, "flagged": any(f.values())})
        n = len(out)
        stats[comp] = {"n": n, "n_failed": sum(r["error"] is not None for r in out),
                       "n_converged": sum(bool(r["converged"]) for r in out),
                       **{k: (None if np.isnan(x) else x) for k, x in (("median_energy_per_atom", e_med),
                          ("mad_energy_per_atom", e_mad), ("median_volume_per_atom", v_med))},
                       "flagged_fraction": sum(r["flagged"] for r in out) / n,
                       **{f"{k}_fraction": sum(r[k] for r in out) / n for k in CRITERIA}}
        flagged += out
    return flagged, stats


def _csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _extxyz(rows: Sequence[dict[str, Any]]) -> str:
    from ase import Atoms
    from ase.io import write

    buf = io.StringIO()
    for r in rows:
        st = r["structure"]
        if st is None:
            continue
        a = Atoms(numbers=st["numbers"], positions=st["positions"], cell=st["cell"], pbc=True)
        a.info.update(composition=r["composition"], index=r["index"],
                      criteria=",".join(k for k in CRITERIA if r[k]))
        write(buf, a, format="extxyz")
    return buf.getvalue()


def heat_map(stats: dict[str, dict[str, Any]], path: Path, title: str = "RSS hole screen") -> Path | None:
    """Flagged fraction per composition (rows) and criterion (columns); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    comps = list(stats)
    cols = [*CRITERIA, "flagged"]
    data = np.array([[stats[c][f"{k}_fraction"] for k in cols] for c in comps])
    fig, ax = plt.subplots(figsize=(1.2 * len(cols) + 2, 0.45 * len(comps) + 1.5))
    im = ax.imshow(data, vmin=0, vmax=max(0.01, float(data.max())), cmap="Reds", aspect="auto")
    ax.set_xticks(range(len(cols)), ["any" if k == "flagged" else k for k in cols])
    ax.set_yticks(range(len(comps)), comps)
    for (i, j), v in np.ndenumerate(data):
        ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="flagged fraction")
    ax.set_title(title)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
    return path


def write_report(records: Sequence[dict[str, Any]], settings: Any, out: Path, meta: dict[str, Any],
                 criteria: HoleCriteria = HoleCriteria()) -> dict[str, Any]:
    """Flag ``records`` and write screen.csv, screen.json, flagged.extxyz and screen.png into ``out``."""
    rows, stats = flag_records(records, criteria)
    atomic_write(out / "screen.csv", lambda p: p.write_text(_csv(rows)))
    atomic_write(out / "flagged.extxyz", lambda p: p.write_text(_extxyz([r for r in rows if r["flagged"]])))
    plot = heat_map(stats, out / "screen.png")
    n = len(rows)
    summary = {
        **meta, "n_structures": n, "flagged_fraction": sum(r["flagged"] for r in rows) / n if n else 0.0,
        "failed_fraction": sum(r["error"] is not None for r in rows) / n if n else 0.0,
        "criteria": criteria.__dict__, "compositions": stats,
        "outputs": {k: str(out / k) for k in ("screen.csv", "screen.json", "flagged.extxyz")}
        | ({"screen.png": str(plot)} if plot else {}),
        "structures": [{k: v for k, v in r.items() if k != "structure"} for r in rows],
    }
    write_json(out / "screen.json", summary)
    return summary


def table(summary: dict[str, Any]) -> str:
    """The flagged fractions per composition, as a short text table."""
    lines = [f"{'composition':<14}{'n':>5}{'failed':>8}" + "".join(f"{k:>10}" for k in (*CRITERIA, "any"))]
    for comp, s in summary["compositions"].items():
        lines.append(f"{comp:<14}{s['n']:>5}{s['n_failed']:>8}"
                     + "".join(f"{s[f'{k}_fraction']:>10.0%}" for k in CRITERIA) + f"{s['flagged_fraction']:>10.0%}")
    return "\n".join(lines)
