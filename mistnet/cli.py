"""The ``mistnet`` console script: one entry point, a subcommand per task, each imported only when used."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol

from mistnet import __version__

# name -> (module with add_arguments/run, one-line help). Modules load lazily: torch is slow to import.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "edge": ("producers.edge.main", "edge producer daemon: release private features of local images"),
    "cloud": ("consumers.cloud.main", "cloud consumer daemon: ingest features, train round by round"),
    "monitor": ("consumers.monitor.main", "live table of a job's events (--json: one event per line)"),
    "eval": ("mistnet.commands.evaluate", "mAP of a model on a labelled folder"),
    "detect": ("mistnet.commands.detect", "draw a model's detections on an image"),
    "provision": ("mistnet.commands.provision", "create a job's broker users, permissions and topology"),
    "demo": ("mistnet.demo.main", "run a whole job on this machine and write a report"),
    "bench": ("mistnet.bench.main", "performance suite: the bars of DESIGN §9 as measured ratios"),
    "compare": ("mistnet.compare.main", "MistNet vs FedAvg vs centralised report, with a privacy audit"),
    "audit": ("mistnet.audit.main", "feature-inversion attack on released bits: SSIM/PSNR per privacy setting"),
}


class Command(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _load(name: str) -> Command | None:
    try:
        module = importlib.import_module(SUBCOMMANDS[name][0])
    except ModuleNotFoundError as exc:
        if exc.name and SUBCOMMANDS[name][0].startswith(exc.name):
            return None  # not built yet in this version
        raise
    return module


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mistnet",
        description="Privacy-preserving split training of YOLOv5 between edge nodes and a cloud.",
    )
    parser.add_argument("--version", action="version", version=f"mistnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        _top_parser().parse_args(argv or ["--help"])
        return 2
    name = argv[0]
    command = _load(name)
    if command is None:
        print(f"mistnet {name}: not available in this build", file=sys.stderr)  # noqa: T201
        return 2
    parser = argparse.ArgumentParser(prog=f"mistnet {name}", description=SUBCOMMANDS[name][1])
    command.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return command.run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
