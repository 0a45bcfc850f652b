"""``mistnet provision`` on the real broker: what the management API (and UI) then lists, idempotence, logins."""

from __future__ import annotations

import asyncio
import json
import re
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mistnet.cli import main
from shared.amqp.connection import BrokerConfig, connect
from shared.amqp.management import ManagementClient
from shared.amqp.topology import EVENTS_STREAM
from shared.wire import names
from tests.integration.conftest import MGMT_URL


@dataclass(frozen=True)
class Target:
    """A fresh vhost and unique user names (users are broker-wide: never touch other tests' users)."""

    vhost: str
    job: str
    edges: list[str]
    cloud: str
    monitor: str
    api: ManagementClient

    def args(self, *extra: str) -> list[str]:
        return [
            "provision",
            "--vhost",
            self.vhost,
            "--job",
            self.job,
            "--edges",
            ",".join(self.edges),
            "--cloud-user",
            self.cloud,
            "--monitor-user",
            self.monitor,
            *extra,
        ]


@pytest.fixture
def target() -> Iterator[Target]:
    tag = uuid.uuid4().hex[:8]
    api = ManagementClient(MGMT_URL, "guest", "guest")
    t = Target(f"mistnet-prov-{tag}", "prov", [f"cam-{tag}", f"gw-{tag}"], f"cloud-{tag}", f"mon-{tag}", api)
    try:
        yield t
    finally:
        api.delete_vhost(t.vhost)
        for user in (*t.edges, t.cloud, t.monitor):
            if api.user_exists(user):
                api.delete_user(user)


def _run(capsys: pytest.CaptureFixture[str], args: list[str]) -> dict[str, Any]:
    assert main([*args, "--json"]) == 0, capsys.readouterr().err
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


class TestManagementApiListsTopology:
    """After provisioning, the management API lists the job's exchanges, queues, bindings, policy and users."""

    def test_listing(self, capsys: pytest.CaptureFixture[str], target: Target, tmp_path: Path) -> None:
        _run(capsys, target.args("--passwords-file", str(tmp_path / "pw.json")))
        api, vhost, job = target.api, target.vhost, target.job
        exchanges = {e["name"]: e for e in api.exchanges(vhost)}
        for name in (
            names.FEATURES_EXCHANGE,
            names.EVENTS_EXCHANGE,
            names.CONTROL_EXCHANGE,
            names.DEAD_LETTER_EXCHANGE,
        ):
            assert exchanges[name]["type"] == "topic" and exchanges[name]["durable"]
        queues = {q["name"]: q for q in api.queues(vhost)}
        inbox = queues[names.features_queue(job)]
        assert inbox["type"] == "quorum"
        assert inbox["arguments"]["x-dead-letter-exchange"] == names.DEAD_LETTER_EXCHANGE
        assert inbox["arguments"]["x-delivery-limit"] == 5
        assert queues[names.dead_queue(job)]["type"] == "quorum"
        policies = {p["name"]: p for p in api.policies(vhost)}
        assert re.search(policies["mistnet-dead-letters"]["pattern"], names.dead_queue(job))
        assert not re.search(policies["mistnet-dead-letters"]["pattern"], names.features_queue(job))
        assert queues[EVENTS_STREAM]["type"] == "stream"
        for edge in target.edges:
            assert queues[f"mistnet.{job}.control.{edge}"]["type"] == "quorum"
        bindings = {(b["source"], b["destination"], b["routing_key"]) for b in api.bindings(vhost)}
        assert (names.FEATURES_EXCHANGE, names.features_queue(job), f"{job}.*") in bindings
        assert (names.DEAD_LETTER_EXCHANGE, names.dead_queue(job), f"{job}.#") in bindings
        assert (names.EVENTS_EXCHANGE, EVENTS_STREAM, "#") in bindings
        assert (names.CONTROL_EXCHANGE, f"mistnet.{job}.control.{target.edges[0]}", f"{job}.control.all") in bindings
        users = {p["user"]: p for p in api.permissions(vhost)}
        assert users[target.edges[0]]["configure"] == "^$"
        topic = {(p["user"], p["exchange"]): p["write"] for p in api.topic_permissions(vhost)}
        assert topic[(target.edges[0], names.FEATURES_EXCHANGE)] == rf"^({job}\.{target.edges[0]})$".replace("-", r"\-")


async def _login(url: str) -> None:
    connection = await connect(BrokerConfig(url, connect_attempts=1))
    await connection.close()


class TestProvisionCommand:
    """Generated passwords land in a 0600 file and work; re-running keeps them; given passwords are set."""

    def test_idempotent_with_passwords_file(
        self, capsys: pytest.CaptureFixture[str], target: Target, tmp_path: Path
    ) -> None:
        pw_file = tmp_path / "secrets" / "passwords.json"
        first = _run(capsys, target.args("--passwords-file", str(pw_file)))
        assert {u["password_source"] for u in first["users"]} == {"generated"}
        assert all("password" not in u for u in first["users"])
        assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
        passwords = json.loads(pw_file.read_text())
        assert set(passwords) == {*target.edges, target.cloud, target.monitor}
        second = _run(capsys, target.args())
        assert {u["password_source"] for u in second["users"]} == {"kept"}
        assert second["queues"] == first["queues"]
        edge = target.edges[0]
        url = f"amqp://{edge}:{passwords[edge]}@127.0.0.1:5672/{target.vhost}"
        asyncio.run(_login(url))

    def test_printed_once_given_and_errors(self, capsys: pytest.CaptureFixture[str], target: Target) -> None:
        report = _run(capsys, target.args("--passwords", f"{target.cloud}=cloud-secret", "--no-declare-topology"))
        by_user = {u["user"]: u for u in report["users"]}
        assert by_user[target.cloud]["password_source"] == "given" and "password" not in by_user[target.cloud]
        generated = by_user[target.edges[0]]
        assert generated["password_source"] == "generated" and len(generated["password"]) >= 32
        assert generated["amqp_url"].endswith(f"@127.0.0.1:5672/{target.vhost}")
        assert report["queues"] == []
        with pytest.raises(SystemExit, match="2"):
            main(["provision", "--vhost", target.vhost, "--edges", "2"])
        assert "by name" in capsys.readouterr().err
        bad_admin = target.args("--admin-password", "wrong", "--management-url", MGMT_URL)
        assert main(bad_admin) == 1
        assert "HTTP 401" in capsys.readouterr().err
