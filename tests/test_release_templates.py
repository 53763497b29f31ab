"""Release templates in local deploys: `.tpl` files rendered during `deploy:updating` from the KV store,
the deploy's facts and the stage's variables; secrets and file modes; failures that name the file and
line and leave no release behind; values written by earlier hooks of the same deploy; and the maand
helpers (`juncture_hook`) that Python hooks use to write them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ProjectDir

STAGE = "production"
PASSWORD = "pw-s3cret-value"

APP_CONF = """\
db_host = {{ var("DB_HOST") }}
fallback = {{ var("ONLY_APP") }}
port = {{ var("PORT", ns="job:api") }}
release = {{ release }}
stage = {{ stage }}
app = {{ app }}
url = {{ url }}
"""


# -- helpers ----------------------------------------------------------------------------------------


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _site(project: ProjectDir, target: Path, files: dict[str, tuple[str, int]]) -> None:
    """juncture.yaml deploying `app/` (the `files`: text and mode) to `target` as stage production."""
    for rel, (text, mode) in files.items():
        path = project.root / "app" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
    project.config(
        "app: shop\n"
        "source: app\n"
        "stages:\n"
        f"  {STAGE}:\n"
        f"    deploy_to: {target}\n"
        "    variables: {url: https://shop.example}\n"
    )


def _deploy(project: ProjectDir) -> subprocess.CompletedProcess[str]:
    return project.run("deploy", STAGE)


def _current(target: Path) -> str | None:
    link = target / "current"
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None


def _lines(path: Path) -> dict[str, str]:
    """`key = value` lines as a dict."""
    return dict(line.split(" = ", 1) for line in path.read_text().splitlines() if " = " in line)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _store(project: ProjectDir) -> dict[tuple[str, str], str]:
    """(namespace, key) -> value as `kv list --json` shows it (secrets as ***)."""
    listed = json.loads(_ok(project.run("kv", "list", "--json")).stdout)
    return {(e["ns"], e["key"]): e["value"] for e in listed}


def _python_hook(body: str) -> str:
    return "#!/usr/bin/env python3\n" + textwrap.dedent(body)


# -- one deploy rendering variables, facts and a secret ------------------------------------------------


@dataclass
class Rendered:
    project: ProjectDir
    target: Path
    done: subprocess.CompletedProcess[str]

    @property
    def release(self) -> Path:
        name = _current(self.target)
        assert name is not None, self.done.stdout + self.done.stderr
        return self.target / "releases" / name


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    """DB_HOST in app and in stage:production, ONLY_APP in app alone, PORT in job:api, the secret PW;
    config/app.conf.tpl (0640) uses the variables and facts, config/secret.conf.tpl (0644) the secret."""
    root = tmp_path_factory.mktemp("rendered")
    project = ProjectDir(root / "proj")
    project.root.mkdir()
    target = root / "target"
    _site(
        project,
        target,
        {
            "index.html": ("<h1>{{ not a template }}</h1>\n", 0o644),
            "config/app.conf.tpl": (APP_CONF, 0o640),
            "config/secret.conf.tpl": ('password = {{ secret("PW") }}\n', 0o644),
        },
    )
    _ok(project.run("kv", "put", "DB_HOST", "app-db"))
    _ok(project.run("kv", "put", "DB_HOST", "stage-db", "--ns", f"stage:{STAGE}"))
    _ok(project.run("kv", "put", "ONLY_APP", "from-app"))
    _ok(project.run("kv", "put", "PORT", "5432", "--ns", "job:api"))
    _ok(project.run("kv", "put", "--secret", "PW", input=PASSWORD + "\n"))
    return Rendered(project, target, _deploy(project))


def test_tpl_files_are_rendered_into_the_release_without_the_suffix(rendered: Rendered) -> None:
    _ok(rendered.done)
    release = rendered.release
    files = sorted(str(p.relative_to(release)) for p in release.rglob("*") if p.is_file())
    assert files == ["config/app.conf", "config/secret.conf", "index.html"]
    assert "{{" not in (release / "config" / "app.conf").read_text()
    assert (release / "index.html").read_text() == "<h1>{{ not a template }}</h1>\n"  # not a .tpl
    assert "2 template(s) rendered" in rendered.done.stdout


def test_var_reads_the_stages_namespace_before_app(rendered: Rendered) -> None:
    _ok(rendered.done)
    values = _lines(rendered.release / "config" / "app.conf")
    assert values["db_host"] == "stage-db"  # stage:production wins over app's app-db
    assert values["fallback"] == "from-app"  # not in the stage's namespace: app's


def test_var_with_ns_reads_that_namespace(rendered: Rendered) -> None:
    _ok(rendered.done)
    assert _lines(rendered.release / "config" / "app.conf")["port"] == "5432"


def test_templates_see_the_deploy_facts_and_the_stage_variables(rendered: Rendered) -> None:
    _ok(rendered.done)
    values = _lines(rendered.release / "config" / "app.conf")
    assert values["release"] == rendered.release.name
    assert values["stage"] == STAGE
    assert values["app"] == "shop"
    assert values["url"] == "https://shop.example"


def test_secret_renders_its_value_and_the_file_is_written_0600(rendered: Rendered) -> None:
    _ok(rendered.done)
    path = rendered.release / "config" / "secret.conf"
    assert path.read_text() == f"password = {PASSWORD}\n"
    assert _mode(path) == 0o600  # the source was 0644


def test_rendered_file_without_secrets_keeps_its_source_mode(rendered: Rendered) -> None:
    _ok(rendered.done)
    assert _mode(rendered.release / "config" / "app.conf") == 0o640


# -- failures ---------------------------------------------------------------------------------------


def test_missing_key_fails_the_deploy_naming_file_line_and_key_and_leaves_no_release(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = tmp_path / "target"
    _site(project, target, {"index.html": ("hi\n", 0o644)})
    _ok(_deploy(project))
    before = _current(target)
    releases_before = sorted(os.listdir(target / "releases"))
    bad = project.root / "app" / "config" / "b.conf.tpl"
    bad.parent.mkdir()
    bad.write_text('ok = 1\nmissing = {{ var("NOPE") }}\n')

    failed = _deploy(project)

    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"config/b.conf.tpl:2: no variable 'NOPE' in stage:{STAGE} or app" in failed.stderr
    assert sorted(os.listdir(target / "releases")) == releases_before  # no new release, no .partial
    assert _current(target) == before


def test_jinja_syntax_error_fails_the_deploy_naming_the_file_and_line(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = tmp_path / "target"
    _site(project, target, {"config/c.conf.tpl": ("a = 1\nb = 2\n{% if %}\nc\n{% endif %}\n", 0o644)})

    failed = _deploy(project)

    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "config/c.conf.tpl:3: template: " in failed.stderr
    assert os.listdir(target / "releases") == []
    assert _current(target) is None


# -- values from hooks of the same deploy -------------------------------------------------------------


@pytest.mark.parametrize("event", ["deploy:starting", "pre-build"])
def test_value_written_by_an_earlier_hook_of_the_deploy_is_visible_to_templates(
    project: ProjectDir, tmp_path: Path, event: str
) -> None:
    target = tmp_path / "target"
    _site(project, target, {"config/app.conf.tpl": ('from_hook = {{ var("FROM_HOOK") }}\n', 0o644)})
    project.hook(
        event, "10-put", '#!/bin/sh\necho "FROM_HOOK=written-by-$JUNCTURE_EVENT" >> "$JUNCTURE_OUTPUT"\n'
    )

    _ok(_deploy(project))

    release = target / "releases" / str(_current(target))
    assert (release / "config" / "app.conf").read_text() == f"from_hook = written-by-{event}\n"


# -- the maand helpers in Python hooks ------------------------------------------------------------------

MAAND_PUTS = """\
from juncture_hook import put_job_secret, put_job_variable

