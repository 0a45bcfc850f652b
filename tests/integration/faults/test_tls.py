"""TLS end to end on the fault-only services: ``amqps://`` to RabbitMQ with a client certificate, and S3 over
https with a CA bundle, both configured through the daemons' settings."""

from __future__ import annotations

import aio_pika
import pytest

from shared.amqp.connection import BrokerConfig, BrokerUnavailableError, connect
from shared.blob.factory import build_blob_store
from shared.blob.store import BlobError
from shared.config.base import CommonSettings
from tests.integration.faults.job import BUCKET, FaultStack

pytestmark = pytest.mark.services


def amqps_config(stack: FaultStack, **files: object) -> BrokerConfig:
    """BrokerConfig as the daemons' entry points build it from CommonSettings."""
    settings = CommonSettings(amqp_url=f"amqps://guest:guest@localhost:{stack.rabbit.amqps_port}/", **files)  # type: ignore[arg-type]
    return BrokerConfig(
        settings.amqp_url.get_secret_value(),
        ca_file=settings.amqp_ca_file,
        cert_file=settings.amqp_cert_file,
        key_file=settings.amqp_key_file,
        connect_attempts=1,
    )


class TestAmqps:
    """With the CA and a client certificate the broker is reached over TLS; without either it is not."""

    async def test_connect_publish_get(self, fault_stack: FaultStack) -> None:
        tls = fault_stack.rabbit.tls
        assert tls is not None
        config = amqps_config(
            fault_stack, amqp_ca_file=tls.ca, amqp_cert_file=tls.client_cert, amqp_key_file=tls.client_key
        )
        connection = await connect(config)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(exclusive=True)
            await channel.default_exchange.publish(aio_pika.Message(b"over tls"), routing_key=queue.name)
            message = await queue.get(timeout=10)
            assert message is not None and message.body == b"over tls"
            await message.ack()

    async def test_refused_without_client_certificate_or_ca(self, fault_stack: FaultStack) -> None:
        tls = fault_stack.rabbit.tls
        assert tls is not None
        for files in ({"amqp_ca_file": tls.ca}, {"amqp_cert_file": tls.client_cert, "amqp_key_file": tls.client_key}):
            with pytest.raises(BrokerUnavailableError, match="cannot connect to RabbitMQ at amqps://guest:\\*\\*\\*@"):
                await connect(amqps_config(fault_stack, **files))


class TestS3Https:
    """S3 over https verifies the server against S3_CA_BUNDLE; without it the call fails, naming the error."""

    def settings(self, stack: FaultStack, **extra: object) -> CommonSettings:
        return CommonSettings(
            s3_endpoint_url=f"https://localhost:{stack.weed.https_port}",
            s3_access_key_id=stack.admin_key.access_key,
            s3_secret_access_key=stack.admin_key.secret_key,  # type: ignore[arg-type]
            bucket=BUCKET,
            s3_attempts=1,
            **extra,  # type: ignore[arg-type]
        )

    async def test_round_trip_with_ca_bundle(self, fault_stack: FaultStack) -> None:
        tls = fault_stack.weed.tls
        assert tls is not None
        store = build_blob_store(self.settings(fault_stack, s3_ca_bundle=tls.ca))
        await store.put("tls/check.bin", b"encrypted in transit")
        assert await store.get("tls/check.bin", max_bytes=100) == b"encrypted in transit"

    async def test_unknown_ca_refused(self, fault_stack: FaultStack) -> None:
        store = build_blob_store(self.settings(fault_stack))
        with pytest.raises(BlobError, match=r"(?i)ssl|certificate"):
            await store.put("tls/check.bin", b"x")
