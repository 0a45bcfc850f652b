"""``mistnet provision``: a job's broker users, permissions, policy and topology, idempotently.

Users and permissions go through the management HTTP API (shared/amqp/provision.py); exchanges and
queues are declared over AMQP as the administrator. Re-running changes nothing that is already right:
existing users keep their passwords unless given one (MISTNET_PASSWORDS, the passwords file) or
``--reset-passwords``. New passwords are generated, then written to ``--passwords-file`` (0600) or
printed once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any
from urllib.parse import quote, urlsplit

from mistnet.commands.credentials import PlannedUser, plan_users, read_passwords_file, write_passwords_file
from mistnet.commands.options import add_settings_flags, settings_from_args
from shared.config.provision import ProvisionSettings, parse_passwords
from shared.wire import names

EXCHANGES = (names.FEATURES_EXCHANGE, names.EVENTS_EXCHANGE, names.CONTROL_EXCHANGE, names.DEAD_LETTER_EXCHANGE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(parser, ProvisionSettings)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def amqp_url(settings: ProvisionSettings, user: str, password: str) -> str:
    """AMQP URL of ``user`` in the job's vhost, on the management API's host and port 5672."""
    host = urlsplit(settings.management_url).hostname or "127.0.0.1"
    return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{host}:5672/{quote(settings.vhost, safe='')}"


def _admin_amqp_url(settings: ProvisionSettings) -> str:
    if settings.admin_amqp_url is not None:
        return settings.admin_amqp_url.get_secret_value()
    return amqp_url(settings, settings.admin_user, settings.admin_password.get_secret_value())


async def _declare(settings: ProvisionSettings) -> list[str]:
    import aio_pika

    from shared.amqp.connection import BrokerConfig, connect
    from shared.amqp.topology import QueuePolicy, declare_job_topology

    policy = QueuePolicy(delivery_limit=settings.delivery_limit, events_max_age=settings.events_max_age)
    connection = await connect(BrokerConfig(_admin_amqp_url(settings), name="mistnet-provision", connect_attempts=3))
    async with connection:
        channel = await connection.channel()
        try:
            queues = await declare_job_topology(channel, settings.job, settings.edge_names, policy)
        except aio_pika.exceptions.ChannelPreconditionFailed as exc:
            raise RuntimeError(
                f"a queue of job {settings.job!r} exists with other arguments ({exc}); provision with the same "
                "--delivery-limit / --events-max-age, or delete the queue in the management UI first"
            ) from exc
        declared = [queue.name for queue in queues]
        return [declared[0], names.dead_queue(settings.job), *declared[1:]]


def provision(settings: ProvisionSettings) -> dict[str, Any]:
    """Do the provisioning; returns the report (generated passwords included where not written to a file)."""
    from shared.amqp.management import ManagementClient
    from shared.amqp.provision import DEAD_LETTER_POLICY, Credentials, JobAccess, apply_policies, provision_job

    api = ManagementClient(settings.management_url, settings.admin_user, settings.admin_password.get_secret_value())
    api.overview()  # fails early, naming the URL, if the API is unreachable or refuses the admin
    reserved = {settings.cloud_user, settings.monitor_user}
    clash = reserved.intersection(settings.edge_names)
    if clash:
        raise ValueError(f"edge name(s) {sorted(clash)} are also the cloud or monitor user; rename the edge or user")
    roles: list[tuple[str, Any, str | None]] = [(edge, "edge", edge) for edge in settings.edge_names]
    roles.append((settings.cloud_user, "cloud", None))
    if settings.monitor_user:
        roles.append((settings.monitor_user, "monitor", None))
    given = parse_passwords(settings.passwords.get_secret_value()) if settings.passwords else {}
    from_file = read_passwords_file(settings.passwords_file) if settings.passwords_file else {}
    planned = plan_users(
        roles, given=given, from_file=from_file, exists=api.user_exists, reset=settings.reset_passwords
    )
    by_role = {user.user: user for user in planned}
    access = JobAccess(
        vhost=settings.vhost,
        job=settings.job,
        edges={edge: Credentials(edge, by_role[edge].password) for edge in settings.edge_names},
        cloud=Credentials(settings.cloud_user, by_role[settings.cloud_user].password),
        monitor=Credentials(settings.monitor_user, by_role[settings.monitor_user].password)
        if settings.monitor_user
        else None,
        extra_admins=[settings.admin_user],
    )
    provision_job(api, access)
    apply_policies(api, settings.vhost)
    queues = asyncio.run(_declare(settings)) if settings.declare_topology else []
    generated = {u.user: u.password for u in planned if u.source == "generated"}
    if settings.passwords_file and generated:
        write_passwords_file(settings.passwords_file, generated)
    return {
        "job": settings.job,
        "vhost": settings.vhost,
        "management_url": settings.management_url,
        "users": [_user_report(settings, user, show=not settings.passwords_file) for user in planned],
        "exchanges": list(EXCHANGES),
        "queues": queues,
        "policies": [DEAD_LETTER_POLICY.name],
        "passwords_file": str(settings.passwords_file) if settings.passwords_file else None,
    }


def _user_report(settings: ProvisionSettings, user: PlannedUser, *, show: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"user": user.user, "role": user.role, "edge": user.edge, "password_source": user.source}
    if user.source == "generated" and show:
        entry["password"] = user.password
        entry["amqp_url"] = amqp_url(settings, user.user, user.password)
    return entry


def _describe(user: dict[str, Any], passwords_file: str | None) -> str:
    source = user["password_source"]
    if source == "generated":
        if passwords_file:
            return f"new password written to {passwords_file}"
        return f"new password {user['password']} (shown once)  MISTNET_AMQP_URL={user['amqp_url']}"
    return {"given": "password set as given", "file": "password from the passwords file"}.get(
        source, "existing user, password unchanged"
    )


def _print_text(report: dict[str, Any]) -> None:
    print(f"job {report['job']} provisioned in vhost {report['vhost']!r} at {report['management_url']}")  # noqa: T201
    for user in report["users"]:
        print(f"  {user['role']:7} {user['user']:24} {_describe(user, report['passwords_file'])}")  # noqa: T201
    if report["queues"]:
        print(f"  exchanges: {', '.join(report['exchanges'])}")  # noqa: T201
        print(f"  queues:    {', '.join(report['queues'])}")  # noqa: T201


def run(args: argparse.Namespace) -> int:
    from shared.amqp.connection import BrokerUnavailableError
    from shared.amqp.management import ManagementError

    settings = settings_from_args(ProvisionSettings, args)
    try:
        report = provision(settings)
    except (ManagementError, BrokerUnavailableError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    if args.json:
        print(json.dumps(report))  # noqa: T201
    else:
        _print_text(report)
    return 0
