"""``mistnet cloud``: the composition root that builds settings, clients and the daemon, and runs it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import torch

from consumers.cloud.fedavg.bootstrap import fedavg_service
from consumers.cloud.fedavg.service import FedAvgService
from consumers.cloud.ingest import Expectations
from consumers.cloud.job import RoundRunner
from consumers.cloud.metrics import CloudMetrics
from consumers.cloud.model import JobModel
from consumers.cloud.service import CloudService
from consumers.cloud.store import FeatureStore, StoreError
from consumers.cloud.trainer import TrainConfig, Trainer, resolve_device, return_large_frees
from mistnet.commands.options import add_settings_flags, settings_from_args
from shared.amqp.connection import BrokerUnavailableError, broker_config, connect
from shared.amqp.publisher import ConfirmedPublisher
from shared.blob.factory import build_blob_store
from shared.blob.s3 import S3BlobStore
from shared.blob.store import BlobError
from shared.config.cloud import CloudSettings
from shared.dataset.sources import DatasetError, discover
from shared.lifecycle import install_stop_signals
from shared.observability.http import MetricsServer
from shared.observability.logs import configure_logging
from shared.yolo.artifact import load_model
from shared.yolo.official import CheckpointError

log = logging.getLogger("mistnet.cloud")

#: Start-up failures reported as one line (exit 1) rather than a traceback.
_STARTUP_ERRORS = (CheckpointError, StoreError, BrokerUnavailableError, BlobError, DatasetError, ValueError, OSError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(parser, CloudSettings)
    # DESIGN §7 spells the S3 flag without the "-url".
    parser.add_argument("--s3-endpoint", dest="s3_endpoint_url", default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(CloudSettings, args)
    configure_logging(settings.log_level, settings.log_format)
    return asyncio.run(serve(settings))


async def serve(settings: CloudSettings) -> int:
    """Run the daemon until the job completes or SIGTERM/SIGINT; the exit code."""
    started = False
    try:
        async with cloud_service(settings) as service:
            started = True
            shutting_down = install_stop_signals(asyncio.get_running_loop(), service.request_stop)
            try:
                return await service.run()
            finally:
                shutting_down()
    except _STARTUP_ERRORS as exc:
        if started:
            raise
        log.error("cloud cannot start: %s", exc, extra={"job": settings.job})
        return 1


@asynccontextmanager
async def cloud_service(settings: CloudSettings) -> AsyncIterator[CloudService | FedAvgService]:
    """Everything the daemon needs, built once and closed on exit."""
    if settings.aggregation_algorithm == "fedavg":
        async with fedavg_service(settings) as fedavg:
            yield fedavg
        return
    torch.manual_seed(settings.seed)
    if settings.low_memory_training:
        return_large_frees()  # training's peak memory: see the function
    device = resolve_device(settings.device)
    model = JobModel.from_loaded(load_model(settings.weights, settings.img_size), settings.cut_layer, settings.img_size)
    public_val = discover(settings.public_val) if settings.public_val is not None else []
    async with AsyncExitStack() as stack:
        store = FeatureStore(settings.store)
        stack.callback(store.close)
        spec = model.spec
        store.bind(
            {
                "job": settings.job,
                "arch": spec.arch,
                "cut_layer": str(spec.cut_layer),
                "img_size": str(spec.img_size),
                "extractor_sha256": spec.extractor_sha256,
                "algorithm": "mistnet",
            }
        )
        blobs = build_blob_store(settings)
        if isinstance(blobs, S3BlobStore):
            await blobs.ensure_bucket()
        connection = await connect(broker_config(settings, f"mistnet-cloud-{settings.job}"))
        stack.push_async_callback(connection.close)
        publisher = ConfirmedPublisher(connection)
        stack.push_async_callback(publisher.close)
        metrics = CloudMetrics()
        config = TrainConfig(
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            optimizer=settings.optimizer,
            momentum=settings.momentum,
            weight_decay=settings.weight_decay,
            seed=settings.seed,
            img_size=settings.img_size,
            recompute_activations=settings.low_memory_training,
        )
        trainer = Trainer(model.cloud_part(), config, device)
        runner = RoundRunner(
            settings,
            model=model,
            trainer=trainer,
            store=store,
            blobs=blobs,
            publisher=publisher,
            metrics=metrics,
            public_val=public_val,
            stop=threading.Event(),
        )
        expect = Expectations(
            job=settings.job,
            model=spec,
            feature_chw=model.feature_chw,
            privacy=settings.privacy_params,
            num_classes=model.arch.nc,
            bucket=blobs.bucket,
            limits=settings.wire_limits,
            speakers=settings.speakers,
        )
        service = CloudService(
            settings,
            connection=connection,
            publisher=publisher,
            blobs=blobs,
            store=store,
            runner=runner,
            expect=expect,
            metrics=metrics,
        )
        if settings.metrics_port:
            server = MetricsServer(metrics.registry, service.health, settings.metrics_port).start()
            stack.callback(server.stop)
        log.info(
            "cloud started",
            extra={
                "job": settings.job,
                "broker": settings.amqp_url_redacted,
                "edges": settings.edges,
                "rounds": settings.rounds,
                "device": str(device),
                "store": str(settings.store),
            },
        )
        yield service
