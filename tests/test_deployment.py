"""The Docker Compose file validates in every profile (where a compose client is installed)."""

import shutil
import subprocess

import pytest

COMPOSE = (
    ["docker-compose"]
    if shutil.which("docker-compose")
    else ["docker", "compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    else None
)


@pytest.mark.skipif(COMPOSE is None, reason="no docker compose client installed (CI installs docker-compose)")
@pytest.mark.parametrize("profiles", [[], ["ibgateway"], ["scale"], ["ibgateway", "scale"]])
def test_compose_file_validates(profiles):
    args = [arg for p in profiles for arg in ("--profile", p)]
    result = subprocess.run([*COMPOSE, *args, "config", "-q"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
