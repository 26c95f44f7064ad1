#!/usr/bin/env python3
"""Draws a soak CSV (t_s, rss_kib, fds, cpu_pct, connections[, lag_p99_ms]) as an SVG: one panel
per series, sharing the time axis. Standard library only.

  chart.py SOAK.csv OUT.svg "title"
"""
import csv
import sys

W, PANEL_H, PAD_L, PAD_R, PAD_T, GAP = 760, 110, 70, 20, 34, 26
SERIES = [
    ("rss_kib", "server RSS (MiB)", 1 / 1024, "#1f77b4"),
    ("fds", "open fds", 1, "#2ca02c"),
    ("cpu_pct", "server CPU (%)", 1, "#d62728"),
    ("connections", "connections", 1, "#9467bd"),
    ("lag_p99_ms", "delivery lag p99, healthy subscribers (ms)", 1, "#ff7f0e"),
]


def main():
    src, out, title = sys.argv[1], sys.argv[2], sys.argv[3]
    rows = list(csv.DictReader(open(src)))
    if not rows:
        sys.exit("chart.py: no samples")
    t = [float(r["t_s"]) for r in rows]
    t_max = max(t[-1], 1.0)
    # A series is drawn if it has a sample; a row without one (the lag before the first
    # second of publishing) leaves a gap rather than a zero.
    series = [s for s in SERIES if any(r.get(s[0]) for r in rows)]
    h = PAD_T + len(series) * (PANEL_H + GAP) + 20
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="sans-serif" font-size="11">',
        f'<rect width="{W}" height="{h}" fill="white"/>',
        f'<text x="{PAD_L}" y="20" font-size="14">{title}</text>',
    ]
    plot_w = W - PAD_L - PAD_R
    for k, (key, label, scale, colour) in enumerate(series):
        y0 = PAD_T + k * (PANEL_H + GAP)
        samples = [(ti, float(r[key]) * scale) for ti, r in zip(t, rows) if r.get(key)]
        vals = [v for _, v in samples]
        lo, hi = 0.0, max(max(vals), 1e-9) * 1.1
        pts = " ".join(
            f"{PAD_L + plot_w * ti / t_max:.1f},{y0 + PANEL_H - PANEL_H * (v - lo) / (hi - lo):.1f}"
            for ti, v in samples
        )
        svg += [
            f'<rect x="{PAD_L}" y="{y0}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#ccc"/>',
            f'<text x="{PAD_L}" y="{y0 - 4}">{label}: min {min(vals):.1f}, max {max(vals):.1f}, last {vals[-1]:.1f}</text>',
            f'<text x="{PAD_L - 6}" y="{y0 + 10}" text-anchor="end">{hi:.0f}</text>',
            f'<text x="{PAD_L - 6}" y="{y0 + PANEL_H}" text-anchor="end">0</text>',
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{pts}"/>',
        ]
    y = PAD_T + len(series) * (PANEL_H + GAP) + 4
    svg += [
        f'<text x="{PAD_L}" y="{y}">0 s</text>',
        f'<text x="{W - PAD_R}" y="{y}" text-anchor="end">{t_max:.0f} s</text>',
        "</svg>",
    ]
    open(out, "w").write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
