"""Config tasks: `juncture run`, task hooks, deps, scripts, templating, load-time checks, and the
Kamal / maand hook names and `on:` tasks inside a deploy."""

from __future__ import annotations

import os
import pwd
import textwrap
import time
from pathlib import Path

from conftest import ProjectDir, alive

STAGE = "production"


def configure(project: ProjectDir, tmp_path: Path, body: str, head: str = "") -> Path:
    """juncture.yaml with a production stage deploying `app/` to `tmp_path/target`, then `body`."""
    target = tmp_path / "target"
    app = project.root / "app"
    app.mkdir(exist_ok=True)
    (app / "index.html").write_text("hello\n")
    project.config(
        textwrap.dedent(head)
        + f"app: shop\nsource: app\nstages:\n  {STAGE}: {{deploy_to: {target}}}\n"
        + textwrap.dedent(body)
    )
    return target


def line_of(project: ProjectDir, text: str) -> int:
    """The 1-based line of juncture.yaml that contains `text` (exactly one)."""
    lines = (project.root / "juncture.yaml").read_text().splitlines()
    found = [i + 1 for i, line in enumerate(lines) if text in line]
    assert len(found) == 1, found
    return found[0]


def performer() -> str:
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or pwd.getpwuid(os.getuid()).pw_name
    return f"{user}@{os.uname().nodename}"


def env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


# -- juncture run ---------------------------------------------------------------------------------------


def test_run_orders_before_hooks_deps_body_then_after_hooks(project: ProjectDir, tmp_path: Path) -> None:
    log = tmp_path / "log"
    configure(
        project,
        tmp_path,
        f"""\
        tasks:
          main: {{run: "echo main >> {log}", deps: [dep1, dep2]}}
          dep1: {{run: "echo dep1 >> {log}"}}
          dep2: {{run: "echo dep2 >> {log}"}}
          pre: {{run: "echo pre >> {log}"}}
          post: {{run: "echo post >> {log}"}}
        hooks:
          before: {{main: [pre]}}
          after: {{main: [post]}}
        """,
    )

    result = project.run("run", STAGE, "main")

    assert result.returncode == 0, result.stdout + result.stderr
    assert log.read_text().split() == ["pre", "dep1", "dep2", "main", "post"]


def test_a_dep_needed_twice_runs_once(project: ProjectDir, tmp_path: Path) -> None:
    log = tmp_path / "log"
    configure(
        project,
        tmp_path,
        f"""\
        tasks:
          main: {{run: "echo main >> {log}", deps: [assets, test]}}
          test: {{run: "echo test >> {log}", deps: [assets]}}
          assets: {{run: "echo assets >> {log}"}}
        """,
    )

    result = project.run("run", STAGE, "main")

    assert result.returncode == 0, result.stdout + result.stderr
    assert log.read_text().split() == ["assets", "test", "main"]


def test_after_hooks_are_skipped_when_the_task_body_fails(project: ProjectDir, tmp_path: Path) -> None:
    log = tmp_path / "log"
    configure(
        project,
        tmp_path,
        f"""\
        tasks:
          main: {{run: "echo main >> {log}; exit 3"}}
          post: {{run: "echo post >> {log}"}}
        hooks:
          after: {{main: [post]}}
        """,
    )

    result = project.run("run", STAGE, "main")

    assert result.returncode == 1
    assert log.read_text().split() == ["main"]
    assert "task main" in result.stderr and "exited with code 3" in result.stderr


def test_failing_dep_skips_the_task_body_and_its_after_hooks(project: ProjectDir, tmp_path: Path) -> None:
    log = tmp_path / "log"
    configure(
        project,
        tmp_path,
        f"""\
        tasks:
          main: {{run: "echo main >> {log}", deps: [broken]}}
          broken: {{run: "echo broken >> {log}; exit 1"}}
          post: {{run: "echo post >> {log}"}}
        hooks:
          after: {{main: [post]}}
        """,
    )

    result = project.run("run", STAGE, "main")

    assert result.returncode == 1
    assert log.read_text().split() == ["broken"]