put_job_secret("db_password", "maand-s3cret").raise_for_status()
put_job_variable("db_host", "db.internal").raise_for_status()
put_job_variable("port", "6432", job="api").raise_for_status()
print("all puts done")
"""


def test_maand_helper_in_pre_deploy_stores_the_secret_and_the_variable(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = tmp_path / "target"
    _site(project, target, {"index.html": ("hi\n", 0o644)})
    project.hook("pre_deploy", "10-maand", _python_hook(MAAND_PUTS))

    _ok(_deploy(project))

    store = _store(project)
    assert store[(f"stage:{STAGE}", "db_password")] == "***"
    assert store[(f"stage:{STAGE}", "db_host")] == "db.internal"
    revealed = _ok(project.run("kv", "get", "db_password", "--ns", f"stage:{STAGE}", "--reveal")).stdout
    assert revealed == "maand-s3cret\n"


def test_maand_put_job_variable_with_job_lands_in_the_job_namespace(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = tmp_path / "target"
    _site(project, target, {"index.html": ("hi\n", 0o644)})
    project.hook("pre_deploy", "10-maand", _python_hook(MAAND_PUTS))

    _ok(_deploy(project))

    store = _store(project)
    assert store[("job:api", "port")] == "6432"
    assert (f"stage:{STAGE}", "port") not in store


def test_maand_helper_raise_for_status_raises_in_health_check_and_nothing_is_stored(
    project: ProjectDir,
) -> None:
    project.hook("health_check", "10-maand", _python_hook(MAAND_PUTS))

    failed = project.run("fire", "health_check")

    assert failed.returncode == 1, failed.stdout + failed.stderr
    output = failed.stdout + failed.stderr
    assert "RuntimeError: put db_password: refused, this hook is a read-only check" in output
    assert "all puts done" not in output  # the first put raised: the hook went no further
    assert _store(project) == {}
