"""Pictures: terminal charts (plain text, Unicode blocks) and optional PNG files through matplotlib.

* :func:`log_bars` — a log-scale bar chart, one bar per label (per-layer gradient norms);
* :func:`heatmap` — a rows × columns shade map of log10 values (layers × steps of training);
* :func:`line_plot` — curves on a character grid (linear or log10 y axis), one marker per series;
* :func:`save_png` / :func:`save_panels` — the same data as a PNG (``pip install nnlab[plot]``); a
  clear :class:`~nnlab.errors.NnlabError` names the missing extra (:func:`require_matplotlib`
  checks it up front).

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


MARKERS = "•o+x*#@%"


def line_plot(series, x=None, width=60, height=12, logy=False, title=None, ylabel=""):
    """Curves on a ``height`` × ``width`` character grid: ``series`` maps a label to y values
    (plotted against ``x``, default 1..n); each series draws with its own marker (later ones on
    top); ``logy`` uses a log10 axis (non-positive values skipped). Non-finite values are skipped.

    >>> print(line_plot({"y": [0, 1, 2]}, width=7, height=3))
    2        ┤      •
             │   •
    0        ┤•
             └───────
              1     3
    • y
    """
    items = [(str(k), np.asarray(v, dtype=np.float64).ravel()) for k, v in series.items()]
    pts = []
    for k, (_, ys) in enumerate(items):
        xs = np.arange(1, ys.size + 1, dtype=np.float64) if x is None else np.asarray(x, dtype=np.float64).ravel()
        for xv, yv in zip(xs, ys):
            if not (math.isfinite(xv) and math.isfinite(yv)) or (logy and yv <= 0):
                continue
            pts.append((xv, math.log10(yv) if logy else yv, k))
    if not pts:
        return "(no data)"
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if y1 == y0:
        y0, y1 = y0 - 1.0, y1 + 1.0
    grid = [[" "] * width for _ in range(height)]
    for xv, yv, k in pts:
        col = 0 if x1 == x0 else int(round((xv - x0) / (x1 - x0) * (width - 1)))
        row = int(round((yv - y0) / (y1 - y0) * (height - 1)))
        grid[height - 1 - row][col] = MARKERS[k % len(MARKERS)]

    def ytext(v):
        return f"{10.0 ** v:.3g}" if logy else f"{v:.3g}"

    ticks = {0: ytext(y1), height - 1: ytext(y0)}
    if height >= 5:
        ticks[(height - 1) // 2] = ytext((y0 + y1) / 2)
    lw = max(8, *(len(t) for t in ticks.values()))
    out = [title] if title else []
    if ylabel:
        out.append(ylabel)
    for r in range(height):
        t = ticks.get(r)
        out.append(f"{t.ljust(lw)} ┤{''.join(grid[r])}".rstrip() if t is not None
                   else f"{' ' * lw} │{''.join(grid[r])}".rstrip())
    out.append(f"{' ' * lw} └{'─' * width}")
    xl, xr = f"{x0:g}", f"{x1:g}"
    out.append(f"{' ' * lw}  {xl}{xr.rjust(width - len(xl))}")
    out.append("   ".join(f"{MARKERS[k % len(MARKERS)]} {label}" for k, (label, _) in enumerate(items)))
    return "\n".join(out)


def require_matplotlib():
    """Raise :class:`~nnlab.errors.NnlabError` (one line naming the extra) if matplotlib is missing."""
    _pyplot()


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise NnlabError("PNG output needs matplotlib: pip install 'nnlab[plot]'") from None
    return plt


def _integer_ticks(ax):
    """Layers and steps are counted: no 2.5 on their axis."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


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
    _integer_ticks(ax)
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


_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "x"), ((0, (5, 1, 1, 1)), "d"), ((0, (1, 3)), "v")]


