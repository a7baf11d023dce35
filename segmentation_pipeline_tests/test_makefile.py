"""The Makefile's instance configuration, run with make as a user runs it (no install is started)."""

import shutil
import subprocess
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(target: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", target, f"DAGSTER_HOME={home}"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_dagster_home_outside_the_repository_gets_the_repositorys_configuration(tmp_path: Path) -> None:
    home = tmp_path / "elsewhere" / "dagster_home"
    assert make("instance-config", home).returncode == 0
    assert (home / "dagster.yaml").read_bytes() == (REPOSITORY / ".dagster_home" / "dagster.yaml").read_bytes()
    assert "max_concurrent_runs" in (home / "dagster.yaml").read_text()


def test_an_operators_own_configuration_is_kept_and_an_empty_one_refused(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    assert make("instance-config", home).returncode == 0
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"
    (home / "dagster.yaml").write_text("")
    refused = make("instance-config", home)
    assert refused.returncode != 0
    assert f"{home / 'dagster.yaml'} is empty: the run queue, pools and run monitoring would be off" in refused.stdout
