"""The edge's broker side, shared by both algorithms: a connection, the exchanges checked, a confirmed publisher."""

from __future__ import annotations

from contextlib import AsyncExitStack

from aio_pika.abc import AbstractRobustConnection

from shared.amqp.connection import broker_config, connect
from shared.amqp.publisher import ConfirmedPublisher
from shared.amqp.topology import check_exchanges
from shared.config.edge import EdgeSettings


async def open_broker(
    settings: EdgeSettings, stack: AsyncExitStack
) -> tuple[AbstractRobustConnection, ConfirmedPublisher]:
    """Connect, check the exchanges exist (the edge may not declare: provisioning or the cloud does), and
    build the publisher; both are closed by ``stack``."""
    connection = await connect(broker_config(settings, f"mistnet-edge-{settings.edge}"))
    stack.push_async_callback(connection.close)
    channel = await connection.channel()
    await check_exchanges(channel)
    await channel.close()
    publisher = ConfirmedPublisher(
        connection, confirm_timeout_s=settings.confirm_timeout_s, attempts=settings.publish_attempts
    )
    stack.push_async_callback(publisher.close)
    return connection, publisher
