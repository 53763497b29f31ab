"""The HTML timeline of a run: its structure as parsed HTML, and how a real Chromium renders it."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from conftest import _unavailable
from juncture.render.timeline import STATUSES, render_timeline

T0 = 1763712000.123


def make_run(**changes: Any) -> dict[str, Any]:
    run = {
        "id": "20251121T080000Z-ab12cd",
        "verb": "deploy",
        "stage": "production",
        "event": "deploy",
        "version": "abc123",
        "who": "alice@laptop",
        "started_at": T0,
        "ended_at": T0 + 42.5,
        "status": "failed",
        "exit_code": 1,
    }
    return run | changes


def item(
    target: str, name: str, start: float, end: float | None, status: str = "ok", **more: Any
) -> dict[str, Any]:
    record = {
        "target": target,
        "kind": "hook",
        "phase": None,
        "event": None,
        "name": name,
        "started_at": T0 + start,
        "ended_at": None if end is None else T0 + end,
        "status": status,
        "exit_code": 0 if status == "ok" else None,
        "output_tail": "",
    }
    return record | more


def deploy_items() -> list[dict[str, Any]]:
    """A failing deploy to two hosts after a local build: 3 targets, 9 items, 4 phases, every outcome."""
    up, pub = {"phase": "deploy:updating"}, {"phase": "deploy:publishing"}
    return [
        item("local", "build release", 0.0, 6.2, kind="step", phase="deploy:starting"),
        item("local", "00-notify", 6.2, 6.3, phase="deploy:starting", event="deploy:starting"),
        item("web-1", "upload release", 6.6, 12.0, kind="step", **up),
        item("web-2", "upload release", 6.6, 13.1, kind="step", **up),
        item("web-1", "10-migrate", 12.1, 25.0, output_tail="Applied 3 migrations\n", **up),
        item("web-2", "20-assets", 13.2, 20.0, "timeout", output_tail="compiling assets...", **up),
        item("web-1", "30-restart", 25.1, 30.0, "failed", exit_code=1, output_tail="Job failed.", **pub),
        item("web-2", "30-restart", 25.1, None, "interrupted", **pub),
        item("local", "99-page-oncall", 30.2, 42.5, "running", phase="deploy:failed", event="deploy:failed"),
    ]


class Elements(HTMLParser):
    """Every start tag of a page as (tag, attributes), and its text."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def with_class(self, name: str) -> list[dict[str, str]]:
        return [attrs for _, attrs in self.tags if name in attrs.get("class", "").split()]


def style_pct(attrs: dict[str, str], prop: str) -> float:
    match = re.search(rf"{prop}:(?:min\()?([\d.]+)%", attrs["style"])
    assert match, attrs["style"]
    return float(match[1])


def tick_labels(html: str) -> list[str]:
    return re.findall(r'<span class="tick[^"]*"[^>]*>([^<]*)</span>', html)


def test_one_bar_per_item_in_a_row_per_target_with_its_status() -> None:
    items = deploy_items()
    page = Elements(render_timeline(make_run(), items))
    bars = page.with_class("bar")
    assert len(bars) == len(items)
    assert [(b["data-target"], b["data-name"]) for b in bars] == [
        (i["target"], i["name"])
        for i in sorted(items, key=lambda i: ["local", "web-1", "web-2"].index(i["target"]))
    ]
    assert len(page.with_class("target")) == 3
    for bar in bars:
        classes = bar["class"].split()
        assert [s for s in STATUSES if s in classes] == [
            next(
                i["status"]
                for i in items
                if (i["target"], i["name"]) == (bar["data-target"], bar["data-name"])
            )
        ]
    # The legend names every outcome and the hatching of built-in steps.
    legend = render_timeline(make_run(), items).split('class="legend"')[1].split("</div>")[0]
    assert all(f">{s}<" in legend for s in STATUSES) and "built-in step" in legend


def test_a_mark_where_each_phase_begins() -> None:
    page = Elements(render_timeline(make_run(), deploy_items()))
    marks = page.with_class("mark")
    assert len(marks) == 4  # where deploy:starting, :updating, :publishing and :failed begin
    assert [round(style_pct(m, "left"), 1) for m in marks] == [
        round(t / 42.5 * 100, 1) for t in (0, 6.6, 25.1, 30.2)
    ]
    labels = [t for t in page.text if t.startswith("deploy:")][:4]
    assert labels == ["deploy:starting", "deploy:updating", "deploy:publishing", "deploy:failed"]


def test_user_text_is_escaped() -> None:
    evil = make_run(who="<b>mallory</b>", version='v1" onmouseover="x')
    items = [
        item(
            "web&1",
            "<script>alert(1)</script>",
            0,
            1,
            "failed",
            output_tail="</pre><img src=x onerror=alert(1)>",
        ),
        item('"><svg onload=x>', "ok", 1, 2, phase="<i>phase</i>"),
    ]
    html = render_timeline(evil, items)
    page = Elements(html)
    tags = {tag for tag, _ in page.tags}
    assert not tags & {"script", "img", "svg", "i"}
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert not any(name.startswith("on") for _, attrs in page.tags for name in attrs)
    assert [b["data-target"] for b in page.with_class("bar")] == ["web&1", '"><svg onload=x>']


