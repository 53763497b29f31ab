"""Hook outputs (`$JUNCTURE_OUTPUT`): what is committed to the KV store and when, how values reach later
hooks of the run, read-only checks, and the masking of secrets wherever a hook's output goes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ProjectDir
from juncture.state.outputs import Entry
from juncture.state.sqlite import Store

JUNCTURE = f'"{sys.executable}" -m juncture'  # the CLI as a hook calls it
STORED = "stored-s3cret-from-kv"
OWN = "own-s3cret-from-the-hook"


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _store(project: ProjectDir) -> dict[tuple[str, str], object]:
    """(namespace, key) -> value of every entry in the project's real store, secrets opened as
    ("secret", value). Read in this process: the CLI itself is tested in test_kv.py."""
    store = Store(str(project.root / ".juncture"))
    try:
        return {
            (item.ns, item.key): ("secret", item.value) if item.secret else item.value
            for item in store.items(open_secrets=True)
        }
    finally:
        store.close()


def _json_lines(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines()]


def _read_env(path: Path) -> dict[str, str]:
    return dict(item.split("=", 1) for item in path.read_text().split("\0") if item)


def test_each_local_hook_gets_a_fresh_private_outputs_file_named_by_the_prefix(
    project: ProjectDir, tmp_path: Path
) -> None:
    project.config("app: shop\nenv_prefix: KAMAL_\n")
    for name in ("10-a", "20-b"):
        project.hook(
            "ev",
            name,
            f"""\
            #!/bin/sh
            env -0 > {tmp_path}/{name}.env
            stat -c '%a %s' "$KAMAL_OUTPUT" > {tmp_path}/{name}.file
            stat -c '%a' "$(dirname "$KAMAL_OUTPUT")" > {tmp_path}/{name}.dir
            echo "FROM_{name[-1]}=x" >> "$KAMAL_OUTPUT"
            """,
        )
    _ok(project.run("fire", "ev"))
    first, second = _read_env(tmp_path / "10-a.env"), _read_env(tmp_path / "20-b.env")
    assert first["KAMAL_OUTPUT"] != second["KAMAL_OUTPUT"]
    for name in ("10-a", "20-b"):
        assert (tmp_path / f"{name}.file").read_text().split() == ["600", "0"]  # private and empty
        assert (tmp_path / f"{name}.dir").read_text().split() == ["700"]
    assert not Path(first["KAMAL_OUTPUT"]).parent.exists()  # removed when the run ended
    assert _store(project) == {("app", "FROM_a"): "x", ("app", "FROM_b"): "x"}


def test_kv_put_inside_a_hook_finds_the_outputs_file_by_the_project_prefix(project: ProjectDir) -> None:
    project.config("app: shop\nenv_prefix: KAMAL_\n")
    project.hook("ev", "10-put", f"#!/bin/sh\n{JUNCTURE} kv put VIA_CLI yes\n")
    _ok(project.run("fire", "ev"))
    assert _store(project) == {("app", "VIA_CLI"): "yes"}


def test_outputs_of_a_successful_hook_are_committed(project: ProjectDir) -> None:
    project.hook(
        "ev",
        "10-write",
        """\
        #!/bin/sh
        cat >> "$JUNCTURE_OUTPUT" <<'EOF'
        URL=http://shop.example/a=b
        secret TOKEN=tok-123456
        @stage:production REPLICAS=3
        @job:web secret WEB_KEY=k-987654

        EMPTY=
        EOF
        """,
    )
    _ok(project.run("fire", "ev"))
    assert _store(project) == {
        ("app", "URL"): "http://shop.example/a=b",
        ("app", "TOKEN"): ("secret", "tok-123456"),
        ("stage:production", "REPLICAS"): "3",
        ("job:web", "WEB_KEY"): ("secret", "k-987654"),
        ("app", "EMPTY"): "",
    }


def test_outputs_of_a_run_with_a_stage_go_to_that_stage(project: ProjectDir, tmp_path: Path) -> None:
    project.config(f"app: shop\nstages:\n  production:\n    deploy_to: {tmp_path}/target\n")
    project.hook(
        "ev",
        "10-write",
        """\
        #!/bin/sh
        echo REPLICAS=3 >> "$JUNCTURE_OUTPUT"
        echo "@app REGION=eu" >> "$JUNCTURE_OUTPUT"
        """,
    )
    _ok(project.run("fire", "ev", "--stage", "production"))
    assert _store(project) == {("stage:production", "REPLICAS"): "3", ("app", "REGION"): "eu"}


def test_failed_hook_commits_nothing_and_names_what_was_not_stored(project: ProjectDir) -> None:
    project.hook(
        "ev",
        "10-fail",
        """\
        #!/bin/sh
        echo URL=http://x >> "$JUNCTURE_OUTPUT"
        echo "secret TOKEN=tok-123456" >> "$JUNCTURE_OUTPUT"
        exit 1
        """,
    )
    result = project.run("fire", "ev")
    assert result.returncode == 1
    assert "juncture: the hook did not succeed: not stored: URL, TOKEN" in result.stdout
    assert _store(project) == {}


def test_timed_out_hook_commits_nothing(project: ProjectDir) -> None:
    project.config("app: shop\nevents:\n  ev: {timeout: 0.3, grace: 0.1}\n")
    project.hook(
        "ev",
        "10-slow",
        """\
        #!/bin/sh
        echo URL=http://x >> "$JUNCTURE_OUTPUT"
        exec sleep 30
        """,
    )
    result = project.run("fire", "ev", "--json")
    assert result.returncode == 1
    events = _json_lines(result.stdout)
    assert [e["status"] for e in events if e["type"] == "hook-end"] == ["timeout"]
    said = [e["line"] for e in events if e["type"] == "hook-output"]
    assert "juncture: the hook did not succeed: not stored: URL" in said
    assert _store(project) == {}


def test_malformed_line_fails_the_hook_naming_the_line_and_stores_nothing(project: ProjectDir) -> None:
    project.hook(
        "ev",
        "10-bad",
        """\
        #!/bin/sh
        echo GOOD=1 >> "$JUNCTURE_OUTPUT"
        echo "this line has no equals sign" >> "$JUNCTURE_OUTPUT"
        echo ALSO_GOOD=2 >> "$JUNCTURE_OUTPUT"
        """,
    )
    project.hook("ev", "20-after", '#!/bin/sh\necho AFTER=3 >> "$JUNCTURE_OUTPUT"\n')
    result = project.run("fire", "ev")
    assert result.returncode == 1, result.stdout
    assert "juncture: outputs file line 2: " in result.stdout
    assert "; nothing was stored" in result.stdout
    (line,) = [line for line in result.stdout.splitlines() if "ev/10-bad  " in line]
    assert "succeeded" not in line, line  # the hook is marked failed, and said to be
    assert "10-bad" in result.stderr
    assert "succeeded" not in result.stderr, result.stderr
    assert _store(project) == {}  # the failure aborted the event: 20-after did not run


def test_unterminated_heredoc_names_its_first_line_and_stores_nothing(project: ProjectDir) -> None:
    project.hook(
        "ev",
        "10-bad",
        """\
        #!/bin/sh
        printf 'GOOD=1\\nNOTES<<END\\nnever ended\\n' >> "$JUNCTURE_OUTPUT"
        """,
    )
    result = project.run("fire", "ev")
    assert result.returncode == 1
    assert "juncture: outputs file line 2: " in result.stdout
    assert _store(project) == {}


def test_heredoc_value_of_several_lines_is_stored_intact(project: ProjectDir) -> None:
    project.hook(
        "ev",
        "10-cert",
        """\
        #!/bin/sh
        cat >> "$JUNCTURE_OUTPUT" <<'EOF'
        CERT<<END_OF_CERT
        -----BEGIN CERTIFICATE-----
          indented line with = and << in it
        END_OF_CERTIFICATE is not the delimiter

        -----END CERTIFICATE-----
        END_OF_CERT
        @job:web secret PEM<<X
        key line 1
        key line 2
        X
        AFTER=plain
        EOF
        """,
    )
    _ok(project.run("fire", "ev"))
    cert = (
        "-----BEGIN CERTIFICATE-----\n"
        "  indented line with = and << in it\n"
        "END_OF_CERTIFICATE is not the delimiter\n"
        "\n"
        "-----END CERTIFICATE-----"
    )
    assert _ok(project.run("kv", "get", "CERT")).stdout == cert + "\n"
    assert _store(project) == {
        ("app", "CERT"): cert,
        ("job:web", "PEM"): ("secret", "key line 1\nkey line 2"),
        ("app", "AFTER"): "plain",
    }


def test_committed_value_reaches_later_hooks_of_the_run_as_var(project: ProjectDir, tmp_path: Path) -> None:
    project.hook("ev", "05-before", f"#!/bin/sh\nenv -0 > {tmp_path}/before.env\n")
    project.hook(
        "ev",
        "10-write",
        f"""\
        #!/bin/sh
        env -0 > {tmp_path}/writer.env
        cat >> "$JUNCTURE_OUTPUT" <<'EOF'
        db.url=postgres://db/shop
        secret TOKEN=tok-123456
        @stage:production PROD_ONLY=1
        @job:web JOB_ONLY=1
        EOF
        """,
    )
    project.hook("ev", "20-read", f"#!/bin/sh\nenv -0 > {tmp_path}/later.env\n")
    _ok(project.run("fire", "ev"))
    later = _read_env(tmp_path / "later.env")
    assert later["JUNCTURE_VAR_DB_URL"] == "postgres://db/shop"
    assert "JUNCTURE_VAR_TOKEN" not in later  # secrets are not exported
    assert "tok-123456" not in (tmp_path / "later.env").read_text()
    assert "JUNCTURE_VAR_PROD_ONLY" not in later  # this run has no stage
    assert "JUNCTURE_VAR_JOB_ONLY" not in later
    for earlier in ("before", "writer"):
        assert "JUNCTURE_VAR_DB_URL" not in _read_env(tmp_path / f"{earlier}.env")


def test_value_of_a_stage_run_reaches_later_hooks_from_app_and_that_stage(
    project: ProjectDir, tmp_path: Path
) -> None:
    project.config(f"app: shop\nstages:\n  production:\n    deploy_to: {tmp_path}/target\n")
    project.hook(
        "ev",
        "10-write",
        """\
        #!/bin/sh
        cat >> "$JUNCTURE_OUTPUT" <<'EOF'
        REPLICAS=3
        @app REGION=eu
        @stage:staging OTHER_STAGE=1
        EOF
        """,
    )
    project.hook("ev", "20-read", f"#!/bin/sh\nenv -0 > {tmp_path}/later.env\n")
    _ok(project.run("fire", "ev", "--stage", "production"))
    later = _read_env(tmp_path / "later.env")
    assert later["JUNCTURE_VAR_REPLICAS"] == "3"
    assert later["JUNCTURE_VAR_REGION"] == "eu"
    assert "JUNCTURE_VAR_OTHER_STAGE" not in later


def test_deploy_commits_to_its_stage_and_values_reach_hooks_of_later_events(
    project: ProjectDir, tmp_path: Path
) -> None:
    (project.root / "app").mkdir()
    (project.root / "app" / "index.html").write_text("<h1>shop</h1>\n")
    project.config(f"app: shop\nsource: app\nstages:\n  production:\n    deploy_to: {tmp_path}/target\n")
    project.hook(
        "deploy:updated",
        "10-write",
        """\
        #!/bin/sh
        echo BUILT=yes >> "$JUNCTURE_OUTPUT"
        echo "secret DEPLOY_TOKEN=deploy-s3cret-token" >> "$JUNCTURE_OUTPUT"
        """,
    )
    project.hook(
        "post-deploy",
        "10-read",
        '#!/bin/sh\necho "built=$JUNCTURE_VAR_BUILT token=${JUNCTURE_VAR_DEPLOY_TOKEN-unset}"\n'
        "echo leak deploy-s3cret-token\n",
    )
    result = project.run("deploy", "production", "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[10-read] built=yes token=unset" in result.stdout
    assert "[10-read] leak ***" in result.stdout
    assert "deploy-s3cret-token" not in result.stdout + result.stderr
    assert _store(project) == {
        ("stage:production", "BUILT"): "yes",
        ("stage:production", "DEPLOY_TOKEN"): ("secret", "deploy-s3cret-token"),
    }


def test_kv_put_inside_a_hook_is_committed_only_when_the_hook_succeeds(
    project: ProjectDir, tmp_path: Path
) -> None:
    project.hook(
        "ev",
        "10-put",
        f"""\
        #!/bin/sh
        {JUNCTURE} kv put PUT_BY_HOOK yes || exit 9
        echo "$TEST_SECRET" | {JUNCTURE} kv put --secret PUT_SECRET || exit 9
        cp "$JUNCTURE_OUTPUT" {tmp_path}/during
        exit "$TEST_EXIT"
        """,
    )
    env = {**os.environ, "TEST_SECRET": "put-s3cret-value", "TEST_EXIT": "1"}
    failed = project.run("fire", "ev", env=env)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "juncture: the hook did not succeed: not stored: PUT_BY_HOOK, PUT_SECRET" in failed.stdout
    assert "PUT_BY_HOOK=yes" in (tmp_path / "during").read_text()  # it went to the outputs file
    assert _store(project) == {}
    _ok(project.run("fire", "ev", env={**env, "TEST_EXIT": "0"}))
    assert _store(project) == {
        ("app", "PUT_BY_HOOK"): "yes",
        ("app", "PUT_SECRET"): ("secret", "put-s3cret-value"),
    }


def test_health_check_stores_nothing_and_its_output_says_why(project: ProjectDir) -> None:
    project.hook(
        "health_check",
        "10-probe",
        f"""\
        #!/bin/sh
        echo PROBED=1 >> "$JUNCTURE_OUTPUT"
        {JUNCTURE} kv put VIA_CLI 1
        echo "kv put exited $?"
        """,
    )
    result = project.run("fire", "health_check", "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[10-probe] juncture: kv put VIA_CLI: refused, this hook is a read-only check" in result.stdout
    assert "[10-probe] kv put exited 1" in result.stdout
    assert "[10-probe] juncture: health_check is read-only: not stored: PROBED" in result.stdout
    assert _store(project) == {}


# -- masking ------------------------------------------------------------------------------------------


def _leak_env() -> dict[str, str]:
    return {**os.environ, "LEAK": STORED}  # the stored secret, as a hook might be given it


def _leaky_hooks(project: ProjectDir) -> None:
    """A stored secret, a hook that writes its own secret and prints both (one across two writes), and a
    later failing hook that prints the first hook's secret again."""
    store = Store(str(project.root / ".juncture"))
    store.put([Entry(None, "STORED", STORED, secret=True)], "app")
    store.close()
    project.hook(
        "ev",
        "10-leak",
        f"""\
        #!/bin/sh
        echo "secret OWN={OWN}" >> "$JUNCTURE_OUTPUT"
        echo "stored is $LEAK here"
        echo "own is {OWN} here" >&2
        printf 'split {OWN[:6]}'
        sleep 0.1
        printf '{OWN[6:]} done\\n'
        """,
    )
    project.hook("ev", "20-fail", f"#!/bin/sh\necho 'again {OWN} and {STORED}'\nexit 3\n")


