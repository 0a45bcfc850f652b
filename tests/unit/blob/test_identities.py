"""S3 identities per role: scoped to the job's bucket and each edge's prefix; the deploy example is generated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.blob.identities import S3Key, cloud_actions, edge_actions, job_identities

REPO = Path(__file__).resolve().parents[3]


class TestIdentities:
    """Actions follow the object keys of DESIGN §4; names that could widen a scope are refused."""

    def test_actions(self) -> None:
        assert edge_actions("mistnet", "demo", "edge-a") == ["Write:mistnet/demo/features/edge-a/*"]
        assert cloud_actions("mistnet", "demo") == ["Read:mistnet", "Write:mistnet/demo/models/*"]

    @pytest.mark.parametrize(
        ("bucket", "edge"), [("mistnet", "edge-a*"), ("mistnet", "../x"), ("Bad_Bucket", "edge-a"), ("b", "e")]
    )
    def test_bad_names(self, bucket: str, edge: str) -> None:
        with pytest.raises(ValueError, match="name"):
            edge_actions(bucket, "demo", edge)

    def test_secret_not_in_repr(self) -> None:
        assert "hunter2" not in repr(S3Key("key", "hunter2"))

    def test_deploy_example_is_generated(self) -> None:
        example = json.loads((REPO / "deploy/seaweedfs/s3-identities.job-example.json").read_text())
        edges = {e: S3Key(f"{e}-REPLACE-ACCESS-KEY", f"{e}-REPLACE-SECRET") for e in ("edge-a", "edge-b")}
        cloud = S3Key("cloud-REPLACE-ACCESS-KEY", "cloud-REPLACE-SECRET")
        admin = S3Key("admin-REPLACE-ACCESS-KEY", "admin-REPLACE-SECRET")
        assert example == job_identities("mistnet", "demo", edges, cloud, admin)