def test_continue_on_error_task_failure_does_not_stop_what_follows(
    project: ProjectDir, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    configure(
        project,
        tmp_path,
        f"""\
        tasks:
          main: {{run: "echo main >> {log}", deps: [flaky]}}
          flaky:
            cmds: ["echo flaky1 >> {log}", "exit 5", "echo flaky3 >> {log}"]
            continue_on_error: true
          post: {{run: "echo post >> {log}"}}
        hooks:
          after: {{main: [post]}}
        """,
    )

    result = project.run("run", STAGE, "main")

    assert result.returncode == 0, result.stdout + result.stderr
    # flaky's own remaining command is skipped; the task it belongs to goes on
    assert log.read_text().split() == ["flaky1", "main", "post"]
    assert "exited with code 5 (continue_on_error)" in result.stdout


def test_cmds_stop_at_the_first_failing_command(project: ProjectDir, tmp_path: Path) -> None:
    log = tmp_path / "log"
    configure(
        project,
        tmp_path,
        f"""\
        tasks:
          steps:
            cmds:
              - echo one >> {log}
              - "false"
              - echo three >> {log}
        """,
    )

    result = project.run("run", STAGE, "steps")

    assert result.returncode == 1
    assert log.read_text().split() == ["one"]
    assert "task steps#2" in result.stderr


def test_unknown_task_name_for_run_exits_2_listing_tasks(project: ProjectDir, tmp_path: Path) -> None:
    configure(project, tmp_path, "tasks:\n  build: {run: 'true'}\n  test: {run: 'true'}\n")

    result = project.run("run", STAGE, "deploy_it")

    assert result.returncode == 2
    assert "no task 'deploy_it'" in result.stderr and "build, test" in result.stderr


# -- scripts --------------------------------------------------------------------------------------------


def test_inline_script_without_shebang_runs_with_sh_or_the_given_interpreter(
    project: ProjectDir, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    configure(
        project,
        tmp_path,
        f"""\
        tasks:
          inline:
            scripts:
              - script: |
                  import sys
                  with open("{out}", "a") as f:
                      print("interpreter", sys.version_info[0], file=f)
                interpreter: python3
              - script: |
                  word=sh
                  echo "plain $word" >> {out}
        """,
    )

    result = project.run("run", STAGE, "inline")

    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_text().splitlines() == ["interpreter 3", "plain sh"]


def test_inline_script_runs_with_its_shebang_interpreter(project: ProjectDir, tmp_path: Path) -> None:
    out = tmp_path / "out"
    configure(
        project,
        tmp_path,
        f"""\
        tasks:
          inline:
            scripts:
              - script: |
                  #!/usr/bin/env python3
                  import sys
                  open("{out}", "a").write(f"python {{sys.version_info[0]}}\\n")
              - script: |
                  #!/bin/bash
                  echo "bash ${{BASH_VERSINFO[0]:+yes}}" >> {out}
        """,
    )

    result = project.run("run", STAGE, "inline")

    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_text().splitlines() == ["python 3", "bash yes"]


def test_script_files_without_shebang_pick_interpreter_by_extension(
    project: ProjectDir, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    tools = project.root / "tools"
    tools.mkdir()
    (tools / "report.py").write_text(
        f"import sys\nopen({str(out)!r}, 'a').write(f'py {{sys.version_info[0]}}\\n')\n"
    )
    (tools / "step.sh").write_text(f'word=sh\necho "$word $0" >> {out}\n')
    for script in tools.iterdir():
        script.chmod(0o644)  # not executable: the interpreter runs it
    configure(
        project,
        tmp_path,
        """\
        tasks:
          files:
            scripts: [{path: tools/report.py}, {path: tools/step.sh}]
        """,
    )

    result = project.run("run", STAGE, "files")

    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_text().splitlines() == ["py 3", f"sh {tools / 'step.sh'}"]


def test_task_timeout_kills_the_command(project: ProjectDir, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    configure(
        project,
        tmp_path,
        f"""\
        tasks:
          slow: {{run: "echo $$ > {pid_file}; exec sleep 30", timeout: 1}}
        """,
    )

    began = time.monotonic()
    result = project.run("run", STAGE, "slow")
    took = time.monotonic() - began

    assert result.returncode != 0
    assert took < 15, f"took {took:.1f} s"
    assert "timed out after 1 s" in result.stderr
    assert not alive(int(pid_file.read_text()))


# -- templating and directories -------------------------------------------------------------------------


def test_env_and_dir_are_rendered_from_templates(project: ProjectDir, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (project.root / "work" / STAGE).mkdir(parents=True)
    target = tmp_path / "target"
    project.config(
        f"""\
        app: shop
        stages:
          {STAGE}:
            deploy_to: {target}
            variables: {{region: eu-west}}
        tasks:
          show:
            run: echo "$WHERE $(pwd -P)" > {out}
            dir: "work/{{{{ stage }}}}"
            env: {{WHERE: "{{{{ app }}}}/{{{{ stage }}}}/{{{{ region }}}}/{{{{ current_path }}}}"}}
        """
    )

    result = project.run("run", STAGE, "show")

    assert result.returncode == 0, result.stdout + result.stderr
    where, cwd = out.read_text().split()
    assert where == f"shop/{STAGE}/eu-west/{target / 'current'}"
    assert cwd == os.path.realpath(project.root / "work" / STAGE)


def test_run_default_dir_is_project_root_then_the_current_release(
    project: ProjectDir, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    target = configure(project, tmp_path, f"tasks:\n  where: {{run: 'pwd -P >> {out}'}}\n")

    before = project.run("run", STAGE, "where")
    deployed = project.run("deploy", STAGE)
    after = project.run("run", STAGE, "where")

    assert before.returncode == 0 and deployed.returncode == 0 and after.returncode == 0
    assert out.read_text().splitlines() == [
        os.path.realpath(project.root),
        os.path.realpath(target / "current"),
    ]
    assert Path(os.path.realpath(target / "current")).parent == target / "releases"


def test_undefined_template_name_exits_2_naming_the_key(project: ProjectDir, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    configure(
        project,
        tmp_path,
        f"""\
        tasks:
          greet: {{run: "touch {ran}; echo {{{{ no_such_name }}}}"}}
        """,
    )

    result = project.run("run", STAGE, "greet")

    assert result.returncode == 2
    assert f"juncture.yaml:{line_of(project, 'greet:')}:" in result.stderr
    assert "At key: tasks ==> At key: greet =====> run:" in result.stderr
    assert "'no_such_name' is undefined" in result.stderr
    assert not ran.exists()


# -- load-time checks -----------------------------------------------------------------------------------


def test_cycle_through_deps_is_rejected_at_load_with_the_cycle_path(
    project: ProjectDir, tmp_path: Path
) -> None:
    configure(
        project,
        tmp_path,
        """\
        tasks:
          fine: {run: "true"}
          a: {run: "true", deps: [b]}
          b: {run: "true", deps: [a]}
        """,
    )

    result = project.run("run", STAGE, "fine")  # an unrelated task: the whole config is rejected

    assert result.returncode == 2
    assert f"juncture.yaml:{line_of(project, '  b: ')}:" in result.stderr
    assert "At key: tasks ==> At key: b ==> At key: deps =====> 0:" in result.stderr
    assert "dependency cycle: a -> b -> a" in result.stderr


def test_cycle_through_task_hooks_is_rejected_at_load_with_the_cycle_path(
    project: ProjectDir, tmp_path: Path
) -> None:
    configure(
        project,
        tmp_path,
        """\
        tasks:
          a: {run: "true", deps: [b]}
          b: {run: "true"}
        hooks:
          after:
            b: [a]
        """,
    )

    result = project.run("run", STAGE, "b")

    assert result.returncode == 2
    assert f"juncture.yaml:{line_of(project, 'b: [a]')}:" in result.stderr
    assert "At key: hooks ==> At key: after ==> At key: b =====> 0:" in result.stderr
    assert "dependency cycle: a -> b -> a" in result.stderr


def test_check_reports_a_task_cycle(project: ProjectDir, tmp_path: Path) -> None:
    configure(
        project,
        tmp_path,
        """\
        tasks:
          a: {run: "true"}
          b: {run: "true", deps: [a]}
        hooks:
          before:
            a: [b]
        """,
    )

    result = project.run("check")

    assert result.returncode == 2
    assert f"juncture.yaml:{line_of(project, 'deps: [a]')}:" in result.stderr
    assert "dependency cycle: a -> b -> a" in result.stderr


def test_unknown_task_in_deps_is_rejected_with_file_line_and_key(project: ProjectDir, tmp_path: Path) -> None:
    configure(
        project,
        tmp_path,
        """\
        tasks:
          build: {run: "true"}
          release:
            run: "true"
            deps: [biuld]
        """,
    )

    result = project.run("run", STAGE, "build")

    assert result.returncode == 2
    assert f"juncture.yaml:{line_of(project, 'deps: [biuld]')}:" in result.stderr
    assert "At key: tasks ==> At key: release ==> At key: deps =====> 0:" in result.stderr
    assert "unknown task 'biuld' (did you mean 'build'?)" in result.stderr


def test_unknown_task_in_hooks_is_rejected_with_file_line_and_key(
    project: ProjectDir, tmp_path: Path
) -> None:
    configure(
        project,
        tmp_path,
        """\
        tasks:
          migrate: {run: "true"}
        hooks:
          after:
            deploy:updated: [migrate, notify]
        """,
    )

    result = project.run("check")

    assert result.returncode == 2
    assert f"juncture.yaml:{line_of(project, 'deploy:updated:')}:" in result.stderr
    assert "At key: hooks ==> At key: after ==> At key: deploy:updated =====> 1:" in result.stderr
    assert "unknown task 'notify'" in result.stderr


def test_unknown_hook_key_is_rejected(project: ProjectDir, tmp_path: Path) -> None:
    configure(
        project,
        tmp_path,
        """\
        tasks:
          migrate: {run: "true"}
        hooks:
          before:
            deploy:updatd: [migrate]
        """,
    )

    result = project.run("run", STAGE, "migrate")

    assert result.returncode == 2
    assert f"juncture.yaml:{line_of(project, 'deploy:updatd:')}:" in result.stderr
    assert "'deploy:updatd' is not a phase, a task or a known event" in result.stderr


# -- tasks and other tools' hook names inside a deploy --------------------------------------------------


def test_continue_on_error_task_failing_in_a_deploy_does_not_fail_the_deploy(
    project: ProjectDir, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    target = configure(
        project,
        tmp_path,
        f"""\
        tasks:
          warm_cache: {{run: "echo warm >> {log}; exit 1", continue_on_error: true}}
          migrate: {{run: "echo migrate >> {log}"}}
        hooks:
          after: {{deploy:updated: [warm_cache, migrate]}}
        """,
    )

    result = project.run("deploy", STAGE)

    assert result.returncode == 0, result.stdout + result.stderr
    assert log.read_text().split() == ["warm", "migrate"]
    assert os.path.islink(target / "current")
    assert "task warm_cache  exited with code 1 (continue_on_error)" in result.stdout


def test_kamal_flat_hooks_get_kamal_variables_before_build_and_after_the_swap(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = configure(project, tmp_path, "", head="hooks_path: .kamal/hooks\nenv_prefix: KAMAL_\n")
    for event in ("pre-build", "post-deploy"):
        project.hook(
            event,
            None,
            f"""\
            #!/bin/sh
            {{
              env | grep -E '^(KAMAL|JUNCTURE)_'
              echo "releases=$(ls {target}/releases | wc -l)"
              echo "current=$(readlink {target}/current)"
              [ -e {target}/deploy.lock ] && echo lock=held || echo lock=free
            }} > {tmp_path}/{event}.env
            """,
            layer=".kamal/hooks",
        )

    result = project.run("deploy", STAGE, "--version", "3f9a2c1d0e")

    assert result.returncode == 0, result.stdout + result.stderr
    release = os.path.basename(os.readlink(target / "current"))
    pre_build = env_file(tmp_path / "pre-build.env")
    post_deploy = env_file(tmp_path / "post-deploy.env")
    for env in (pre_build, post_deploy):
        assert env["KAMAL_DESTINATION"] == STAGE
        assert env["KAMAL_VERSION"] == "3f9a2c1d0e"
        assert env["KAMAL_SERVICE_VERSION"] == "shop@3f9a2c1"
        assert env["KAMAL_SERVICE"] == "shop"
        assert env["KAMAL_PERFORMER"] == performer()
        assert env["KAMAL_HOSTS"] == "localhost"
        assert env["KAMAL_RECORDED_AT"]
        assert not [key for key in env if key.startswith("JUNCTURE_") and key != "JUNCTURE_HOOK_TOKEN"]
    assert pre_build["KAMAL_COMMAND"] == "deploy"
    assert post_deploy["KAMAL_COMMAND"] == "deploy"
    # pre-build: before the release exists
    assert (pre_build["releases"], pre_build["current"], pre_build["lock"]) == ("0", "", "held")
    assert "KAMAL_RUNTIME" not in pre_build
    # post-deploy: current points at the new release, the lock is gone, RUNTIME is set
    assert (post_deploy["releases"], post_deploy["current"]) == ("1", f"releases/{release}")
    assert post_deploy["lock"] == "free"
    assert post_deploy["KAMAL_RUNTIME"].isdigit()


def test_kamal_and_maand_hook_names_fire_at_their_points_in_a_deploy(
    project: ProjectDir, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    target = configure(project, tmp_path, "")
    first = project.run("deploy", STAGE)
    assert first.returncode == 0, first.stdout + first.stderr
    old = os.path.basename(os.readlink(target / "current"))
    names = [
        "pre-connect",
        "pre-build",
        "pre_deploy",
        "post_build",
        "pre-deploy",
        "pre-app-boot",
        "post-app-boot",
        "after_allocation_started",
        "health_check",
        "post_deploy",
        "post-deploy",
    ]
    for name in names:
        project.hook(
            name,
            None,
            f"""\
            #!/bin/sh
            [ -d "$JUNCTURE_RELEASE_PATH" ] && built=built || built=unbuilt
            echo "$JUNCTURE_EVENT $built $(basename "$(readlink {target}/current)")" >> {log}
            """,
        )

    result = project.run("deploy", STAGE)

    assert result.returncode == 0, result.stdout + result.stderr
    new = os.path.basename(os.readlink(target / "current"))
    assert new != old
    before_swap = {"pre-connect", "pre-build", "pre_deploy", "post_build", "pre-deploy", "pre-app-boot"}
    unbuilt = {"pre-connect", "pre-build", "pre_deploy"}
    assert log.read_text().splitlines() == [
        f"{name} {'unbuilt' if name in unbuilt else 'built'} {old if name in before_swap else new}"
        for name in names
    ]


def test_task_with_two_on_events_runs_at_both_points(project: ProjectDir, tmp_path: Path) -> None:
    log = tmp_path / "log"
    target = configure(
        project,
        tmp_path,
        f"""\
        tasks:
          mark:
            run: echo "$JUNCTURE_EVENT $(readlink {tmp_path}/target/current) $(pwd -P)" >> {log}
            on: [deploy:updated, deploy:published]
        """,
    )

    result = project.run("deploy", STAGE)

    assert result.returncode == 0, result.stdout + result.stderr
    release = os.path.basename(os.readlink(target / "current"))
    release_dir = os.path.realpath(target / "releases" / release)
    assert log.read_text().splitlines() == [
        f"deploy:updated  {release_dir}",  # before the swap: no current yet
        f"deploy:published releases/{release} {release_dir}",
    ]
