"""Line charts as inline SVG, drawn on the server: no JavaScript and nothing fetched from the internet."""

from __future__ import annotations

from html import escape

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
WIDTH, HEIGHT, PAD = 640, 260, 40


def line_chart(series: dict[str, list[tuple[float, float]]], markers: list[tuple[float, str]], title: str) -> str:
    """Scores in [0, 1] against x (RL step); `markers` are vertical lines (a release at a step) with labels."""
    xs = [x for points in series.values() for x, _ in points] + [x for x, _ in markers]
    if not xs:
        return (
            f'<svg role="img" aria-label="{escape(title)}" width="{WIDTH}" height="40"><text x="4" y="24">'
            f"{escape(title)}: nothing yet</text></svg>"
        )
    low, high = min(xs), max(xs)
    span = (high - low) or 1.0

    def px(x: float) -> float:
        return PAD + (x - low) / span * (WIDTH - 2 * PAD)

    def py(y: float) -> float:
        return HEIGHT - PAD - max(0.0, min(1.0, y)) * (HEIGHT - 2 * PAD)

    parts = [
        f'<svg role="img" aria-label="{escape(title)}" width="{WIDTH}" height="{HEIGHT + 20 * len(series)}"'
        f' xmlns="http://www.w3.org/2000/svg" font-size="11">',
        f'<text x="{PAD}" y="16" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{PAD}" y1="{py(0)}" x2="{WIDTH - PAD}" y2="{py(0)}" stroke="#888"/>',
        f'<line x1="{PAD}" y1="{py(0)}" x2="{PAD}" y2="{py(1)}" stroke="#888"/>',
        *(f'<text x="4" y="{py(v) + 4}">{v:.1f}</text>' for v in (0.0, 0.5, 1.0)),
        f'<text x="{PAD}" y="{py(0) + 16}">step {low:g}</text>',
        f'<text x="{WIDTH - PAD - 50}" y="{py(0) + 16}">step {high:g}</text>',
    ]
    for x, label in markers:
        parts.append(
            f'<line x1="{px(x)}" y1="{py(0)}" x2="{px(x)}" y2="{py(1)}" stroke="#bbb" stroke-dasharray="3,3"/>'
        )
        parts.append(f'<text x="{px(x) + 2}" y="{py(1) + 10}">{escape(label)}</text>')
    for i, (name, points) in enumerate(sorted(series.items())):
        color = COLORS[i % len(COLORS)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(points))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        parts += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>' for x, y in points]
        parts.append(f'<text x="{PAD}" y="{HEIGHT + 20 * i}" fill="{color}">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
