"""Hook state on SSH hosts: outputs files of remote hooks (private, read back after the hook, committed to
the stage's and the host's namespaces, seen by later hooks there, dropped when the hook fails), and a
`rollout_order` written by a `pre-deploy` hook, which reorders that deploy's batches only.

Every host is a name for the session's loopback sshd (tests/servers.py), so the files a hook writes on
"its host" are on this machine's disk.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from test_fleet_deploy import currents, deploy_project, ok, releases, run
from test_remote import STAGE, configure, fire, host

from conftest import ProjectDir

if TYPE_CHECKING:
    from servers import SshServer

TWO = ("h1", "h2")
THREE = ("h1", "h2", "h3")


def _store(project: ProjectDir) -> dict[tuple[str, str], str]:
    """(namespace, key) -> value as `kv list --json` shows it."""
    listed = json.loads(ok(run(project, "kv", "list", "--json")).stdout)
    return {(e["ns"], e["key"]): e["value"] for e in listed}


# -- outputs of hooks on two hosts ---------------------------------------------------------------------


@dataclass
class RemoteOutputs:
    project: ProjectDir
    out: Path
    ping: subprocess.CompletedProcess[str]
    bad: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def remote_outputs(sshd: SshServer, tmp_path_factory: pytest.TempPathFactory) -> RemoteOutputs:
    """`ping` on h1 and h2: 10-put records its outputs file's mode and writes K_<host> (the stage's
    namespace) and HV (@host:<host>); 20-see records what it gets of them. Then `bad` on both hosts
    writes BAD_<host> and @host:<host> BADH, and exits 3."""
    root = tmp_path_factory.mktemp("remote-outputs")
    out = root / "out"
    out.mkdir()
    project = ProjectDir(root / "proj")
    project.root.mkdir()
    audience = {"audience": "hosts", "timeout": 20}
    configure(project, sshd, [host(name) for name in TWO], {"ping": audience, "bad": audience})
    project.hook(
        "ping",
        "10-put",
        f'#!/bin/sh\nstat -c %a "$JUNCTURE_OUTPUT" > {out}/mode-$JUNCTURE_HOST\n'
        'echo "K_$JUNCTURE_HOST=v-$JUNCTURE_HOST" >> "$JUNCTURE_OUTPUT"\n'
        'echo "@host:$JUNCTURE_HOST HV=hv-$JUNCTURE_HOST" >> "$JUNCTURE_OUTPUT"\n',
    )
    project.hook(
        "ping",
        "20-see",
        '#!/bin/sh\nK=$(eval echo "\\${JUNCTURE_VAR_K_$(echo $JUNCTURE_HOST | tr a-z A-Z)-unset}")\n'
        f'echo "HV=${{JUNCTURE_VAR_HV-unset}} K=$K" > {out}/seen-$JUNCTURE_HOST\n',
    )
    project.hook(
        "bad",
        "10-bad",
        '#!/bin/sh\necho "BAD_$JUNCTURE_HOST=x" >> "$JUNCTURE_OUTPUT"\n'
        'echo "@host:$JUNCTURE_HOST BADH=x" >> "$JUNCTURE_OUTPUT"\nexit 3\n',
    )
    ping = fire(project, "ping")
    bad = fire(project, "bad")
    return RemoteOutputs(project, out, ping, bad)


def test_remote_hook_outputs_file_is_mode_0600_on_the_host(remote_outputs: RemoteOutputs) -> None:
    ok(remote_outputs.ping)
    for name in TWO:
        assert (remote_outputs.out / f"mode-{name}").read_text() == "600\n"


def test_remote_outputs_are_stored_in_the_stage_and_host_namespaces(remote_outputs: RemoteOutputs) -> None:
    ok(remote_outputs.ping)
    store = _store(remote_outputs.project)
    assert {k: v for k, v in store.items() if k[1] in ("K_h1", "K_h2", "HV")} == {
        (f"stage:{STAGE}", "K_h1"): "v-h1",
        (f"stage:{STAGE}", "K_h2"): "v-h2",
        ("host:h1", "HV"): "hv-h1",
        ("host:h2", "HV"): "hv-h2",
    }
    listed = ok(run(remote_outputs.project, "kv", "list")).stdout.splitlines()
    assert f"stage:{STAGE}  K_h1=v-h1" in listed
    assert "host:h2  HV=hv-h2" in listed


def test_later_hook_on_the_same_host_sees_the_values_as_var_variables(remote_outputs: RemoteOutputs) -> None:
    ok(remote_outputs.ping)
    for name in TWO:
        assert (remote_outputs.out / f"seen-{name}").read_text() == f"HV=hv-{name} K=v-{name}\n"


def test_failing_remote_hooks_writes_are_not_stored(remote_outputs: RemoteOutputs) -> None:
    bad = remote_outputs.bad
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "the hook did not succeed: not stored: BAD_h" in bad.stdout
    store = _store(remote_outputs.project)
    assert [k for k in store if k[1].startswith("BAD")] == []


# -- rollout_order from a pre-deploy hook ----------------------------------------------------------------

BATCH = re.compile(r"^\s*batch (\d+)/(\d+): (.*)$")


@dataclass
class Rollouts:
    root: Path
    out: Path
    overridden: subprocess.CompletedProcess[str]
    again: subprocess.CompletedProcess[str]
    invalid: subprocess.CompletedProcess[str]
    before_invalid: dict[str, str | None]
    releases_before_invalid: dict[str, list[str]]


def _batches(done: subprocess.CompletedProcess[str]) -> list[str]:
    """The hosts of each "batch i/n: ..." line of a deploy's output, in order."""
    return [m.group(3) for line in done.stdout.splitlines() if (m := BATCH.match(line))]


