"""`juncture history [--stage S] [--json]` and `juncture history RUN_ID [--json] [--html FILE]`."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ..errors import UsageError
from ..render.terminal import format_duration
from ..state.sqlite import Store
from .common import project_from


def run(args: argparse.Namespace) -> int:
    with Store(project_from(args).state_dir) as store:
        return _show(args, store)


def _show(args: argparse.Namespace, store: Store) -> int:
    if args.run_id is None:
        if args.html:
            raise UsageError("--html needs a RUN_ID: the timeline is one run's")
        runs = store.runs(args.stage)
        if args.json:
            print(json.dumps(runs, indent=1))
        elif not runs:
            print("no runs recorded yet" + (f" for stage {args.stage}" if args.stage else ""))
        for each in [] if args.json else runs:
            print(_run_line(each))
        return 0
    found = store.run(args.run_id)
    if found is None:
        raise UsageError(f"no run {args.run_id!r} (juncture history lists them)")
    items = store.run_items(args.run_id)
    if args.html:
        from ..render.timeline import render_timeline

        with open(args.html, "w", encoding="utf-8") as handle:
            handle.write(render_timeline(found, items))
        print(f"wrote {args.html}: {len(items)} hook run(s) and step(s) on a time axis")
        return 0
    if args.json:
        print(json.dumps({"run": found, "items": items}, indent=1))
        return 0
    print(_run_line(found))
    for item in items:
        offset = item["started_at"] - found["started_at"]
        took = (item["ended_at"] or item["started_at"]) - item["started_at"]
        where = f"{item['event'] or item['phase'] or ''}/{item['name']}".lstrip("/")
        code = f" exit {item['exit_code']}" if item["exit_code"] not in (None, 0) else ""
        print(
            f"  +{offset:7.2f}s  [{item['target']}] {where}  {item['status']}{code}  {format_duration(took)}"
        )
        if item["status"] != "ok" and item["output_tail"]:
            for line in item["output_tail"].splitlines()[-10:]:
                print(f"             | {line}")
    return 0


def _run_line(found: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(found["started_at"]))
    took = format_duration(found["ended_at"] - found["started_at"]) if found["ended_at"] else "-"
    return (
        f"{found['id']}  {found['verb']}  {found['stage'] or '-'}  {found['event'] or '-'}  "
        f"{(found['version'] or '-')[:12]}  {found['who'] or '-'}  {when}Z  {found['status']}  {took}"
    )
