"""PNG plots of the report (matplotlib, Agg backend): roofline, per-layer time, area and energy bars,
design-space Pareto front."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hwsim.designs import DESIGNS  # noqa: E402

PLAT_COLORS = ["#7f7f7f", "#9467bd", "#8c564b", "#e377c2"]


def design_color(name: str, default: str = PLAT_COLORS[0]) -> str:
    """A design's plot colour (its record's `color`); `default` for anything else (platforms)."""
    d = DESIGNS.get(name)
    return d.color if d is not None else default


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def roofline(path: Path, data: dict) -> Path:
    """data: {'roofs': [(label, peak_ops, bandwidth)], 'points': [(label, intensity, ops_per_s, marker, color)]}"""
    fig, ax = plt.subplots(figsize=(11, 5.2))
    xs = np.logspace(-1, 4, 200)
    for i, (label, peak, bw) in enumerate(data["roofs"]):
        c = design_color(label.split(" ")[0], PLAT_COLORS[i % len(PLAT_COLORS)])
        ax.plot(xs, np.minimum(peak, xs * bw), color=c, lw=1.6, label=f"{label}: {peak / 1e12:.3g} Tops/s, {bw / 1e9:.3g} GB/s")
    seen = set()
    for label, x, y, marker, color in data["points"]:
        ax.scatter([x], [y], marker=marker, color=color, s=28, zorder=3, label=None if label in seen else label)
        seen.add(label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (ops / DRAM byte, incl. scales and zero points)")
    ax.set_ylabel("ops / s")
    ax.set_title(data.get("title", "roofline"))
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def layer_time(path: Path, layers: list[str], series: dict[str, dict[str, list[float]]]) -> Path:
    """series[phase][design] = per-layer time (us, one instance), phases decode and prefill."""
    phases = list(series)
    fig, axes = plt.subplots(1, len(phases), figsize=(5.5 * len(phases), 4.2))
    axes = np.atleast_1d(axes)
    for ax, ph in zip(axes, phases):
        ds = list(series[ph])
        w = 0.8 / max(1, len(ds))
        x = np.arange(len(layers))
        for i, d in enumerate(ds):
            ax.bar(x + i * w - 0.4 + w / 2, series[ph][d], w, label=d, color=design_color(d, PLAT_COLORS[i % 4]))
        ax.set_xticks(x)
        ax.set_xticklabels([l.split(".")[-1] for l in layers], rotation=30, fontsize=8)
        ax.set_ylabel("time per layer instance (us)")
        ax.set_yscale("log")
        ax.set_title(ph)
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", alpha=0.25)
    return _save(fig, path)


def stacked_panels(path: Path, panels: list[tuple[str, str, dict[str, dict[str, float]]]]) -> Path:
    """One stacked bar chart per panel: (title, y label, {design: {part: value}})."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2))
    axes = np.atleast_1d(axes)
    cmap = plt.get_cmap("tab20")
    for ax, (title, ylab, dat) in zip(axes, panels):
        ds = list(dat)
        parts: list[str] = []
        for d in ds:
            for p in dat[d]:
                if p not in parts:
                    parts.append(p)
        bottom = np.zeros(len(ds))
        for j, p in enumerate(parts):
            vals = np.array([dat[d].get(p, 0.0) for d in ds])
            ax.bar(ds, vals, bottom=bottom, label=p, color=cmap(j % 20))
            bottom += vals
        ax.set_ylabel(ylab)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", alpha=0.25)
    return _save(fig, path)


def pareto(path: Path, rows: list[dict], x: str = "area_mm2", y: str = "prefill_s", title: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 5))
    names = [*DESIGNS, *dict.fromkeys(r.get("design") for r in rows if r.get("design") not in DESIGNS)]
    for i, d in enumerate(names):
        pts = [r for r in rows if r.get("design") == d and "error" not in r]
        if not pts:
            continue
        ax.scatter([r[x] for r in pts], [r[y] for r in pts], color=design_color(d, PLAT_COLORS[i % len(PLAT_COLORS)]), s=18, alpha=0.65, label=d)
    front = sorted([r for r in rows if r.get("pareto")], key=lambda r: r[x])
    if front:
        ax.plot([r[x] for r in front], [r[y] for r in front], "k--", lw=1, label="Pareto front")
        labelled = []
        for r in front:
            if any(abs(np.log10(r[x] / a)) < 0.06 and abs(np.log10(r[y] / b)) < 0.06 for a, b in labelled):
                continue
            labelled.append((r[x], r[y]))
            ax.annotate(f"{r['design']} w{r['bits']}{r['act']} {r['M']}x{r['N']}", (r[x], r[y]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("array area (mm^2)")
    ax.set_ylabel(y.replace("_s", " time (s)"))
    ax.set_title(title or "design space", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7)
    return _save(fig, path)