def test_own_secret_of_several_lines_is_masked_while_the_hook_runs(project: ProjectDir) -> None:
    project.hook(
        "ev",
        "10-pem",
        """\
        #!/bin/sh
        printf 'secret PEM<<END\\nkey-material-line-one\\nkey-material-line-two\\nEND\\n' >> "$JUNCTURE_OUTPUT"
        printf 'pem: key-material-line-one\\nkey-material-line-two\\n'
        sleep 0.1
        echo finished
        """,
    )
    result = project.run("fire", "ev", "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[10-pem] finished" in result.stdout
    assert "key-material-line" not in result.stdout
    assert _store(project) == {("app", "PEM"): ("secret", "key-material-line-one\nkey-material-line-two")}


def _assert_masked(text: str) -> None:
    assert STORED not in text
    assert OWN not in text
    assert OWN[:6] not in text and OWN[6:] not in text


def test_secrets_are_masked_in_verbose_terminal_output(project: ProjectDir) -> None:
    _leaky_hooks(project)
    result = project.run("fire", "ev", "-v", env=_leak_env())
    assert result.returncode == 1
    _assert_masked(result.stdout + result.stderr)
    assert "[10-leak] stored is *** here" in result.stdout
    assert "[10-leak] own is *** here" in result.stdout
    assert "[10-leak] split *** done" in result.stdout
    assert "[20-fail] again *** and ***" in result.stdout


def test_secrets_are_masked_in_the_failed_hook_output_shown_by_default(project: ProjectDir) -> None:
    _leaky_hooks(project)
    result = project.run("fire", "ev", env=_leak_env())
    assert result.returncode == 1
    _assert_masked(result.stdout + result.stderr)
    assert "again *** and ***" in result.stdout


def test_secrets_are_masked_in_json_lines(project: ProjectDir) -> None:
    _leaky_hooks(project)
    result = project.run("fire", "ev", "--json", env=_leak_env())
    assert result.returncode == 1
    _assert_masked(result.stdout + result.stderr)
    lines = [e["line"] for e in _json_lines(result.stdout) if e["type"] == "hook-output"]
    assert "stored is *** here" in lines
    assert "own is *** here" in lines
    assert "split *** done" in lines
    assert "again *** and ***" in lines


def test_secrets_are_masked_in_log_files(project: ProjectDir) -> None:
    _leaky_hooks(project)
    assert project.run("fire", "ev", env=_leak_env()).returncode == 1
    logs = sorted((project.root / ".juncture" / "logs").rglob("*.log"))
    assert len(logs) == 2
    text = "".join(log.read_text() for log in logs)
    _assert_masked(text)
    assert "stored is *** here" in text
    assert "split *** done" in text
    assert "again *** and ***" in text


def test_secrets_are_masked_in_history_output_tails(project: ProjectDir) -> None:
    _leaky_hooks(project)
    assert project.run("fire", "ev", env=_leak_env()).returncode == 1
    (run,) = json.loads(_ok(project.run("history", "--json")).stdout)
    shown = _ok(project.run("history", run["id"], "--json")).stdout
    _assert_masked(shown)
    tails = [item["output_tail"] for item in json.loads(shown)["items"]]
    assert "own is *** here" in tails[0]
    assert "split *** done" in tails[0]
    assert "again *** and ***" in tails[1]
    text = _ok(project.run("history", run["id"])).stdout  # the failed hook's tail, as text
    _assert_masked(text)
    assert "again *** and ***" in text
