"""`juncture kv get|put|list|rm`: the project's KV store. Inside a hook, `put` adds to the hook's outputs
file instead, so the value is committed only if the hook succeeds."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..errors import UsageError
from ..state.outputs import KEY, Entry, format_entry, namespace_problem
from ..state.sqlite import Store
from .common import project_from


def run(args: argparse.Namespace) -> int:
    ns = args.ns
    if ns is not None and (problem := namespace_problem(ns)):
        raise UsageError(problem)
    key: str = getattr(args, "key", "")
    if args.kv_command != "list" and not KEY.match(key):
        raise UsageError(f"key {key!r}: letters, digits, _ . - (not starting with a digit)")
    if args.kv_command == "put":
        return _put(args, ns, key)
    with Store(project_from(args).state_dir) as store:
        return _read(args, store, ns, key)


def _read(args: argparse.Namespace, store: Store, ns: str | None, key: str) -> int:
    if args.kv_command == "get":
        item = store.get(ns or "app", key)
        if item is None:
            sys.stderr.write(f"juncture: no key {key!r} in {ns or 'app'}\n")
            return 1
        print("***" if item.secret and not args.reveal else item.value)
        return 0
    if args.kv_command == "rm":
        if not store.remove(ns or "app", key):
            sys.stderr.write(f"juncture: no key {key!r} in {ns or 'app'}\n")
            return 1
        return 0
    items = store.items(ns)
    if args.json:
        print(
            json.dumps(
                [
                    {"ns": i.ns, "key": i.key, "secret": i.secret, "value": "***" if i.secret else i.value}
                    for i in items
                ],
                indent=1,
            )
        )
        return 0
    for item in items:
        value = "***" if item.secret else (item.value or "").replace("\n", "\\n")
        print(f"{item.ns}  {item.key}={value}")
    return 0


def _put(args: argparse.Namespace, ns: str | None, key: str) -> int:
    if args.secret:
        if args.value is not None:
            raise UsageError("a secret is read from standard input, never from the command line")
        value = sys.stdin.read().removesuffix("\n")
    elif args.value is None:
        raise UsageError("kv put KEY VALUE (or kv put --secret KEY, with the value on standard input)")
    else:
        value = args.value
    entry = Entry(ns, key, value, args.secret)
    project = project_from(args)
    prefix = project.config.env_prefix
    outputs = os.environ.get(f"{prefix}OUTPUT")
    if outputs:  # inside a hook: committed with the hook's other outputs, if it succeeds
        if os.environ.get(f"{prefix}OUTPUT_READONLY"):
            sys.stderr.write(f"juncture: kv put {key}: refused, this hook is a read-only check\n")
            return 1
        with open(outputs, "a") as handle:
            handle.write(format_entry(entry))
        return 0
    with Store(project.state_dir) as store:
        store.put([entry], "app")
    return 0
