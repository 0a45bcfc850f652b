"""``mistnet monitor``: watch ``mistnet.events`` and show a live table, plain lines, or JSON lines.

Live (default): the monitor declares its own exclusive, auto-delete queue ``mistnet.monitor.<id>``
bound to ``<job>.#`` (``#`` without ``--job``); it sees events from the moment it subscribes and
leaves nothing behind when it exits.

History (``--history``, alias ``--from-start``): events are also kept in the stream
``mistnet.events.history`` (declared at provisioning, bound to every event, trimmed by age). A stream
rather than a last-value store because the table needs every round of a job, not only the latest
event, and because a stream replays in publish order and then keeps delivering live events through the
same consumer: no gap and no duplicate between "history" and "live". The monitor consumes it from
``x-stream-offset: first`` with a prefetch and manual acks (streams require both), filters by job on
the routing key, and skips offsets it has already shown when aio-pika re-subscribes after a reconnect.

Both need only read permissions: the monitor user of ``mistnet provision`` may configure and read its
own ``mistnet.monitor.*`` queue and read the exchange and the stream, and may publish nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import uuid
from collections.abc import Callable
from typing import Any, TextIO

from consumers.monitor.table import MonitorState, render_event_line, render_state
from mistnet.commands.options import add_settings_flags, settings_from_args
from shared.config.monitor import MonitorSettings

log = logging.getLogger("mistnet.monitor")

#: Unacknowledged stream deliveries in flight; streams refuse consumers without a prefetch.
STREAM_PREFETCH = 200
CLEAR_SCREEN = "\x1b[H\x1b[2J"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(parser, MonitorSettings)
    parser.add_argument("--json", action="store_true", help="print each event as one JSON line (flushed)")
    parser.add_argument(
        "--history",
        "--from-start",
        dest="history",
        action="store_true",
        help="replay the events kept in the stream mistnet.events.history first (jobs that started earlier)",
    )
    parser.add_argument("--max-events", type=int, default=None, help="exit 0 after showing this many events")
    parser.add_argument("--until-done", action="store_true", help="exit 0 after the job's job.completed (needs --job)")
    parser.add_argument("--rounds-shown", type=int, default=30, help="rounds kept on screen per job (table view)")


class Display:
    """Where events go: JSON lines, plain lines, or a table redrawn in place on a terminal."""

    def __init__(self, out: TextIO, mode: str, rounds_shown: int):
        self.out, self.mode, self.rounds_shown = out, mode, rounds_shown
        self.state = MonitorState()

    def start(self) -> None:
        if self.mode == "table":
            self._redraw()

    def show(self, event: dict[str, Any]) -> None:
        self.state.apply(event)
        if self.mode == "json":
            self.out.write(json.dumps(event, separators=(",", ":")) + "\n")
        elif self.mode == "lines":
            self.out.write(render_event_line(event) + "\n")
        else:
            self._redraw()
            return
        self.out.flush()

    def _redraw(self) -> None:
        self.out.write(CLEAR_SCREEN + "\n".join(render_state(self.state, self.rounds_shown)) + "\n")
        self.out.flush()


def _decode(body: bytes) -> dict[str, Any] | None:
    from shared.wire.events import parse_event

    try:
        return parse_event(body)
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning("skipping an event that is not a JSON object with a type", extra={"error": str(exc)})
        return None


def _stream_offset(headers: dict[str, Any] | None) -> int | None:
    value = (headers or {}).get("x-stream-offset")
    return value if isinstance(value, int) else None


async def watch(
    settings: MonitorSettings,
    *,
    history: bool,
    show: Callable[[dict[str, Any]], bool],
    ready: Callable[[str], None],
) -> None:
    """Deliver the job's events to ``show`` until it returns False or the task is cancelled."""
    import aio_pika

    from shared.amqp.connection import BrokerConfig, connect
    from shared.amqp.topology import EVENTS_STREAM
    from shared.wire import names

    prefix = f"{settings.job}." if settings.job else ""
    inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
    config = BrokerConfig(settings.amqp_url.get_secret_value(), name="mistnet-monitor", ca_file=settings.amqp_ca_file)
    connection = await connect(config)
    async with connection:
        channel = await connection.channel()
        if history:
            await channel.set_qos(prefetch_count=STREAM_PREFETCH)
            try:
                queue = await channel.get_queue(EVENTS_STREAM, ensure=True)
            except aio_pika.exceptions.ChannelClosed as exc:
                raise RuntimeError(
                    f"the events stream {EVENTS_STREAM!r} is not readable ({exc}); run `mistnet provision` first"
                ) from exc
            await queue.consume(inbox.put, no_ack=False, arguments={"x-stream-offset": "first"})
            where = f"stream {EVENTS_STREAM} from its first offset"
        else:
            queue = await channel.declare_queue(
                f"mistnet.monitor.{uuid.uuid4().hex[:12]}", exclusive=True, auto_delete=True, durable=False
            )
            await queue.bind(names.EVENTS_EXCHANGE, routing_key=f"{prefix}#" if prefix else "#")
            await queue.consume(inbox.put, no_ack=True)
            where = f"queue {queue.name} bound to {names.EVENTS_EXCHANGE} with {prefix or ''}#"
        ready(where)
        last_offset = -1
        while True:
            message = await inbox.get()
            offset = _stream_offset(message.headers)
            if history:
                await message.ack()
                if offset is not None and offset <= last_offset:
                    continue  # replayed again after a reconnect
                last_offset = offset if offset is not None else last_offset
            if prefix and not (message.routing_key or "").startswith(prefix):
                continue
            event = _decode(message.body)
            if event is not None and not show(event):
                return


def run(args: argparse.Namespace) -> int:
    from shared.amqp.connection import BrokerUnavailableError
    from shared.observability.logs import configure_logging

    configure_logging("warning")
    settings = settings_from_args(MonitorSettings, args)
    if args.until_done and not settings.job:
        print("error: --until-done needs --job: which job's completion to wait for", file=sys.stderr)  # noqa: T201
        return 2
    mode = "json" if args.json else ("table" if sys.stdout.isatty() else "lines")
    display = Display(sys.stdout, mode, args.rounds_shown)
    shown = 0

    def show(event: dict[str, Any]) -> bool:
        nonlocal shown
        display.show(event)
        shown += 1
        done = args.until_done and event.get("type") == "job.completed" and event.get("job") == settings.job
        return not done and (args.max_events is None or shown < args.max_events)

    def ready(where: str) -> None:
        print(f"monitor: watching {where}", file=sys.stderr, flush=True)  # noqa: T201
        display.start()

    async def main() -> None:
        task = asyncio.ensure_future(watch(settings, history=args.history, show=show, ready=ready))
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(main())
    except (BrokerUnavailableError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    return 0
