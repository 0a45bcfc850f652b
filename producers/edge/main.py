"""`mistnet edge`: the composition root: settings, ledger, model, broker, S3, metrics, signals, run."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from contextlib import AsyncExitStack

import numpy as np

from mistnet.commands.options import add_settings_flags, settings_from_args
from producers.edge.broker import open_broker
from producers.edge.extract import extract_workers, prepare_extractor
from producers.edge.fedavg.bootstrap import build_fedavg_edge
from producers.edge.fedavg.service import FedAvgEdgeService
from producers.edge.ledger import LEDGER_FILE, Ledger
from producers.edge.metrics import EdgeMetrics
from producers.edge.release import ReleaseSpec
from producers.edge.service import EdgeClients, EdgeService
from shared.blob.factory import build_blob_store
from shared.blob.store import BlobStore
from shared.config.base import MiB, SettingsError
from shared.config.edge import EdgeSettings
from shared.lifecycle import install_stop_signals
from shared.observability.http import MetricsServer
from shared.observability.logs import configure_logging
from shared.training.optim import resolve_device
from shared.wire import names
from shared.wire.features import ModelSpec
from shared.yolo.artifact import LoadedModel, extractor_sha256, load_model
from shared.yolo.network import EdgeExtractor, split_state
from shared.yolo.table import build_arch, check_cut, feature_shape

log = logging.getLogger(__name__)

#: SIGTERM to exit: the service gets this long to finish the batch in hand (systemd/k8s allow 30 s).
SHUTDOWN_TIMEOUT_S = 25.0
#: Room for a message's fields and labels besides the packed bits, when deciding whether S3 is needed.
_MESSAGE_OVERHEAD_BYTES = 256 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(parser, EdgeSettings)


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 done or stopped by a signal, 1 a runtime failure (logged in one line), 2 a bad setting."""
    settings = settings_from_args(EdgeSettings, args)
    configure_logging(settings.log_level, settings.log_format)
    return asyncio.run(serve(settings, show_progress=sys.stderr.isatty()))


async def serve(settings: EdgeSettings, *, show_progress: bool = False, stop: asyncio.Event | None = None) -> int:
    """Build everything, run the service until done (``once``), a signal, ``stop`` or a fatal error."""
    stop = stop if stop is not None else asyncio.Event()
    extra = {"job": settings.job, "edge": settings.edge}
    loop = asyncio.get_running_loop()
    try:
        async with AsyncExitStack() as stack:
            service = await (
                build_fedavg_edge(settings, stack)
                if settings.aggregation_algorithm == "fedavg"
                else _build(settings, stack, show_progress)
            )
            stack.callback(install_stop_signals(loop, stop.set))  # runs first at exit: before the cleanup
            return await _run_until_stopped(service, stop)
    except SettingsError as exc:
        log.error("%s", exc, extra=extra)
        return 2
    except Exception as exc:
        log.error("%s", exc, extra=extra)
        log.debug("failure detail", exc_info=exc, extra=extra)
        return 1


async def _run_until_stopped(service: EdgeService | FedAvgEdgeService, stop: asyncio.Event) -> int:
    task = asyncio.create_task(service.run(stop))
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not task.done():
        log.info("signal received: finishing the batch in hand")
        await asyncio.wait({task}, timeout=SHUTDOWN_TIMEOUT_S)
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.warning("shutdown timed out; unconfirmed batches stay in the outbox for the next start")
        return 0
    task.result()
    return 0


def _load_extractor(settings: EdgeSettings) -> tuple[LoadedModel, EdgeExtractor]:
    loaded = load_model(settings.weights, settings.img_size)
    arch = build_arch(loaded.manifest.arch, loaded.manifest.nc)
    try:
        check_cut(arch, settings.cut_layer)
    except ValueError as exc:
        raise SettingsError(
            f"invalid setting cut_layer (env CUT_LAYER / MISTNET_CUT_LAYER, flag --cut-layer): {exc}"
        ) from None
    extractor = EdgeExtractor(arch, settings.cut_layer)
    extractor.load_state_dict(split_state(loaded.state, 0, settings.cut_layer))
    return loaded, extractor


async def _build(settings: EdgeSettings, stack: AsyncExitStack, show_progress: bool) -> EdgeService:
    loaded, extractor = _load_extractor(settings)
    extractor = prepare_extractor(extractor, resolve_device(settings.device), settings.extract_workers)
    ledger = Ledger(settings.state_dir / LEDGER_FILE, settings.edge)
    stack.callback(ledger.close)
    c, h, w = feature_shape(extractor.arch, settings.cut_layer, settings.img_size)
    connection, publisher = await open_broker(settings, stack)
    blob = build_blob_store(settings)
    max_message = settings.batch_size * c * h * w // 8 + _MESSAGE_OVERHEAD_BYTES
    if max_message >= settings.inline_threshold_bytes:
        await _check_blob_writable(blob, settings)
    spec = ReleaseSpec(
        job=settings.job,
        edge=settings.edge,
        model=ModelSpec(
            arch=loaded.manifest.arch,
            cut_layer=settings.cut_layer,
            img_size=settings.img_size,
            extractor_sha256=extractor_sha256(loaded.state, settings.cut_layer),
        ),
        privacy=settings.privacy_params,
        feature_shape=(c, h, w),
        inline_threshold_bytes=settings.inline_threshold_bytes,
        uri_of=blob.uri,
    )
    metrics = EdgeMetrics()
    service = EdgeService(
        settings,
        spec,
        EdgeClients(ledger, extractor, publisher, blob, metrics),
        seeds=np.random.SeedSequence(settings.seed),
        num_classes=loaded.manifest.nc,
        show_progress=show_progress,
    )
    if settings.metrics_port:

        def healthy() -> tuple[bool, str]:
            return (False, "broker connection lost") if connection.is_closed else service.health()

        server = MetricsServer(metrics.registry, healthy, settings.metrics_port).start()
        stack.callback(server.stop)
    log.info(
        "edge ready",
        extra={
            "job": settings.job,
            "edge": settings.edge,
            "broker": settings.amqp_url_redacted,
            "model": f"{loaded.manifest.arch} cut {settings.cut_layer} at {settings.img_size}",
            "bits_per_image": c * h * w,
            "device": str(next(extractor.parameters()).device),
            "extractors": extract_workers(extractor, settings.extract_workers),
            "privacy": settings.privacy.value,
            "epsilon_image": settings.privacy_params.epsilon_image(c * h * w),
            "inline_below_mib": round(settings.inline_threshold_bytes / MiB, 3),
        },
    )
    return service


async def _check_blob_writable(blob: BlobStore, settings: EdgeSettings) -> None:
    """Batches this large need S3: find refused credentials or a missing bucket now, before any release."""
    await blob.put(f"{names.edge_prefix(settings.job, settings.edge)}write-check", b"")
