"""The composition root of ``mistnet edge`` in FedAvg mode: ledger, outbox, broker, S3, device, service."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

from producers.edge.broker import open_broker
from producers.edge.fedavg.outbox import UpdateOutbox
from producers.edge.fedavg.service import FedAvgEdgeClients, FedAvgEdgeService
from producers.edge.ledger import LEDGER_FILE, Ledger
from producers.edge.metrics import EdgeMetrics
from shared.blob.factory import build_blob_store
from shared.config.edge import EdgeSettings
from shared.observability.http import MetricsServer
from shared.training.optim import resolve_device
from shared.wire import names

log = logging.getLogger(__name__)


async def build_fedavg_edge(settings: EdgeSettings, stack: AsyncExitStack) -> FedAvgEdgeService:
    """Everything the FedAvg edge needs, closed by ``stack``; fails early on refused credentials."""
    device = resolve_device(settings.device)
    ledger = Ledger(settings.state_dir / LEDGER_FILE, settings.edge)
    stack.callback(ledger.close)
    outbox = UpdateOutbox(settings.state_dir / LEDGER_FILE)
    stack.callback(outbox.close)
    connection, publisher = await open_broker(settings, stack)
    blob = build_blob_store(settings)
    # Updates always go to S3: find refused credentials or a missing bucket now, before any training.
    await blob.put(f"{names.update_prefix(settings.job, settings.edge)}write-check", b"")
    service = FedAvgEdgeService(settings, FedAvgEdgeClients(connection, publisher, blob, ledger, outbox), device=device)
    if settings.metrics_port:
        server = MetricsServer(EdgeMetrics().registry, service.health, settings.metrics_port).start()
        stack.callback(server.stop)
    log.info(
        "edge ready (fedavg)",
        extra={
            "job": settings.job,
            "edge": settings.edge,
            "broker": settings.amqp_url_redacted,
            "device": str(device),
            "control_queue": names.control_queue(settings.job, settings.edge),
            "privacy": "fedavg: raw images stay local; the weight update is sent without randomisation",
        },
    )
    return service
