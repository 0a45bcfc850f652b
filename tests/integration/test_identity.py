"""Broker identity (DESIGN §5): what an edge and the monitor may NOT do, checked by RabbitMQ itself.

Publishing features under another edge's routing key is covered in test_adapters.py; here: reading,
the events exchange, user_id spoofing, configuring, and the monitor being read-only.
"""

from __future__ import annotations

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aiormq.exceptions import ChannelAccessRefused

from shared.amqp.connection import BrokerConfig, connect
from shared.amqp.topology import QueuePolicy, declare_job_topology
from shared.wire import names
from tests.integration.conftest import Broker

REFUSED = r"ACCESS_REFUSED"


async def _topology(broker: Broker) -> None:
    admin = await connect(BrokerConfig(broker.url()))
    async with admin:
        await declare_job_topology(await admin.channel(), broker.job, list(broker.edges), QueuePolicy())


async def _publish(
    connection: AbstractRobustConnection, exchange: str, routing_key: str, user_id: str | None = None
) -> None:
    channel = await connection.channel(publisher_confirms=True)
    target = await channel.get_exchange(exchange, ensure=False)
    await target.publish(aio_pika.Message(b"{}", user_id=user_id), routing_key, timeout=10)


async def _ignore(message: AbstractIncomingMessage) -> None:
    return None


async def _consume(connection: AbstractRobustConnection, queue_name: str) -> None:
    channel = await connection.channel()
    queue = await channel.get_queue(queue_name, ensure=False)
    await queue.consume(_ignore, timeout=10)


class TestEdgeCannotRead:
    """An edge reads only its own control queue: not the cloud's features inbox, nor another edge's control."""

    async def test_reads(self, broker: Broker) -> None:
        await _topology(broker)
        edge = await connect(BrokerConfig(broker.edge_url("edge-a")))
        async with edge:
            with pytest.raises(ChannelAccessRefused, match=REFUSED):
                await _consume(edge, names.features_queue(broker.job))
            with pytest.raises(ChannelAccessRefused, match=REFUSED):
                await _consume(edge, names.dead_queue(broker.job))
            with pytest.raises(ChannelAccessRefused, match=REFUSED):
                await _consume(edge, f"mistnet.{broker.job}.control.edge-b")
            await _consume(edge, f"mistnet.{broker.job}.control.edge-a")  # its own: allowed

    async def test_cannot_configure(self, broker: Broker) -> None:
        await _topology(broker)
        edge = await connect(BrokerConfig(broker.edge_url("edge-a")))
        async with edge:
            channel = await edge.channel()
            with pytest.raises(ChannelAccessRefused, match=REFUSED):
                await channel.declare_queue("mistnet.sneaky", durable=False)


class TestEdgeEventsAndUserId:
    """On mistnet.events an edge may publish only its job's edge.done / edge.status, and only as itself."""

    async def test_events_exchange(self, broker: Broker) -> None:
        await _topology(broker)
        edge = await connect(BrokerConfig(broker.edge_url("edge-a")))
        async with edge:
            await _publish(edge, names.EVENTS_EXCHANGE, names.event_routing_key(broker.job, "edge.done"), "edge-a")
            for key in (
                names.event_routing_key(broker.job, "round.completed"),
                names.event_routing_key(broker.job, "job.completed"),
                names.event_routing_key("otherjob", "edge.done"),
            ):
                with pytest.raises(ChannelAccessRefused, match=REFUSED):
                    await _publish(edge, names.EVENTS_EXCHANGE, key, "edge-a")
            with pytest.raises(ChannelAccessRefused, match=REFUSED):
                await _publish(edge, names.CONTROL_EXCHANGE, names.control_routing_key(broker.job), "edge-a")

    async def test_user_id_cannot_be_spoofed(self, broker: Broker) -> None:
        await _topology(broker)
        edge = await connect(BrokerConfig(broker.edge_url("edge-a")))
        async with edge:
            with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed, match="user_id"):
                await _publish(
                    edge, names.FEATURES_EXCHANGE, names.features_routing_key(broker.job, "edge-a"), user_id="edge-b"
                )


class TestMonitorIsReadOnly:
    """The monitor user publishes nowhere and reads neither features nor control queues."""

    async def test_monitor(self, broker: Broker) -> None:
        await _topology(broker)
        monitor = await connect(BrokerConfig(broker.url(broker.monitor)))
        async with monitor:
            for exchange, key in (
                (names.EVENTS_EXCHANGE, names.event_routing_key(broker.job, "round.completed")),
                (names.FEATURES_EXCHANGE, names.features_routing_key(broker.job, "edge-a")),
                (names.CONTROL_EXCHANGE, names.control_routing_key(broker.job)),
            ):
                with pytest.raises(ChannelAccessRefused, match=REFUSED):
                    await _publish(monitor, exchange, key)
            for queue in (names.features_queue(broker.job), f"mistnet.{broker.job}.control.edge-a"):
                with pytest.raises(ChannelAccessRefused, match=REFUSED):
                    await _consume(monitor, queue)
