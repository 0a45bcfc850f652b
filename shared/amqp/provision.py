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


def provision_job(api: ManagementClient, access: JobAccess) -> None:
    """Create the vhost, users and permissions of ``access`` (idempotent: PUTs overwrite)."""
    job, vhost = access.job, access.vhost
    api.put_vhost(vhost)
    for admin in access.extra_admins:
        api.put_permissions(vhost, admin, ".*", ".*", ".*")
    api.put_user(access.cloud.user, access.cloud.password, tags="")
    api.put_permissions(vhost, access.cloud.user, r"^mistnet\..*", r"^mistnet\..*", r"^mistnet\..*")
    for edge, cred in access.edges.items():
        names.check_name("edge", edge)
        control = f"mistnet.{job}.control.{edge}"
        api.put_user(cred.user, cred.password, tags="")
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
        api.put_user(access.monitor.user, access.monitor.password, tags="monitoring")
        api.put_permissions(
            vhost,
            access.monitor.user,
            configure=own,
            write=own,
            read=rf"^(amq\.gen-.*|mistnet\.monitor\..*|{re.escape(names.EVENTS_EXCHANGE)}|{re.escape(EVENTS_STREAM)})$",
        )