def test_self_contained() -> None:
    html = render_timeline(make_run(), deploy_items())
    assert "http://" not in html and "https://" not in html
    assert not [t for t, a in Elements(html).tags if t in ("link", "script", "img", "iframe") or "src" in a]


def test_hover_details() -> None:
    page = render_timeline(make_run(), deploy_items())
    tip = page.split('data-name="30-restart"')[1].split("</div></div>")[0]
    for fact in (
        "web-1",
        "deploy:publishing",
        "+25.1 s",
        "4.9 s",
        "failed",
        "<dt>exit</dt><dd>1</dd>",
        "Job failed.",
    ):
        assert fact in tip, fact


def test_unfinished_run_ends_at_its_last_record() -> None:
    items = [item("local", "a", 0, 10), item("local", "b", 10, None, "running"), item("web-1", "c", 2, 5)]
    html = render_timeline(make_run(ended_at=None, status="running", exit_code=None), items)
    page = Elements(html)
    running = page.with_class("running")[-1]
    assert style_pct(running, "left") == 100.0  # started at the last moment anything was recorded
    assert tick_labels(html)[-1] == "10.0 s" and "10.0 s so far" in page.text
    # Without a later record an interrupted bar runs to the end of the picture.
    items = [item("local", "a", 0, 8), item("web-1", "b", 2, None, "interrupted")]
    bar = Elements(render_timeline(make_run(ended_at=None, status="interrupted"), items)).with_class(
        "interrupted"
    )[-1]
    assert abs(style_pct(bar, "left") + style_pct(bar, "width") - 100) < 0.01


def test_empty_and_zero_length_runs() -> None:
    empty = Elements(render_timeline(make_run(ended_at=None, status="running"), []))
    assert not empty.with_class("bar") and "No hooks or steps" in "".join(empty.text)
    instant = [item("local", "a", 0, 0), item("local", "b", 0, 0)]
    page = Elements(render_timeline(make_run(ended_at=T0), instant))
    assert [style_pct(b, "left") for b in page.with_class("bar")] == [0.0, 0.0]
    assert [a.get("class") for a in page.with_class("tick")] == ["tick first"]


def test_axis_units_follow_the_span() -> None:
    def ticks(span: float) -> list[str]:
        return tick_labels(render_timeline(make_run(ended_at=T0 + span), [item("local", "a", 0, span)]))

    assert ticks(0.35) == ["0 ms", "50 ms", "100 ms", "150 ms", "200 ms", "250 ms", "300 ms", "350 ms"]
    assert ticks(42.5) == ["0 s", "10 s", "20 s", "30 s", "42.5 s"]
    assert ticks(400) == [
        "0:00 min",
        "1:00 min",
        "2:00 min",
        "3:00 min",
        "4:00 min",
        "5:00 min",
        "6 min 40 s",
    ]


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    if binary is None:
        _unavailable("chromium (Debian package chromium)")
    # As root Chromium needs --no-sandbox; a private profile keeps runs apart and the home clean.
    flags = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={cwd / 'profile'}"]
    return subprocess.run(
        [binary, *flags, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=True
    )


def png_colours(path: Path) -> Counter[tuple[int, int, int]]:
    """How many pixels of each colour an 8-bit RGB or RGBA PNG has, decoded with the standard library alone."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + size]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype in (2, 6), (depth, ctype)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + size
    raw, bpp = zlib.decompress(idat), 3 if ctype == 2 else 4
    stride, prev, colours = width * bpp, bytearray(width * bpp), Counter[tuple[int, int, int]]()
    for y in range(height):
        start = y * (stride + 1)
        kind_of_filter, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride) if kind_of_filter else ():
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind_of_filter == 1:
                line[i] = (line[i] + a) & 255
            elif kind_of_filter == 2:
                line[i] = (line[i] + b) & 255
            elif kind_of_filter == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            else:  # Paeth
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        colours.update(zip(line[0::bpp], line[1::bpp], line[2::bpp], strict=True))
        prev = line
    return colours


def test_renders_in_chromium(tmp_path: Path) -> None:
    html = render_timeline(make_run(), deploy_items())
    page = tmp_path / "timeline.html"
    page.write_text(html)

    dom = chromium("--dump-dom", page.as_uri(), cwd=tmp_path).stdout
    assert len(Elements(dom).with_class("bar")) == 9
    assert len(Elements(dom).with_class("target")) == 3

    shot = tmp_path / "timeline.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,800", page.as_uri(), cwd=tmp_path)
    assert shot.stat().st_size > 10_000
    colours = png_colours(shot)
    assert len(colours) > 100  # text, bars, lines: not a blank page
    # Every outcome's bar was painted in its colour, as the page's own CSS defines it: more pixels of it
    # than a legend swatch (14 x 10) has.
    for status in STATUSES:
        hex_colour = re.search(rf"--{status}: #([0-9a-f]{{6}});", html)
        assert hex_colour, status
        want = tuple(bytes.fromhex(hex_colour[1]))
        near = sum(
            n for c, n in colours.items() if all(abs(x - w) <= 6 for x, w in zip(c, want, strict=True))
        )
        assert near > 1000, (status, near)
