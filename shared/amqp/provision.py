"""Provisioning a job: one broker user per edge, a cloud user, a read-only monitor user, the topology.

Permissions (DESIGN §5): an edge may publish only ``<job>.<its name>`` on ``mistnet.features`` and
its own status events, and read only its control queue; it configures nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from shared.amqp.management import ManagementClient
from shared.amqp.topology import EVENTS_STREAM
from shared.wire import names


@dataclass(frozen=True)
class Credentials:
    """A broker user; an empty ``password`` keeps the password of a user that already exists."""

    user: str
    password: str


@dataclass(frozen=True)
class JobAccess:
    """Who may do what in one job: edges by name, the cloud and the monitor."""

    vhost: str
    job: str
    edges: dict[str, Credentials]
    cloud: Credentials
    monitor: Credentials | None = None
    extra_admins: list[str] = field(default_factory=list)


def _exact(*values: str) -> str:
    return "^(" + "|".join(re.escape(v) for v in values) + ")$"


def _put_user(api: ManagementClient, cred: Credentials, tags: str) -> None:
    if cred.password:
        api.put_user(cred.user, cred.password, tags=tags)


def provision_job(api: ManagementClient, access: JobAccess) -> None:
    """Create the vhost, users and permissions of ``access`` (idempotent: PUTs overwrite)."""
    job, vhost = access.job, access.vhost
    api.put_vhost(vhost)
    for admin in access.extra_admins:
        api.put_permissions(vhost, admin, ".*", ".*", ".*")
    _put_user(api, access.cloud, tags="")
    api.put_permissions(vhost, access.cloud.user, r"^mistnet\..*", r"^mistnet\..*", r"^mistnet\..*")
    for edge, cred in access.edges.items():
        names.check_name("edge", edge)
        control = f"mistnet.{job}.control.{edge}"
        _put_user(api, cred, tags="")
        api.put_permissions(
            vhost,
            cred.user,
            configure="^$",
            write=_exact(names.FEATURES_EXCHANGE, names.EVENTS_EXCHANGE),
            read=_exact(control),
        )
        api.put_topic_permissions(
            vhost,
            cred.user,
            names.FEATURES_EXCHANGE,
            write=_exact(names.features_routing_key(job, edge)),
            read="^$",
        )
        api.put_topic_permissions(
            vhost,
            cred.user,
            names.EVENTS_EXCHANGE,
            write=_exact(names.event_routing_key(job, "edge.done"), names.event_routing_key(job, "edge.status")),
            read="^$",
        )
    if access.monitor is not None:
        own = r"^(amq\.gen-.*|mistnet\.monitor\..*)$"
        _put_user(api, access.monitor, tags="monitoring")
        api.put_permissions(
            vhost,
            access.monitor.user,
            configure=own,
            write=own,
            read=rf"^(amq\.gen-.*|mistnet\.monitor\..*|{re.escape(names.EVENTS_EXCHANGE)}|{re.escape(EVENTS_STREAM)})$",
        )


@dataclass(frozen=True)
class Policy:
    """A RabbitMQ policy: settings applied by name pattern, changeable without redeclaring queues."""

    name: str
    pattern: str
    definition: dict[str, int | str]
    apply_to: str = "queues"


#: Dead letters are kept a week and at most 1 GiB (oldest dropped first), so poison cannot fill the disk.
DEAD_LETTER_POLICY = Policy(
    name="mistnet-dead-letters",
    pattern=r"^mistnet\..+\.dead$",
    definition={"message-ttl": 7 * 24 * 3600 * 1000, "max-length-bytes": 1 << 30},
)


def apply_policies(api: ManagementClient, vhost: str, policies: tuple[Policy, ...] = (DEAD_LETTER_POLICY,)) -> None:
    """Create or replace the job policies in ``vhost`` (idempotent)."""
    for policy in policies:
        api.put_policy(vhost, policy.name, policy.pattern, dict(policy.definition), policy.apply_to)