def _booted(path: Path) -> list[str]:
    """What the post-app-boot hooks appended: `BATCH_INDEX HOST BATCH_HOSTS ROLLOUT_ORDER` lines."""
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(scope="module")
def rollouts(sshd: SshServer, tmp_path_factory: pytest.TempPathFactory) -> Rollouts:
    """h1, h2, h3, one at a time, configured in the hosts' order. Deployed three times: with a local
    pre-deploy hook writing rollout_order=h3,h1,h2; without it; with it writing h1,h9."""
    root = tmp_path_factory.mktemp("rollout-order")
    out = root / "out"
    out.mkdir()
    project = deploy_project(
        root,
        sshd,
        [host(name) for name in THREE],
        {"post-app-boot": {"audience": "hosts", "timeout": 20}},
        rollout={"max_concurrent": 1},
    )
    project.hook(
        "post-app-boot",
        "10-batch",
        '#!/bin/sh\necho "$JUNCTURE_BATCH_INDEX $JUNCTURE_HOST $JUNCTURE_BATCH_HOSTS $JUNCTURE_ROLLOUT_ORDER"'
        f" >> {out}/booted\n",
    )

    def order_hook(order: str) -> Path:
        return project.hook(
            "pre-deploy",
            "10-order",
            f'#!/bin/sh\necho "$JUNCTURE_HOST" > {out}/pre-deploy-ran-on\n'
            f'echo "rollout_order={order}" >> "$JUNCTURE_OUTPUT"\n',
        )

    hook = order_hook("h3,h1,h2")
    overridden = run(project, "deploy", STAGE)
    (out / "booted").rename(out / "booted-1")
    hook.unlink()
    again = run(project, "deploy", STAGE)
    (out / "booted").rename(out / "booted-2")
    before = currents(root, THREE)
    releases_before = {name: releases(root, name) for name in THREE}
    order_hook("h1,h9")
    invalid = run(project, "deploy", STAGE)
    return Rollouts(root, out, overridden, again, invalid, before, releases_before)


def test_pre_deploy_hook_runs_on_this_machine_in_a_host_deploy(rollouts: Rollouts) -> None:
    ok(rollouts.overridden)
    assert (rollouts.out / "pre-deploy-ran-on").read_text() == "localhost\n"


def test_rollout_order_written_by_a_pre_deploy_hook_sets_the_batch_order(rollouts: Rollouts) -> None:
    ok(rollouts.overridden)
    assert _batches(rollouts.overridden) == ["h3", "h1", "h2"]
    assert _booted(rollouts.out / "booted-1") == [
        "1 h3 h3 h3,h1,h2",
        "2 h1 h1 h3,h1,h2",
        "3 h2 h2 h3,h1,h2",
    ]


def test_next_deploy_without_the_hook_uses_the_configured_order_again(rollouts: Rollouts) -> None:
    ok(rollouts.again)
    assert _batches(rollouts.again) == ["h1", "h2", "h3"]
    assert _booted(rollouts.out / "booted-2") == [
        "1 h1 h1 h1,h2,h3",
        "2 h2 h2 h1,h2,h3",
        "3 h3 h3 h1,h2,h3",
    ]


def test_invalid_rollout_order_fails_the_deploy_naming_unknown_and_missing_hosts(rollouts: Rollouts) -> None:
    invalid = rollouts.invalid
    assert invalid.returncode == 1, invalid.stdout + invalid.stderr
    assert "rollout_order 'h1,h9' is not an order of the stage's hosts" in invalid.stderr
    assert "unknown: h9" in invalid.stderr
    assert "missing: h2, h3" in invalid.stderr


def test_invalid_rollout_order_fails_before_any_host_is_switched(rollouts: Rollouts) -> None:
    assert rollouts.invalid.returncode == 1
    assert _batches(rollouts.invalid) == []
    assert not (rollouts.out / "booted").exists()  # no post-app-boot hook ran
    assert currents(rollouts.root, THREE) == rollouts.before_invalid
    assert all(rollouts.before_invalid.values())
    assert {name: releases(rollouts.root, name) for name in THREE} == rollouts.releases_before_invalid
