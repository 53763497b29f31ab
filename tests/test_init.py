"""`juncture init`: a working project whose samples are inert."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _juncture(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "juncture", *args], cwd=cwd, capture_output=True, text=True)


def test_init_creates_config_and_inert_samples(tmp_path: Path) -> None:
    result = _juncture(tmp_path, "init")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "juncture.yaml").is_file()
    samples = sorted(p.name for p in (tmp_path / ".juncture" / "hooks").rglob("*.sample"))
    assert samples == [
        "10-record.sample",
        "post-deploy.sample",
        "pre-build.sample",
        "pre-connect.sample",
        "pre-deploy.sample",
    ]
    fired = _juncture(tmp_path, "fire", "pre-deploy")
    assert fired.returncode == 0
    assert fired.stdout == "event pre-deploy: no hooks\n"
    check = _juncture(tmp_path, "check")
    assert check.returncode == 0
    assert check.stdout.splitlines()[-1] == "check: 0 error(s), 0 warning(s)"


def test_enabled_sample_runs(tmp_path: Path) -> None:
    _juncture(tmp_path, "init")
    hooks = tmp_path / ".juncture" / "hooks"
    (hooks / "pre-deploy.sample").rename(hooks / "pre-deploy")
    result = _juncture(tmp_path, "fire", "pre-deploy", "-v")
    assert result.returncode == 0
    assert "[pre-deploy] deploying" in result.stdout


def test_init_leaves_existing_files_alone(tmp_path: Path) -> None:
    (tmp_path / "juncture.yaml").write_text("app: mine\n")
    result = _juncture(tmp_path, "init")
    assert result.returncode == 0
    assert "exists  juncture.yaml (left as it is)" in result.stdout
    assert (tmp_path / "juncture.yaml").read_text() == "app: mine\n"


def test_init_keeps_state_logs_and_the_secret_key_out_of_git(tmp_path: Path) -> None:
    result = _juncture(tmp_path, "init")
    assert result.returncode == 0, result.stderr
    ignored = (tmp_path / ".juncture" / ".gitignore").read_text().split()
    assert {"state/", "logs/", "secret.key"} <= set(ignored)
