"""A reusable check that metrics follow Prometheus naming conventions, for any daemon's registry or scrape.

Use ``registry_problems(registry)`` on a CollectorRegistry or ``exposition_problems(text)`` on a scraped
``/metrics`` body; each returns one sentence per problem (empty list: all good). Rules, after
https://prometheus.io/docs/practices/naming/ : prefix ``mistnet_``, snake case, base units only (seconds,
bytes; never ms, KiB, minutes, percent), counters exposed as ``_total``, histograms and summaries named
with their unit, timestamps as ``_timestamp_seconds``, gauges not ending in ``_total``, suffixes
``_count``/``_sum``/``_bucket`` left to the client library, help text present, and no label that grows
without bound (ids, paths of files, digests, rounds...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

PREFIX = "mistnet_"
NAME = re.compile(r"^[a-z][a-z0-9_]*[a-z0-9]$")
#: Units a histogram or summary name may end with: base units, or a count of a named thing.
HISTOGRAM_UNITS = ("seconds", "bytes", "ratio", "images", "samples", "messages", "batches")
NON_BASE_UNITS = frozenset(
    {"ms", "msec", "millis", "milliseconds", "us", "usec", "microseconds", "ns", "nanoseconds", "minutes", "mins"}
    | {"hours", "days", "kb", "kib", "mb", "mib", "gb", "gib", "kilobytes", "megabytes", "gigabytes", "bits"}
    | {"percent", "pct"}
)
RESERVED_SUFFIXES = ("_count", "_sum", "_bucket", "_created", "_info")
UNBOUNDED_LABELS = frozenset(
    {"id", "message_id", "uuid", "image", "image_id", "file", "filename", "uri", "url", "key", "object_key"}
    | {"sha256", "digest", "seq", "sequence", "batch_id", "round", "timestamp", "ip", "address"}
)
#: More series than this in one family usually means a label is unbounded.
MAX_SERIES = 200


def family_problems(family: Metric) -> list[str]:
    """Problems of one metric family (name, type, unit, labels)."""
    name, kind = family.name, family.type
    problems = []
    if not name.startswith(PREFIX):
        problems.append(f"{name}: does not start with {PREFIX}")
    if not NAME.fullmatch(name) or "__" in name:
        problems.append(f"{name}: not snake_case [a-z0-9_]")
    tokens = set(name.split("_"))
    if tokens & NON_BASE_UNITS:
        problems.append(f"{name}: uses non-base unit(s) {sorted(tokens & NON_BASE_UNITS)}; use seconds or bytes")
    if not (family.documentation or "").strip():
        problems.append(f"{name}: has no help text")
    if kind == "counter":
        bad = [s.name for s in family.samples if not s.name.endswith(("_total", "_created"))]
        if bad:
            problems.append(f"{name}: counter samples {sorted(set(bad))} do not end in _total")
    elif name.endswith("_total"):
        problems.append(f"{name}: only counters end in _total ({kind})")
    if kind in ("histogram", "summary") and not name.endswith(tuple(f"_{u}" for u in HISTOGRAM_UNITS)):
        problems.append(f"{name}: a {kind} must name its unit, e.g. _seconds or _bytes")
    if "timestamp" in tokens and not name.endswith("_timestamp_seconds"):
        problems.append(f"{name}: timestamps are _timestamp_seconds (Unix time in seconds)")
    if kind in ("counter", "gauge") and name.endswith(RESERVED_SUFFIXES):
        problems.append(f"{name}: ends in a suffix reserved for histograms/summaries/info")
    labels = {label for sample in family.samples for label in sample.labels} - {"le", "quantile"}
    if labels & UNBOUNDED_LABELS:
        problems.append(f"{name}: label(s) {sorted(labels & UNBOUNDED_LABELS)} grow without bound")
    series = {tuple(sorted(s.labels.items())) for s in family.samples if not s.name.endswith(("_bucket", "_created"))}
    if len(series) > MAX_SERIES:
        problems.append(f"{name}: {len(series)} series; is a label unbounded?")
    return problems


def families_problems(families: Iterable[Metric]) -> list[str]:
    return [problem for family in families for problem in family_problems(family)]


def registry_problems(registry: CollectorRegistry) -> list[str]:
    """Problems of every family a registry exposes."""
    return families_problems(registry.collect())


def exposition_problems(text: str) -> list[str]:
    """Problems of a scraped Prometheus text exposition.

    The classic text format shows a counter's or histogram's ``_created`` series as a gauge family of
    its own; those belong to their parent and are not judged separately.
    """
    families = list(text_string_to_metric_families(text))
    names = {family.name for family in families}
    return families_problems(f for f in families if not (f.name.endswith("_created") and f.name[:-8] in names))
