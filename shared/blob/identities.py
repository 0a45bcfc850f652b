"""S3 credentials per role for SeaweedFS (its ``-s3.config`` identities JSON), scoped by bucket and prefix.

SeaweedFS grants an identity actions like ``Write:BUCKET/PREFIX*`` (a trailing ``*`` matches by
prefix; without it the action covers the whole bucket). Verified against ``weed mini`` 4.48:

- an edge may only write (put, and delete, which SeaweedFS counts as a write) under
  ``<job>/features/<edge>/``: not another edge's prefix, not the models, not another bucket; it
  reads and lists nothing;
- the cloud reads the whole bucket (``HeadBucket`` needs bucket-wide Read) and writes only the job's
  models under ``<job>/models/``; a MODEL_URL elsewhere in the bucket needs one more Write action;
- an admin identity (``Admin``) creates the bucket at provisioning; no daemon needs it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.wire import names

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Key:
    """An access key pair; ``secret_key`` is a secret (never logged)."""

    access_key: str
    secret_key: str

    def __repr__(self) -> str:
        return f"S3Key(access_key={self.access_key!r}, secret_key='***')"


def edge_actions(bucket: str, job: str, edge: str) -> list[str]:
    """What edge ``edge`` may do: write its own claim-check objects, nothing else."""
    return [f"Write:{_bucket(bucket)}/{names.edge_prefix(job, names.check_name('edge', edge))}*"]


def cloud_actions(bucket: str, job: str) -> list[str]:
    """What the cloud may do: read every edge's objects, write the job's models."""
    return [f"Read:{_bucket(bucket)}", f"Write:{bucket}/{names.check_name('job', job)}/models/*"]


def job_identities(
    bucket: str, job: str, edges: Mapping[str, S3Key], cloud: S3Key, admin: S3Key | None = None
) -> dict[str, Any]:
    """The identities JSON (``weed mini -s3.config=FILE``) of one job: an edge per key, the cloud, an admin."""
    identities = []
    if admin is not None:
        identities.append(_identity("mistnet-admin", admin, ["Admin", "Read", "Write", "List", "Tagging"]))
    identities.append(_identity(f"mistnet-{job}-cloud", cloud, cloud_actions(bucket, job)))
    for edge, key in sorted(edges.items()):
        identities.append(_identity(f"mistnet-{job}-{edge}", key, edge_actions(bucket, job, edge)))
    return {"identities": identities}


def _identity(name: str, key: S3Key, actions: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "credentials": [{"accessKey": key.access_key, "secretKey": key.secret_key}],
        "actions": actions,
    }


def _bucket(bucket: str) -> str:
    if not _BUCKET.fullmatch(bucket):
        raise ValueError(f"bucket name {bucket!r} is not a valid S3 bucket name (3-63 of a-z, 0-9, '.', '-')")
    return bucket
