"""deploy/rabbitmq/: definitions match the names and arguments the code declares; the config has the limits."""

from __future__ import annotations

import json
import re

from shared.amqp.provision import DEAD_LETTER_POLICY
from shared.amqp.topology import EVENTS_STREAM, QueuePolicy
from shared.wire import names
from tests.conftest import REPO

RABBITMQ = REPO / "deploy" / "rabbitmq"
JOB = "mistnet"  # the template's job


class TestDefinitions:
    """definitions.json is the topology of job "mistnet" exactly as shared/amqp declares it."""

    def test_names_and_arguments(self) -> None:
        defs = json.loads((RABBITMQ / "definitions.json").read_text())
        exchanges = {e["name"]: e for e in defs["exchanges"]}
        assert set(exchanges) == {
            names.FEATURES_EXCHANGE,
            names.EVENTS_EXCHANGE,
            names.CONTROL_EXCHANGE,
            names.DEAD_LETTER_EXCHANGE,
        }
        assert all(e["type"] == "topic" and e["durable"] and not e["auto_delete"] for e in exchanges.values())
        queues = {q["name"]: q["arguments"] for q in defs["queues"]}
        policy = QueuePolicy()
        assert queues == {
            names.features_queue(JOB): {
                "x-queue-type": "quorum",
                "x-delivery-limit": policy.delivery_limit,
                "x-dead-letter-exchange": names.DEAD_LETTER_EXCHANGE,
            },
            names.dead_queue(JOB): {"x-queue-type": "quorum"},
            EVENTS_STREAM: {"x-queue-type": "stream", "x-max-age": policy.events_max_age},
        }
        bindings = {(b["source"], b["destination"], b["routing_key"]) for b in defs["bindings"]}
        assert bindings == {
            (names.FEATURES_EXCHANGE, names.features_queue(JOB), f"{JOB}.*"),
            (names.DEAD_LETTER_EXCHANGE, names.dead_queue(JOB), f"{JOB}.#"),
            (names.EVENTS_EXCHANGE, EVENTS_STREAM, "#"),
        }
        assert re.fullmatch(r"[^.]+\.\*", f"{JOB}.*") and names.features_routing_key(JOB, "edge-a") == "mistnet.edge-a"
        (policy_def,) = defs["policies"]
        assert policy_def["name"] == DEAD_LETTER_POLICY.name and policy_def["pattern"] == DEAD_LETTER_POLICY.pattern
        assert policy_def["definition"] == DEAD_LETTER_POLICY.definition
        assert re.search(policy_def["pattern"], names.dead_queue(JOB))
        assert not re.search(policy_def["pattern"], names.features_queue(JOB))
        assert {q["vhost"] for q in defs["queues"]} == {"/"} == {v["name"] for v in defs["vhosts"]}


class TestConfig:
    """rabbitmq.conf is key = value lines with the listeners and limits; both plugins are enabled."""

    def test_conf_and_plugins(self) -> None:
        settings = {}
        for line in (RABBITMQ / "rabbitmq.conf").read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, sep, value = line.partition(" = ")
                assert sep and re.fullmatch(r"[a-z_.0-9]+", key), f"not a key = value line: {line!r}"
                assert "#" not in value, f"comments must sit on their own line: {line!r}"
                settings[key] = value
        assert settings["max_message_size"] == str(16 * 1024 * 1024)
        assert int(settings["consumer_timeout"]) >= 10 * 60 * 1000
        assert settings["management.tcp.port"] == "15672" and settings["prometheus.tcp.port"] == "15692"
        plugins = (RABBITMQ / "enabled_plugins").read_text().strip()
        assert re.fullmatch(r"\[[a-z_,]+\]\.", plugins)
        assert set(plugins[1:-2].split(",")) == {"rabbitmq_management", "rabbitmq_prometheus"}
        script = RABBITMQ / "provision.sh"
        assert script.stat().st_mode & 0o111, "provision.sh must be executable"
