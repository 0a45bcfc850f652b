"""deploy/rabbitmq/ on the real broker: definitions.json is what the code declares, and provision.sh
(rabbitmqctl path, no Python) grants exactly what ``mistnet provision`` grants."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mistnet.cli import main
from shared.amqp.connection import BrokerConfig, connect
from shared.amqp.management import ManagementClient
from shared.amqp.topology import QueuePolicy, declare_job_topology
from tests.conftest import REPO
from tests.integration.conftest import MGMT_URL

RABBITMQ = REPO / "deploy" / "rabbitmq"


@pytest.fixture
def api() -> ManagementClient:
    return ManagementClient(MGMT_URL, "guest", "guest")


@pytest.fixture
def vhosts(api: ManagementClient) -> Iterator[list[str]]:
    created: list[str] = []
    try:
        yield created
    finally:
        for vhost in created:
            api.delete_vhost(vhost)


async def _declare_as_code(vhost: str, job: str, edges: list[str]) -> None:
    connection = await connect(BrokerConfig(f"amqp://guest:guest@127.0.0.1:5672/{vhost}", connect_attempts=1))
    async with connection:
        await declare_job_topology(await connection.channel(), job, edges, QueuePolicy())


class TestDefinitions:
    """Imported into a vhost, definitions.json leaves nothing for the code to change: redeclaring the
    job "mistnet" topology with the code's arguments succeeds (RabbitMQ refuses any difference)."""

    def test_import_then_declare(self, api: ManagementClient, vhosts: list[str]) -> None:
        vhost = f"mistnet-defs-{uuid.uuid4().hex[:8]}"
        vhosts.append(vhost)
        api.put_vhost(vhost)
        api.put_permissions(vhost, "guest", ".*", ".*", ".*")
        api.import_definitions(vhost, json.loads((RABBITMQ / "definitions.json").read_text()))
        before = {q["name"]: q["arguments"] for q in api.queues(vhost)}
        asyncio.run(_declare_as_code(vhost, "mistnet", []))
        after = {q["name"]: q["arguments"] for q in api.queues(vhost)}
        assert before == after and len(after) == 3
        assert [p["name"] for p in api.policies(vhost)] == ["mistnet-dead-letters"]


def _access(api: ManagementClient, vhost: str) -> dict[str, Any]:
    return {
        "permissions": sorted(
            (p["user"], p["configure"], p["write"], p["read"]) for p in api.permissions(vhost) if p["user"] != "guest"
        ),
        "topic": sorted((p["user"], p["exchange"], p["write"], p["read"]) for p in api.topic_permissions(vhost)),
        "queues": sorted((q["name"], json.dumps(q["arguments"], sort_keys=True)) for q in api.queues(vhost)),
        "bindings": sorted((b["source"], b["destination"], b["routing_key"]) for b in api.bindings(vhost)),
        "policies": sorted((p["name"], p["pattern"], json.dumps(p["definition"])) for p in api.policies(vhost)),
    }


def _rabbitmqctl_usable() -> bool:
    if shutil.which("rabbitmqctl") is None:
        return False
    probe = subprocess.run(["rabbitmqctl", "-q", "list_vhosts"], capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _rabbitmqctl_usable(), reason="rabbitmqctl is not usable by this user on this machine")
class TestProvisionScript:
    """provision.sh --rabbitmqctl and `mistnet provision` produce the same users' rights, queues, bindings
    and policy; the script's generated passwords (0600 file) log in; a re-run keeps them."""

    def test_same_as_mistnet_provision(
        self, api: ManagementClient, vhosts: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        tag = uuid.uuid4().hex[:8]
        edges, cloud, monitor = [f"sh-{tag}-a", f"sh-{tag}-b"], f"shc-{tag}", f"shm-{tag}"
        by_script, by_python = f"mistnet-sh-{tag}", f"mistnet-py-{tag}"
        vhosts += [by_script, by_python]
        pw_file = tmp_path / "passwords.json"
        env = {
            **os.environ,
            "MISTNET_VHOST": by_script,
            "MISTNET_CLOUD_USER": cloud,
            "MISTNET_MONITOR_USER": monitor,
            "MISTNET_PASSWORDS_FILE": str(pw_file),
        }
        script = [str(RABBITMQ / "provision.sh"), "--rabbitmqctl", "shjob", *edges]
        try:
            for _ in range(2):  # the second run must change nothing
                result = subprocess.run(script, env=env, capture_output=True, text=True, timeout=120, check=False)
                assert result.returncode == 0, result.stderr
            assert pw_file.stat().st_mode & 0o777 == 0o600
            passwords = json.loads(pw_file.read_text())
            assert set(passwords) == {*edges, cloud, monitor}
            args = ["provision", "--vhost", by_python, "--job", "shjob", "--edges", ",".join(edges)]
            args += ["--cloud-user", cloud, "--monitor-user", monitor, "--passwords-file", str(pw_file), "--json"]
            assert main(args) == 0
            report = json.loads(capsys.readouterr().out)
            assert {u["password_source"] for u in report["users"]} == {"file"}
            assert json.loads(pw_file.read_text()) == passwords
            assert _access(api, by_script) == _access(api, by_python)
            url = f"amqp://{edges[0]}:{passwords[edges[0]]}@127.0.0.1:5672/{by_script}"
            asyncio.run(_login(url))
        finally:
            for user in (*edges, cloud, monitor):
                if api.user_exists(user):
                    api.delete_user(user)


async def _login(url: str) -> None:
    connection = await connect(BrokerConfig(url, connect_attempts=1))
    await connection.close()
