"""A real job on the fault-only services: two ``mistnet edge`` processes and ``mistnet cloud``, tiny inputs.

Secrets travel in each child's environment (never on its command line); logs are JSON lines read as
they come, so a test can act the moment a daemon says something (``batch confirmed``, ``training
step``). The fault stack's S3 credentials are scoped per role (shared/blob/identities.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.amqp.connection import BrokerConfig, connect
from shared.amqp.management import ManagementClient
from shared.amqp.provision import Credentials, JobAccess, provision_job
from shared.amqp.topology import QueuePolicy, declare_job_topology
from shared.blob.identities import S3Key
from shared.wire import names
from tests.integration.edge_support import copy_images
from tests.integration.faults.checker import FaultWindow, Verdict, check_job
from tests.integration.faults.services import FaultRabbit, FaultWeed

MISTNET = Path(sys.executable).with_name("mistnet")
JOB = "faults"
BUCKET = "mistnet-faults"
EDGES = ("edge-a", "edge-b")
EVENTS_QUEUE = "test.fault-events"
IMG_SIZE = 64
#: Short client timeouts and many tries: faults last seconds, and the suite must too.
EDGE_FLAGS = {
    "confirm-timeout-s": 5,
    "publish-attempts": 40,
    "connect-attempts": 20,
    "s3-timeout-s": 2,
    "s3-attempts": 15,
}
CLOUD_FLAGS = {"s3-timeout-s": 2, "s3-attempts": 15, "connect-attempts": 20}


@dataclass(frozen=True)
class FaultStack:
    """The fault-only broker and S3 server with their credentials (S3 keys per role)."""

    rabbit: FaultRabbit
    weed: FaultWeed
    admin_key: S3Key
    cloud_key: S3Key
    edge_keys: dict[str, S3Key]

    def api(self) -> ManagementClient:
        return ManagementClient(f"http://127.0.0.1:{self.rabbit.management_port}", "guest", "guest")

    def amqp_url(self, vhost: str, user: str = "guest", password: str = "guest") -> str:
        return f"amqp://{user}:{password}@127.0.0.1:{self.rabbit.amqp_port}/{vhost}"


class Daemon:
    """One ``mistnet`` child process; its stderr JSON lines land in :attr:`logs` as they are written."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]):
        self.name, self.argv, self.env = name, argv, env
        self.logs: list[dict[str, Any]] = []
        self.stderr = bytearray()
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._new_line = asyncio.Event()

    async def start(self) -> Daemon:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.stderr += line
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"msg": line.decode(errors="replace").rstrip(), "level": "raw"}
            self.logs.append(entry if isinstance(entry, dict) else {"msg": str(entry)})
            self._new_line.set()
        self._new_line.set()

    async def wait_log(self, match: Callable[[dict[str, Any]], bool], timeout_s: float) -> dict[str, Any]:
        """The first log entry matching ``match`` (already written or to come)."""
        seen = 0
        async with asyncio.timeout(timeout_s):
            while True:
                for entry in self.logs[seen:]:
                    if match(entry):
                        return entry
                seen = len(self.logs)
                if self._reader is not None and self._reader.done():
                    raise AssertionError(f"{self.name} exited ({self.returncode}) before the log; {self.tail()}")
                self._new_line.clear()
                await self._new_line.wait()

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signum)

    async def kill(self) -> int:
        self.signal(signal.SIGKILL)
        return await self.wait(30)

    async def wait(self, timeout_s: float) -> int:
        assert self.proc is not None and self._reader is not None
        async with asyncio.timeout(timeout_s):
            code = await self.proc.wait()
            await self._reader
        return code

    def tail(self, lines: int = 8) -> str:
        return "\n".join(json.dumps(e) for e in self.logs[-lines:])


