"""deploy/systemd/: the units carry the restart policy and hardening, name real env settings, and pass
``systemd-analyze verify`` (and an offline security score) where systemd-analyze exists."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.settings_env import unknown_names

SYSTEMD = REPO / "deploy" / "systemd"
UNITS = {"edge": SYSTEMD / "mistnet-edge@.service", "cloud": SYSTEMD / "mistnet-cloud.service"}
INSTALLED_MISTNET = "/opt/mistnet/venv/bin/mistnet"
REQUIRED = {
    "Restart": "on-failure",
    "DynamicUser": "yes",
    "ProtectSystem": "strict",
    "NoNewPrivileges": "yes",
    "PrivateTmp": "yes",
    "CapabilityBoundingSet": "",
    "SystemCallFilter": "@system-service",
}


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Section -> (key, value) list, repeated keys kept (systemd allows them)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
            continue
        key, sep, value = line.partition("=")
        assert sep and current, f"{path.name}: not key=value in a section: {line!r}"
        sections[current].append((key.strip(), value.strip()))
    return sections


def _env_file_names(path: Path) -> dict[str, str]:
    return {
        line.split("=", 1)[0]: path.name
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }


@pytest.mark.parametrize("component", ["edge", "cloud"])
class TestUnits:
    """Restart on failure, hardened, env file per instance, env names the daemon reads."""

    def test_directives(self, component: str) -> None:
        unit = parse_unit(UNITS[component])
        service = dict(unit["Service"])
        for key, value in REQUIRED.items():
            assert service.get(key) == value, f"{key}={value} missing"
        assert service["Type"] in ("simple", "exec", "notify")
        assert "WatchdogSec" not in service or service["Type"] == "notify", "only a notifying daemon can be watched"
        assert service["StateDirectory"] and service["ProtectHome"] in ("yes", "read-only", "tmpfs")
        assert set(service["RestrictAddressFamilies"].split()) <= {"AF_INET", "AF_INET6", "AF_UNIX"}
        assert int(service["TimeoutStopSec"].rstrip("s")) >= 30
        assert service["ExecStart"] == f"{INSTALLED_MISTNET} {component}"
        env_file = service["EnvironmentFile"]
        assert env_file == ("/etc/mistnet/edge-%i.env" if component == "edge" else "/etc/mistnet/cloud.env")
        assert unit["Install"] == [("WantedBy", "multi-user.target")]

    def test_env_names(self, component: str) -> None:
        unit = parse_unit(UNITS[component])
        names = {
            value.split("=", 1)[0]: UNITS[component].name for key, value in unit["Service"] if key == "Environment"
        }
        names |= _env_file_names(SYSTEMD / f"{component}.env.example")
        assert unknown_names(names, component) == []
        for key, value in unit["Service"]:
            if key == "Environment" and value.startswith(("MISTNET_STATE_DIR=", "MISTNET_STORE=")):
                state = dict(unit["Service"])["StateDirectory"].replace("%i", "x")
                assert value.split("=", 1)[1].replace("%i", "x").startswith(f"/var/lib/{state}"), value


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
class TestSystemdAnalyze:
    """systemd itself accepts the units (an edge instance included) and rates their exposure low."""

    def test_verify_and_security(self, tmp_path: Path) -> None:
        mistnet = Path(sys.executable).parent / "mistnet"
        assert mistnet.is_file(), "systemd-analyze checks that ExecStart exists: needs the venv's mistnet"
        for path in UNITS.values():
            text = path.read_text().replace(INSTALLED_MISTNET, str(mistnet))
            (tmp_path / path.name).write_text(text)
        edge = tmp_path / "mistnet-edge@edge-a.service"
        shutil.copy(tmp_path / UNITS["edge"].name, edge)
        cloud = tmp_path / UNITS["cloud"].name
        result = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(cloud), str(edge)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        mine = [line for line in result.stderr.splitlines() if "mistnet-" in line]
        assert result.returncode == 0 and mine == [], result.stderr
        for unit in (cloud, edge):
            security = subprocess.run(
                ["systemd-analyze", "security", "--offline=true", str(unit)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout)
            assert score and float(score.group(1)) <= 2.5, security.stdout[-500:]
