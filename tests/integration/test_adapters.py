"""The RabbitMQ and S3 adapters against the real servers."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from shared.amqp.connection import BrokerConfig, BrokerUnavailableError, connect
from shared.amqp.publisher import ConfirmedPublisher, NotConfirmedError, OutgoingMessage
from shared.amqp.topology import QueuePolicy, declare_job_queues
from shared.blob.s3 import S3BlobStore, S3Config
from shared.blob.store import BlobError, BlobMissingError, BlobTooLargeError
from shared.wire import names
from tests.integration.conftest import Broker


class TestConfirmedPublisher:
    """A confirmed publish lands in the job's quorum queue with the properties of DESIGN §4."""

    async def test_publish_arrives_with_properties(self, broker: Broker) -> None:
        admin = await connect(BrokerConfig(broker.url()))
        async with admin:
            channel = await admin.channel()
            queue = await declare_job_queues(channel, broker.job, QueuePolicy())
            edge = await connect(BrokerConfig(broker.edge_url("edge-a")))
            async with edge:
                publisher = ConfirmedPublisher(edge)
                await publisher.publish(
                    OutgoingMessage(
                        names.FEATURES_EXCHANGE,
                        names.features_routing_key(broker.job, "edge-a"),
                        b"hello",
                        message_id="m-1",
                        content_type="application/msgpack",
                        type="mistnet.features",
                        user_id="edge-a",
                    )
                )
            message = await queue.get(timeout=5)
            assert message is not None
            await message.ack()
            assert message.body == b"hello"
            assert message.message_id == "m-1"
            assert message.user_id == "edge-a"
            assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT

    async def test_unroutable_message_is_not_confirmed(self, broker: Broker) -> None:
        admin = await connect(BrokerConfig(broker.url()))
        async with admin:
            channel = await admin.channel()
            await declare_job_queues(channel, broker.job, QueuePolicy())
            publisher = ConfirmedPublisher(admin, attempts=2, backoff_s=0.01)
            with pytest.raises(NotConfirmedError, match="not confirmed"):
                await publisher.publish(
                    OutgoingMessage(
                        names.FEATURES_EXCHANGE,
                        "otherjob.edge-a",
                        b"x",
                        message_id="m-2",
                        content_type="application/msgpack",
                        type="mistnet.features",
                    )
                )

    async def test_edge_cannot_publish_for_another_edge(self, broker: Broker) -> None:
        admin = await connect(BrokerConfig(broker.url()))
        async with admin:
            await declare_job_queues(await admin.channel(), broker.job, QueuePolicy())
        edge = await connect(BrokerConfig(broker.edge_url("edge-a")))
        async with edge:
            publisher = ConfirmedPublisher(edge, attempts=2, backoff_s=0.01)
            with pytest.raises(NotConfirmedError, match=r"ACCESS_REFUSED|access"):
                await publisher.publish(
                    OutgoingMessage(
                        names.FEATURES_EXCHANGE,
                        names.features_routing_key(broker.job, "edge-b"),
                        b"x",
                        message_id="m-3",
                        content_type="application/msgpack",
                        type="mistnet.features",
                        user_id="edge-a",
                    )
                )


class TestConnect:
    """Start-up against an unreachable broker fails with one clear message after bounded retries."""

    async def test_unreachable_broker(self) -> None:
        config = BrokerConfig("amqp://guest:secret-pw@127.0.0.1:1/", connect_attempts=2, connect_backoff_s=0.01)
        with pytest.raises(BrokerUnavailableError) as info:
            await connect(config)
        assert "127.0.0.1:1" in str(info.value)
        assert "secret-pw" not in str(info.value)


class TestS3BlobStore:
    """Objects round-trip; size limits are enforced before download; missing objects and bad keys are named."""

    async def test_round_trip_and_limits(self, s3_bucket: S3Config) -> None:
        store = S3BlobStore(s3_bucket)
        uri = await store.put("job/features/edge-a/ab/x.bin", b"payload")
        assert uri == f"s3://{s3_bucket.bucket}/job/features/edge-a/ab/x.bin"
        assert await store.get("job/features/edge-a/ab/x.bin", max_bytes=7) == b"payload"
        with pytest.raises(BlobTooLargeError):
            await store.get("job/features/edge-a/ab/x.bin", max_bytes=6)
        with pytest.raises(BlobMissingError):
            await store.get("job/features/edge-a/ab/none.bin", max_bytes=100)
        with pytest.raises(ValueError, match="not a plain relative path"):
            await store.put("job/../etc/x", b"")

    async def test_wrong_credentials_are_named(self, s3_bucket: S3Config) -> None:
        bad = S3Config(s3_bucket.endpoint_url, "nobody", "wrong", s3_bucket.bucket, attempts=1)
        with pytest.raises(BlobError, match="refused the credentials"):
            await asyncio.wait_for(S3BlobStore(bad).put("a/b", b"x"), 30)
