"""The composition root of ``mistnet cloud`` in FedAvg mode: settings -> stores, clients, rounds, service."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from consumers.cloud.fedavg.ingest import UpdateExpectations
from consumers.cloud.fedavg.rounds import CloudParts, FedAvgRounds
from consumers.cloud.fedavg.service import FedAvgService
from consumers.cloud.fedavg.store import UpdateStore
from consumers.cloud.metrics import CloudMetrics
from consumers.cloud.outbox import RoundOutbox
from consumers.cloud.store import FeatureStore, StoreError
from shared.amqp.connection import broker_config, connect
from shared.amqp.publisher import ConfirmedPublisher
from shared.blob.factory import build_blob_store
from shared.blob.s3 import S3BlobStore
from shared.config.cloud import CloudSettings
from shared.dataset.sources import discover
from shared.observability.http import MetricsServer
from shared.training.fedavg import update_layout
from shared.yolo.artifact import load_model

log = logging.getLogger("mistnet.cloud")


@asynccontextmanager
async def fedavg_service(settings: CloudSettings) -> AsyncIterator[FedAvgService]:
    """Everything the FedAvg daemon needs, built once and closed on exit."""
    pretrained = load_model(settings.weights, settings.img_size)
    public_val = discover(settings.public_val) if settings.public_val is not None else []
    async with AsyncExitStack() as stack:
        store = FeatureStore(settings.store)
        stack.callback(store.close)
        if store.meta("extractor_sha256") is not None:
            raise StoreError(f"store {settings.store} holds a MistNet job; use another --store folder for FedAvg")
        store.bind(
            {
                "job": settings.job,
                "algorithm": "fedavg",
                "arch": pretrained.manifest.arch,
                "img_size": str(settings.img_size),
            }
        )
        updates = UpdateStore(settings.store)
        stack.callback(updates.close)
        blobs = build_blob_store(settings)
        if isinstance(blobs, S3BlobStore):
            await blobs.ensure_bucket()
        connection = await connect(broker_config(settings, f"mistnet-cloud-{settings.job}"))
        stack.push_async_callback(connection.close)
        publisher = ConfirmedPublisher(connection)
        stack.push_async_callback(publisher.close)
        metrics = CloudMetrics()
        rounds = FedAvgRounds(
            settings,
            CloudParts(store=store, updates=updates, blobs=blobs, publisher=publisher),
            pretrained=pretrained,
            public_val=public_val,
            stop=threading.Event(),
        )
        expected = settings.expected_edges.names
        assert expected is not None, "CloudSettings requires edge names for fedavg"
        expect = UpdateExpectations(
            job=settings.job,
            bucket=blobs.bucket,
            speakers=settings.speakers,
            expected=expected,
            layout=update_layout(pretrained.state),
            max_object_bytes=settings.max_object_bytes,
        )
        service = FedAvgService(
            settings,
            connection=connection,
            rounds=rounds,
            outbox=RoundOutbox(settings, store=store, blobs=blobs, publisher=publisher),
            expect=expect,
            metrics=metrics,
        )
        if settings.metrics_port:
            server = MetricsServer(metrics.registry, service.health, settings.metrics_port).start()
            stack.callback(server.stop)
        log.info(
            "cloud started (fedavg)",
            extra={
                "job": settings.job,
                "broker": settings.amqp_url_redacted,
                "edges": settings.edges,
                "rounds": settings.rounds,
                "min_edges": settings.min_edges,
                "round_deadline_s": settings.round_deadline_s,
                "store": str(settings.store),
            },
        )
        yield service