def save_panels(path, panels, title=None):
    """Write a PNG of stacked panels (see :func:`figure`)."""
    plt = _pyplot()
    fig = figure(panels, title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def figure(panels, title=None):
    """A matplotlib figure of stacked panels. Each panel is a dict with ``kind``:

    * ``"lines"``: ``series`` (label -> y values), optional ``x`` (shared x values, default 1..n),
      ``logy``, ``logx``, ``xlabel``, ``ylabel``, ``title``, ``hlines`` (label -> y of a dashed line);
      every series gets its own line style and marker, so series that coincide stay visible;
    * ``"heat"``: ``matrix`` (rows × columns, drawn as log10 unless ``log`` is False), ``xlabel``,
      ``ylabel``, ``title``;
    * ``"bars"``: ``labels``, ``values`` (log scale when ``logy``), ``ylabel``, ``title``.

    ``output_layer=True`` on a panel whose x axis (lines) or rows (heat) are layers marks the last
    layer as the output layer.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.6 * len(panels)), squeeze=False)
    for ax, panel in zip(axes[:, 0], panels):
        kind = panel.get("kind", "lines")
        logy = panel.get("logy", False)
        if kind == "lines":
            xs = panel.get("x")
            series = {k: np.asarray(v, dtype=np.float64) for k, v in panel["series"].items()}
            big = [float(np.max(np.abs(v[np.isfinite(v)]))) for v in series.values() if np.isfinite(v).any()]
            # beyond ~1e300 matplotlib's log axis overflows: plot log10 of the values on a linear axis
            log10_axis = logy and big and max(big) > 1e250
            last_x = None
            for k, (label, ys) in enumerate(series.items()):
                xv = np.arange(1, ys.size + 1) if xs is None else np.asarray(xs, dtype=np.float64)
                if xv.size:
                    last_x = xv[-1] if last_x is None else max(last_x, xv[-1])
                keep = np.isfinite(ys) & ((ys > 0) if logy else True)
                yv = np.where(keep, ys, np.nan)
                if log10_axis:
                    yv = np.log10(yv)
                style, marker = _STYLES[k % len(_STYLES)]
                ax.plot(xv, yv, linestyle=style, marker=marker if ys.size <= 60 else None, markersize=3,
                        markevery=None if ys.size <= 60 else max(1, ys.size // 30), label=str(label))
            for label, yv in panel.get("hlines", {}).items():
                ax.axhline(yv, linestyle="--", linewidth=1, color="gray", label=str(label))
            if panel.get("output_layer") and last_x is not None:
                ax.axvline(last_x, linestyle=":", linewidth=1.2, color="black", label=f"output layer ({last_x:g})")
            if log10_axis:
                panel = {**panel, "ylabel": f"log10 {panel.get('ylabel', '')}".strip()}
            elif logy:
                ax.set_yscale("log")
            if panel.get("logx"):
                ax.set_xscale("log")
            ax.legend(fontsize=7)
        elif kind == "heat":
            h = np.asarray(panel["matrix"], dtype=np.float64)
            log = panel.get("log", True)
            with np.errstate(divide="ignore", invalid="ignore"):
                img = (np.where((h > 0) & np.isfinite(h), np.log10(np.where(h > 0, h, 1.0)), np.nan) if log
                       else np.where(np.isfinite(h), h, np.nan))
            im = ax.imshow(img, aspect="auto", origin="lower", interpolation="nearest",
                           extent=(0.5, img.shape[1] + 0.5, 0.5, img.shape[0] + 0.5))
            fig.colorbar(im, ax=ax, label="log10" if log else "")
            if panel.get("output_layer") and img.shape[0]:
                ax.axhline(img.shape[0] - 0.5, linestyle=":", linewidth=1.2, color="white")
                ax.text(0.6, img.shape[0], " output layer", color="white", fontsize=7, va="center")
        elif kind == "bars":
            vals = np.asarray(panel["values"], dtype=np.float64)
            ax.bar([str(v) for v in panel["labels"]], np.where(np.isfinite(vals), vals, np.nan))
            if logy:
                ax.set_yscale("log")
            ax.tick_params(axis="x", labelsize=7)
        else:
            plt.close(fig)
            raise NnlabError(f"unknown panel kind {kind!r}")
        ax.set_xlabel(panel.get("xlabel", ""))
        if panel.get("xlabel", "") in ("layer", "step"):
            _integer_ticks(ax)
        ax.set_ylabel(panel.get("ylabel", ""))
        ax.set_title(panel.get("title", ""), fontsize=10)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
