"""`juncture init`: a juncture.yaml and .juncture/hooks/ with inert *.sample hooks."""

from __future__ import annotations

import argparse
import os
import shutil
import stat

from ..config import CONFIG_NAME

SAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "samples")

CONFIG_TEMPLATE = """\
# juncture: hooks at the junctures of a deployment lifecycle. See the README for every key.
app: {app}

# Hook layers, base first: <event>.d/ directories and flat <event> files in each.
hooks_path: .juncture/hooks

# Prefix of the variables hooks get (KAMAL_ runs Kamal hooks unchanged).
env_prefix: JUNCTURE_

events:
  # An event fired but not declared aborts on the first failing hook and allows 900 s per hook.
  # project-pre-start:
  #   failure: abort        # or continue: report, and still run every remaining hook
  #   timeout: 30           # seconds per hook; then SIGTERM, `grace` seconds later SIGKILL
  #   parallel: 1           # hooks that may run at once
  #   revision: 1           # bump when the variables hooks get change; `juncture check` tells once
  #   fields: [project, runtime]
"""


def run(args: argparse.Namespace) -> int:
    root = os.path.abspath(args.directory or os.curdir)
    if not os.path.isdir(root):
        from ..errors import UsageError

        raise UsageError(f"{root}: not a directory")
    config = os.path.join(root, args.config or CONFIG_NAME)
    _write(config, CONFIG_TEMPLATE.format(app=os.path.basename(root) or "app"), root)
    _write(os.path.join(root, ".juncture", ".gitignore"), "state/\nlogs/\nsecret.key\n", root)
    hooks = os.path.join(root, ".juncture", "hooks")
    for dirpath, _dirs, files in os.walk(SAMPLES):
        target_dir = os.path.join(hooks, os.path.relpath(dirpath, SAMPLES))
        os.makedirs(target_dir, exist_ok=True)
        for name in sorted(files):
            target = os.path.join(target_dir, name)
            if _exists(target, root):
                continue
            shutil.copyfile(os.path.join(dirpath, name), target)
            os.chmod(target, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
            print(f"created {os.path.relpath(target, root)}")
    print("hooks named *.sample do not run: copy one without the suffix to enable it")
    return 0


def _write(path: str, text: str, root: str) -> None:
    if _exists(path, root):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "x", encoding="utf-8") as handle:
        handle.write(text)
    print(f"created {os.path.relpath(path, root)}")


def _exists(path: str, root: str) -> bool:
    if os.path.lexists(path):
        print(f"exists  {os.path.relpath(path, root)} (left as it is)")
        return True
    return False
