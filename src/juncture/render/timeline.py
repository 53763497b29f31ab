"""`history RUN_ID --html`: one run as a self-contained HTML timeline.

Pure HTML and CSS, no script and no external file: the page must open from a mail attachment or a CI
artifact years later. Bars are absolutely positioned in percent of the run's span, so the layout needs no
JS and scales with the window; details show on hover or focus (tab or click a bar), from a CSS tooltip.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from html import escape
from typing import Any

from .terminal import format_duration

__all__ = ["STATUSES", "render_timeline"]

STATUSES = ("ok", "failed", "timeout", "interrupted", "running")

# Nice tick intervals in seconds; the first that leaves at most 8 intervals wins.
_STEPS = (
    *(m * 10.0**e for e in range(-3, 1) for m in (1, 2, 5)),
    10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400,
)  # fmt: skip

_CSS = """
:root { --label: 11rem; --track: 26px; --ok: #2f9e44; --failed: #e03131; --timeout: #f08c00;
  --interrupted: #868e96; --running: #1c7ed6; --unknown: #adb5bd; --ink: #212529; --muted: #6c757d;
  --line: #e9ecef; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto,
  "Liberation Sans", sans-serif; color: var(--ink); background: #fff; }
header { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 14px; margin-bottom: 4px; }
h1 { font-size: 20px; margin: 0; font-weight: 600; }
.pill { color: #fff; border-radius: 999px; padding: 2px 12px; font-weight: 600; font-size: 13px;
  text-transform: uppercase; letter-spacing: .04em; background: var(--c); }
.meta { color: var(--muted); margin: 0 0 14px; display: flex; flex-wrap: wrap; gap: 4px 18px; }
.meta b { color: var(--ink); font-weight: 600; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 0 0 18px; color: var(--muted);
  font-size: 13px; }
.legend span::before { content: ""; display: inline-block; width: 14px; height: 10px; border-radius: 2px;
  margin-right: 6px; vertical-align: -1px; background: var(--c); }
.legend .step::before { background: repeating-linear-gradient(135deg, #495057 0 4px, #adb5bd 4px 7px); }
.chart { position: relative; border: 1px solid var(--line); border-radius: 6px; padding: 0 16px 6px 0; }
.row { display: flex; }
.row + .row { border-top: 1px solid var(--line); }
.label { flex: 0 0 var(--label); padding: 0 10px 0 12px; align-self: center; font-weight: 600;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.lane { position: relative; flex: 1; }
.axis .lane { height: 28px; }
.axis .label, .phases .label { color: var(--muted); font-weight: 400; font-size: 12px; }
.tick { position: absolute; bottom: 5px; transform: translateX(-50%); font-size: 12px; color: var(--muted);
  white-space: nowrap; font-variant-numeric: tabular-nums; }
.tick.first { transform: none; }
.tick.last { transform: translateX(-100%); color: var(--ink); font-weight: 600; }
.phases .lane { height: 58px; }
.phase { position: absolute; top: calc(var(--level) * 18px + 4px); padding: 0 4px; font-size: 12px;
  white-space: nowrap; color: #5f3dc4; border-left: 2px solid #7950f2; line-height: 16px; background: #fff; }
.phase.flip { transform: translateX(-100%); border-left: 0; border-right: 2px solid #7950f2; }
.overlay { position: absolute; top: 0; bottom: 0; left: var(--label); right: 16px; pointer-events: none; }
.grid, .mark { position: absolute; top: 28px; bottom: 0; }
.grid { border-left: 1px solid var(--line); }
.mark { border-left: 2px dashed #9775fa; opacity: .7; }
.target .lane { height: calc(var(--tracks) * var(--track) + 10px); }
.bar { position: absolute; top: calc(var(--t) * var(--track) + 6px); height: calc(var(--track) - 4px);
  min-width: 4px; border-radius: 3px; background: var(--c); color: #fff; font-size: 12px;
  line-height: calc(var(--track) - 4px); outline: 1px solid #fff; cursor: default; }
.bar.step { background: repeating-linear-gradient(135deg, var(--c) 0 8px,
  color-mix(in srgb, var(--c) 78%, #fff) 8px 12px); }
.bar .name { display: block; padding: 0 6px; overflow: hidden; white-space: nowrap; text-overflow: clip; }
.bar:hover, .bar:focus { z-index: 5; outline: 2px solid var(--ink); }
.tip { display: none; position: absolute; top: calc(100% + 6px); left: 0; width: max-content;
  max-width: min(34rem, 80vw); padding: 8px 10px; border-radius: 6px; background: #212529; color: #f1f3f5;
  font-size: 12px; line-height: 1.45; box-shadow: 0 4px 14px rgba(0,0,0,.25); cursor: text; z-index: 10; }
.tip::before { content: ""; position: absolute; left: 0; right: 0; top: -8px; height: 8px; }
.bar.right .tip { left: auto; right: 0; }
.bar:hover .tip, .bar:focus .tip { display: block; }
.tip b { color: #fff; font-size: 13px; }
.tip dl { display: grid; grid-template-columns: auto 1fr; gap: 0 10px; margin: 4px 0 0; }
.tip dt { color: #adb5bd; }
.tip dd { margin: 0; }
.tip pre { margin: 6px 0 0; padding: 6px 8px; background: #000; border-radius: 4px; max-height: 16em;
  overflow: auto; white-space: pre-wrap; word-break: break-all; font: 11px/1.4 ui-monospace,
  "DejaVu Sans Mono", "Liberation Mono", monospace; }
.empty { padding: 28px 12px; color: var(--muted); }
@media (max-width: 720px) { :root { --label: 6rem; } body { padding: 16px; } }
"""
_CSS += "".join(f".{s} {{ --c: var(--{s}); }}\n" for s in (*STATUSES, "unknown"))


def render_timeline(run: dict[str, Any], items: list[dict[str, Any]]) -> str:
    """The HTML page for one run and its hook and step records (the shapes `history --json` prints)."""
    start = min([float(run["started_at"]), *(float(i["started_at"]) for i in items)])
    # A run still going or cut short has no end: the last thing it recorded is the end of the picture.
    ends = [float(run["ended_at"] or start), *(float(i["ended_at"] or i["started_at"]) for i in items)]
    span = max(ends) - start
    end = start + span

    def pct(t: float) -> float:
        return 0.0 if span <= 0 else min(100.0, max(0.0, (t - start) / span * 100))

    title = f"{run['verb']} {run.get('stage') or ''}".strip() + f" · {run['id']}"
    parts = [
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)} · juncture</title>\n<style>{_CSS}</style>\n</head>\n<body>\n",
        _header(run, span),
        _legend(items),
        '<div class="chart">\n',
    ]
    if not items:
        parts.append('<div class="empty">No hooks or steps were recorded for this run.</div>\n</div>\n')
        return "".join([*parts, "</body>\n</html>\n"])

    ticks = _ticks(span)
    phases = _phase_starts(items)
    overlay = [f'<div class="grid" style="left:{pct(start + t):.3f}%"></div>' for t in ticks[1:-1]]
    overlay += [f'<div class="mark" style="left:{pct(t):.3f}%"></div>' for _, t in phases]
    parts.append(f'<div class="overlay">{"".join(overlay)}</div>\n')

    parts.append('<div class="row axis"><div class="label">time</div><div class="lane">')
    for n, t in enumerate(ticks):
        where = "first" if n == 0 else "last" if n == len(ticks) - 1 else ""
        text = _duration(t) if where == "last" else _tick_label(t, span)
        parts.append(f'<span class="tick {where}" style="left:{pct(start + t):.3f}%">{escape(text)}</span>')
    parts.append("</div></div>\n")

    if phases:
        parts.append('<div class="row phases"><div class="label">phases</div><div class="lane">')
        for n, (phase, t) in enumerate(phases):
            # Three staggered levels keep the labels of phases that begin close together apart.
            flip = " flip" if pct(t) > 80 else ""
            parts.append(
                f'<span class="phase{flip}" style="left:{pct(t):.3f}%;--level:{n % 3}">{escape(phase)}</span>'
            )
        parts.append("</div></div>\n")

    by_target: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_target.setdefault(str(item["target"]), []).append(item)
    for target, mine in by_target.items():
        spans = [(float(i["started_at"]), float(i["ended_at"] or end)) for i in mine]
        tracks = _pack(spans)
        parts.append(
            f'<div class="row target"><div class="label" title="{escape(target)}">{escape(target)}</div>'
            f'<div class="lane" style="--tracks:{max(tracks) + 1}">'
        )
        for item, (t0, t1), track in zip(mine, spans, tracks, strict=True):
            parts.append(_bar(item, t0 - start, t1 - t0, pct(t0), pct(t1) - pct(t0), track))
        parts.append("</div></div>\n")
    return "".join([*parts, "</div>\n</body>\n</html>\n"])


def _header(run: dict[str, Any], span: float) -> str:
    status = _status(run.get("status"))
    name = " ".join(str(run[k]) for k in ("verb", "stage") if run.get(k))
    facts = [("run", run["id"])]
    if run.get("event") and run["event"] != run["verb"]:
        facts.append(("event", run["event"]))
    facts += [("version", run.get("version")), ("by", run.get("who"))]
    started = datetime.fromtimestamp(float(run["started_at"]), tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    so_far = " so far" if run.get("ended_at") is None else ""
    facts += [("started", started), ("took", _duration(span) + so_far), ("exit", run.get("exit_code"))]
    meta = "".join(f"<span>{k} <b>{escape(str(v))}</b></span>" for k, v in facts if v is not None)
    return (
        f'<header><h1>{escape(name)}</h1><span class="pill {status}">{escape(str(run.get("status")))}</span>'
        f'</header>\n<div class="meta">{meta}</div>\n'
    )


def _legend(items: list[dict[str, Any]]) -> str:
    keys = "".join(f'<span class="{s}">{s}</span>' for s in STATUSES)
    # Only explain the hatching when there is any: most runs are hooks alone.
    if any(i.get("kind") == "step" for i in items):
        keys += '<span class="step">built-in step (hatched)</span>'
    return f'<div class="legend">{keys}</div>\n'


def _bar(item: dict[str, Any], offset: float, took: float, left: float, width: float, track: int) -> str:
    status = _status(item.get("status"))
    kind = "step" if item.get("kind") == "step" else "hook"
    name = str(item["name"])
    unfinished = item.get("ended_at") is None
    took_text = f"{_duration(took)}+ (no end recorded)" if unfinished else _duration(took)
    facts = [
        ("target", item["target"]),
        ("kind", kind),
        ("event", item.get("event")),
        ("phase", item.get("phase")),
        ("start", f"+{_duration(offset)}"),
        ("took", took_text),
        ("status", item.get("status")),
        ("exit", item.get("exit_code")),
    ]
    rows = "".join(f"<dt>{k}</dt><dd>{escape(str(v))}</dd>" for k, v in facts if v is not None)
    tail = str(item.get("output_tail") or "").rstrip("\n")
    out = f"<pre>{escape(tail)}</pre>" if tail else ""
    # Tooltips of bars in the right part of the chart open leftwards, to stay on the page.
    side = " right" if left > 60 else ""
    return (
        f'<div class="bar {status} {kind}{side}" tabindex="0" data-target="{escape(str(item["target"]))}" '
        f'data-name="{escape(name)}" style="left:min({left:.3f}%, calc(100% - 4px));width:{width:.3f}%;'
        f'--t:{track}"><span class="name">{escape(name)}</span>'
        f'<div class="tip"><b>{escape(name)}</b><dl>{rows}</dl>{out}</div></div>'
    )


def _status(value: object) -> str:
    return str(value) if value in STATUSES else "unknown"


def _phase_starts(items: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """Each distinct phase with the start of its first item, in items order."""
    seen: dict[str, float] = {}
    for item in items:
        if item.get("phase") and item["phase"] not in seen:
            seen[str(item["phase"])] = float(item["started_at"])
    return list(seen.items())


def _pack(spans: list[tuple[float, float]]) -> list[int]:
    """A track per span so that overlapping spans (parallel hooks on one target) sit on separate lines."""
    track_ends: list[float] = []
    tracks = []
    for t0, t1 in spans:
        free = next((n for n, e in enumerate(track_ends) if e <= t0), len(track_ends))
        if free == len(track_ends):
            track_ends.append(t1)
        track_ends[free] = t1
        tracks.append(free)
    return tracks


def _ticks(span: float) -> list[float]:
    """Offsets for the axis: round steps from 0, and the total at the end."""
    if span <= 0:
        return [0.0]
    step = next((s for s in _STEPS if span / s <= 8), span)
    n = math.floor(span / step)
    # A round tick too close to the end would collide with the (wider) end label.
    inner = [k * step for k in range(n + 1) if span - k * step > max(step / 2, span * 0.12)]
    return [*inner, span]


def _tick_label(t: float, span: float) -> str:
    if span < 1:
        return f"{t * 1000:.0f} ms"
    if span < 120:
        return f"{round(t, 3):g} s"
    minutes, seconds = divmod(round(t), 60)
    if minutes < 60:
        return f"{minutes}:{seconds:02d} min"
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d} h"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return format_duration(seconds)  # as the terminal says it
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"
