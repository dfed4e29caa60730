"""Pictures: terminal charts (plain text, Unicode blocks) and optional PNG files through matplotlib.

* :func:`log_bars` — a log-scale bar chart, one bar per label (per-layer gradient norms);
* :func:`heatmap` — a rows × columns shade map of log10 values (layers × steps of training);
* :func:`save_png` — the same data as a PNG (``pip install nnlab[plot]``); a clear
  :class:`~nnlab.errors.NnlabError` names the missing extra.

>>> print(log_bars(["1", "2", "3"], [1e-6, 1e-3, 1.0], width=12))
log10 scale: 1e-06 .. 1e+00 (0.5 decades per █)
1  ▏            1.00e-06
2  ██████       1.00e-03
3  ████████████ 1.00e+00
"""

import math

import numpy as np

from .errors import NnlabError

BLOCKS = " ▏▎▍▌▋▊▉█"
SHADES = " ░▒▓█"


def _axis(values, lo=None, hi=None):
    v = [x for x in np.asarray(values, dtype=np.float64).ravel() if x > 0 and math.isfinite(x)]
    if lo is None:
        lo = math.floor(math.log10(min(v))) if v else -1
    if hi is None:
        hi = math.ceil(math.log10(max(v))) if v else 0
    return lo, (hi if hi > lo else lo + 1)


def bar(value, lo, hi, width):
    """One bar of ``width`` cells for log10(value) on the axis [lo, hi] (eighth-cell resolution);
    '·' for zero, negative or non-finite values."""
    if not (value > 0 and math.isfinite(value)):
        return "·".ljust(width)
    frac = (math.log10(value) - lo) / (hi - lo)
    eighths = max(1, round(min(max(frac, 0.0), 1.0) * width * 8))
    full, rest = divmod(eighths, 8)
    return ("█" * full + (BLOCKS[rest] if rest else "")).ljust(width)


def log_bars(labels, values, width=40, lo=None, hi=None, fmt="{:.2e}"):
    """A log-scale horizontal bar chart, one line per (label, value), value printed after the bar."""
    lo, hi = _axis(values, lo, hi)
    lw = max((len(str(x)) for x in labels), default=0)
    lines = [f"log10 scale: 1e{lo:+03d} .. 1e{hi:+03d} ({(hi - lo) / width:.2g} decades per █)"]
    for label, value in zip(labels, values):
        text = fmt.format(value) if math.isfinite(value) else str(value)
        lines.append(f"{str(label).rjust(lw)}  {bar(value, lo, hi, width)} {text}")
    return "\n".join(lines)


def heatmap(matrix, row_labels=None, max_cols=60, lo=None, hi=None, title=None):
    """A shade map of log10(matrix) (rows × columns, e.g. layers × steps), columns averaged into at
    most ``max_cols`` bins; '·' marks zero/non-finite cells. Darker is larger."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.size == 0:
        return "(no data)"
    n_rows, n_cols = m.shape
    bins = min(n_cols, max_cols)
    edges = np.linspace(0, n_cols, bins + 1).astype(int)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where((m > 0) & np.isfinite(m), np.log10(np.where(m > 0, m, 1.0)), np.nan)
    fin = logs[np.isfinite(logs)]
    lo = math.floor(fin.min()) if lo is None and fin.size else (lo if lo is not None else -1)
    hi = math.ceil(fin.max()) if hi is None and fin.size else (hi if hi is not None else 0)
    hi = hi if hi > lo else lo + 1
    labels = [str(x) for x in (row_labels if row_labels is not None else range(1, n_rows + 1))]
    lw = max(len(x) for x in labels)
    out = [title] if title else []
    out.append(f"log10 shade: ' '=1e{lo:+03d} … '█'=1e{hi:+03d}; '·' zero or non-finite; "
               f"{n_cols} column(s) in {bins} bin(s)")
    for r in range(n_rows):
        cells = []
        for b in range(bins):
            seg = logs[r, edges[b]:max(edges[b + 1], edges[b] + 1)]
            seg = seg[np.isfinite(seg)]
            if seg.size == 0:
                cells.append("·")
                continue
            frac = (float(seg.mean()) - lo) / (hi - lo)
            cells.append(SHADES[min(len(SHADES) - 1, max(0, int(round(frac * (len(SHADES) - 1)))))])
        out.append(f"{labels[r].rjust(lw)} │{''.join(cells)}│")
    return "\n".join(out)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise NnlabError("PNG output needs matplotlib: pip install 'nnlab[plot]'") from None
    return plt


def save_png(path, series, title="", xlabel="layer", ylabel="", logy=True, heat=None):
    """Write a PNG: ``series`` maps a legend label to a list of y values (plotted against 1..n);
    ``heat`` (optional) is a (rows, cols) matrix drawn as a log10 heat map below."""
    plt = _pyplot()
    n_axes = 2 if heat is not None else 1
    fig, axes = plt.subplots(n_axes, 1, figsize=(8, 4 * n_axes), squeeze=False)
    ax = axes[0, 0]
    for label, ys in series.items():
        ys = np.asarray(ys, dtype=np.float64)
        ax.plot(np.arange(1, ys.size + 1), np.where(ys > 0, ys, np.nan) if logy else ys, marker="o",
                markersize=3, label=str(label))
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if series:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if heat is not None:
        h = np.asarray(heat, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            img = np.where((h > 0) & np.isfinite(h), np.log10(np.where(h > 0, h, 1.0)), np.nan)
        im = axes[1, 0].imshow(img, aspect="auto", origin="lower", interpolation="nearest")
        axes[1, 0].set_xlabel("step")
        axes[1, 0].set_ylabel("layer")
        fig.colorbar(im, ax=axes[1, 0], label="log10")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