def logged(msg: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("msg") == msg and all(e.get(k) == v for k, v in fields.items())


@dataclass
class FaultJob:
    """One job in a fresh vhost of the fault broker; edges' data, state dirs and the store under ``tmp``."""

    stack: FaultStack
    vhost: str
    tmp: Path
    weights: Path
    images: dict[str, int]
    rounds: int = 2
    passwords: dict[str, str] = field(default_factory=dict)
    faults: list[FaultWindow] = field(default_factory=list)
    daemons: list[Daemon] = field(default_factory=list)

    @classmethod
    async def create(
        cls, stack: FaultStack, vhost: str, tmp: Path, coco128: Path, weights: Path, **kw: Any
    ) -> FaultJob:
        images = kw.pop("images", {"edge-a": 8, "edge-b": 6})
        job = cls(stack, vhost, tmp, weights, images, **kw)
        job.passwords = {user: f"{user}-{vhost[-6:]}-pw" for user in (*EDGES, "cloud")}
        access = JobAccess(
            vhost=vhost,
            job=JOB,
            edges={e: Credentials(e, job.passwords[e]) for e in EDGES},
            cloud=Credentials("cloud", job.passwords["cloud"]),
            extra_admins=["guest"],
        )
        await asyncio.to_thread(provision_job, stack.api(), access)
        start = 0
        for edge in EDGES:
            copy_images(coco128, tmp / edge / "data", images[edge], start=start)
            start += images[edge]
        connection = await connect(BrokerConfig(stack.amqp_url(vhost)))
        async with connection:
            channel = await connection.channel()
            await declare_job_topology(channel, JOB, list(EDGES), QueuePolicy())
            events = await channel.declare_queue(EVENTS_QUEUE, durable=True)
            for kind in ("round.completed", "job.completed"):
                await events.bind(names.EVENTS_EXCHANGE, routing_key=names.event_routing_key(JOB, kind))
        return job

    @property
    def store(self) -> Path:
        return self.tmp / "store"

    def state(self, edge: str) -> Path:
        return self.tmp / edge / "state"

    def _env(self, user: str, key: S3Key) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MISTNET_")}
        env.update(
            {
                "MISTNET_AMQP_URL": self.stack.amqp_url(self.vhost, user, self.passwords[user]),
                "ACCESS_KEY_ID": key.access_key,
                "SECRET_ACCESS_KEY": key.secret_key,
            }
        )
        return env

    def _common(self) -> dict[str, object]:
        return {
            "job": JOB,
            "weights": self.weights,
            "img-size": IMG_SIZE,
            "cut-layer": 4,
            "privacy": "rr-sym",
            "epsilon": 100,
            "blob-store": "s3",
            "s3-endpoint-url": self.stack.weed.endpoint,
            "bucket": BUCKET,
            "batch-size": 2,
            "log-format": "json",
        }

    async def start_edge(self, edge: str, **flags: object) -> Daemon:
        args = {
            **self._common(),
            **EDGE_FLAGS,
            "edge": edge,
            "data": self.tmp / edge / "data",
            "state-dir": self.state(edge),
            "inline-threshold-bytes": 0,  # every batch by claim check: S3 is on the path
            "val-fraction": 0.25,
            "seed": 11,
            **flags,
        }
        argv = [str(MISTNET), "edge", "--once", *[f"--{k}={v}" for k, v in args.items()]]
        daemon = await Daemon(edge, argv, self._env(edge, self.stack.edge_keys[edge])).start()
        self.daemons.append(daemon)
        return daemon

    async def start_cloud(self, **flags: object) -> Daemon:
        args = {
            **self._common(),
            **CLOUD_FLAGS,
            "edges": ",".join(EDGES),
            "rounds": self.rounds,
            "epochs": 1,
            "store": self.store,
            "device": "cpu",
            "seed": 3,
            "log-level": "debug",
            **flags,
        }
        argv = [str(MISTNET), "cloud", *[f"--{k}={v}" for k, v in args.items()]]
        daemon = await Daemon("cloud", argv, self._env("cloud", self.stack.cloud_key)).start()
        self.daemons.append(daemon)
        return daemon

    async def start_all(self, **cloud_flags: object) -> tuple[Daemon, Daemon, Daemon]:
        cloud = await self.start_cloud(**cloud_flags)
        return cloud, await self.start_edge("edge-a"), await self.start_edge("edge-b")

    def fault(self, what: str, started_at: float) -> None:
        self.faults.append(FaultWindow(what, started_at, time.time()))

    async def finish(self, *daemons: Daemon, timeout_s: float = 150) -> None:
        """Every daemon given exits 0 in time (the cloud after its last round, edges after edge.done)."""
        for daemon in daemons:
            code = await daemon.wait(timeout_s)
            saved = self.tmp / f"{daemon.name}.log"
            if code != 0:
                saved.write_bytes(bytes(daemon.stderr))
            assert code == 0, f"{daemon.name} exited {code} (whole log: {saved}):\n{daemon.tail(15)}"

    async def drain(self, queue_name: str) -> list[Any]:
        connection = await connect(BrokerConfig(self.stack.amqp_url(self.vhost)))
        found = []
        async with connection:
            queue = await (await connection.channel()).get_queue(queue_name, ensure=False)
            while (message := await queue.get(no_ack=True, fail=False, timeout=5)) is not None:
                found.append(message)
        return found

    async def check(self) -> Verdict:
        """The checker's verdict on this job (events and dead letters drained from the broker)."""
        events = [json.loads(m.body) for m in await self.drain(EVENTS_QUEUE) if m.type == "round.completed"]
        dead = [str(m.message_id) for m in await self.drain(names.dead_queue(JOB))]
        verdict = check_job(
            JOB,
            {edge: self.state(edge) for edge in EDGES},
            self.store,
            events,
            rounds=self.rounds,
            faults=self.faults,
            dead_message_ids=dead,
        )
        print(f"\n{verdict.summary()}")
        return verdict

    async def close(self) -> None:
        """Kill whatever still runs (a failed test) and resume paused processes."""
        for daemon in self.daemons:
            if daemon.returncode is None:
                daemon.signal(signal.SIGCONT)
                await daemon.kill()
