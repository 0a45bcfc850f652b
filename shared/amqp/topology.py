"""The exchanges and queues of DESIGN §4, declared idempotently by whoever may configure them."""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue, ExchangeType

from shared.wire import names

#: Events kept for ``mistnet monitor`` history: a stream bound to every event.
EVENTS_STREAM = "mistnet.events.history"


@dataclass(frozen=True)
class QueuePolicy:
    """Arguments of the job's features queue."""

    delivery_limit: int = 5
    events_max_age: str = "7D"


async def declare_exchanges(channel: AbstractChannel) -> dict[str, AbstractExchange]:
    """The four durable topic exchanges."""
    result = {}
    for name in (
        names.FEATURES_EXCHANGE,
        names.EVENTS_EXCHANGE,
        names.CONTROL_EXCHANGE,
        names.DEAD_LETTER_EXCHANGE,
    ):
        result[name] = await channel.declare_exchange(name, ExchangeType.TOPIC, durable=True)
    return result


async def declare_job_queues(channel: AbstractChannel, job: str, policy: QueuePolicy) -> AbstractQueue:
    """The job's quorum inbox with its dead-letter queue; returns the inbox."""
    await declare_exchanges(channel)
    dead = await channel.declare_queue(names.dead_queue(job), durable=True, arguments={"x-queue-type": "quorum"})
    await dead.bind(names.DEAD_LETTER_EXCHANGE, routing_key=f"{job}.#")
    inbox = await channel.declare_queue(
        names.features_queue(job),
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": policy.delivery_limit,
            "x-dead-letter-exchange": names.DEAD_LETTER_EXCHANGE,
        },
    )
    await inbox.bind(names.FEATURES_EXCHANGE, routing_key=f"{job}.*")
    return inbox


async def declare_events_stream(channel: AbstractChannel, policy: QueuePolicy) -> AbstractQueue:
    """A stream holding every event for ``policy.events_max_age``, so monitors can replay history."""
    await declare_exchanges(channel)
    stream = await channel.declare_queue(
        EVENTS_STREAM,
        durable=True,
        arguments={"x-queue-type": "stream", "x-max-age": policy.events_max_age},
    )
    await stream.bind(names.EVENTS_EXCHANGE, routing_key="#")
    return stream


async def declare_control_queue(channel: AbstractChannel, job: str, edge: str) -> AbstractQueue:
    """An edge's control inbox: messages for all edges of the job and for this edge."""
    await declare_exchanges(channel)
    queue = await channel.declare_queue(
        f"mistnet.{job}.control.{edge}", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(names.CONTROL_EXCHANGE, routing_key=names.control_routing_key(job, "all"))
    await queue.bind(names.CONTROL_EXCHANGE, routing_key=names.control_routing_key(job, edge))
    return queue


async def check_exchanges(channel: AbstractChannel) -> None:
    """Passively check the exchanges exist (edges may not configure; provisioning declares them)."""
    for name in (names.FEATURES_EXCHANGE, names.EVENTS_EXCHANGE):
        try:
            await channel.get_exchange(name, ensure=True)
        except aio_pika.exceptions.ChannelClosed as exc:
            raise RuntimeError(
                f"exchange {name!r} does not exist on the broker; run `mistnet provision` (or start the cloud) first"
            ) from exc


async def declare_job_topology(
    channel: AbstractChannel, job: str, edges: list[str], policy: QueuePolicy
) -> list[AbstractQueue]:
    """Everything a job needs, as provisioning declares it: exchanges, inbox + dead letters, events
    stream and one control queue per edge; returns the queues declared."""
    queues = [await declare_job_queues(channel, job, policy), await declare_events_stream(channel, policy)]
    for edge in edges:
        queues.append(await declare_control_queue(channel, job, edge))
    return queues
