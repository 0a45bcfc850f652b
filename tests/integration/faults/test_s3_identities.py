"""S3 credentials per role (shared/blob/identities.py) enforced by a real SeaweedFS: an edge writes only under
its own prefix and reads nothing; the cloud reads the bucket and writes only the job's models."""

from __future__ import annotations

import pytest

from shared.blob.identities import S3Key
from shared.blob.s3 import S3BlobStore, S3Config
from shared.blob.store import BlobError
from shared.wire import names
from tests.integration.faults.job import BUCKET, JOB, FaultStack

pytestmark = pytest.mark.services

OWN = names.feature_object_key(JOB, "edge-a", "a" * 64)
OTHER_EDGE = names.feature_object_key(JOB, "edge-b", "b" * 64)
LOOKALIKE = f"{JOB}/features/edge-ab/cc/{'c' * 64}.bin"  # edge-a's prefix without its slash
MODEL = f"{names.model_prefix(JOB, 1)}model.safetensors"


def store(stack: FaultStack, key: S3Key, bucket: str = BUCKET) -> S3BlobStore:
    return S3BlobStore(S3Config(stack.weed.endpoint, key.access_key, key.secret_key, bucket, attempts=1, timeout_s=5))


REFUSED = "refused the credentials"


class TestEdgeIdentity:
    """An edge's key writes its own claim-check objects and nothing else; it cannot read at all."""

    async def test_edge_scope(self, fault_stack: FaultStack) -> None:
        admin, edge = store(fault_stack, fault_stack.admin_key), store(fault_stack, fault_stack.edge_keys["edge-a"])
        await admin.put(OTHER_EDGE, b"edge-b's")
        assert await edge.put(OWN, b"mine") == f"s3://{BUCKET}/{OWN}"
        for key in (OTHER_EDGE, LOOKALIKE, MODEL, names.latest_model_key(JOB)):
            with pytest.raises(BlobError, match=REFUSED):
                await edge.put(key, b"x")
        for key in (OWN, OTHER_EDGE):
            with pytest.raises(BlobError, match=REFUSED):
                await edge.get(key, max_bytes=100)
        await store(fault_stack, fault_stack.admin_key, "mistnet-faults-other").ensure_bucket()
        with pytest.raises(BlobError, match=REFUSED):
            await store(fault_stack, fault_stack.edge_keys["edge-a"], "mistnet-faults-other").put(OWN, b"x")
        assert await admin.get(OTHER_EDGE, 100) == b"edge-b's"

    async def test_wrong_secret_refused(self, fault_stack: FaultStack) -> None:
        forged = S3Key(fault_stack.edge_keys["edge-a"].access_key, "not-the-secret")
        with pytest.raises(BlobError, match=REFUSED):
            await store(fault_stack, forged).put(OWN, b"x")


class TestCloudIdentity:
    """The cloud's key reads every edge's objects and the bucket, writes the job's models, not features."""

    async def test_cloud_scope(self, fault_stack: FaultStack) -> None:
        admin, cloud = store(fault_stack, fault_stack.admin_key), store(fault_stack, fault_stack.cloud_key)
        await admin.put(OTHER_EDGE, b"features")
        await cloud.ensure_bucket()  # HeadBucket: what `mistnet cloud` does at start
        assert await cloud.get(OTHER_EDGE, max_bytes=100) == b"features"
        await cloud.put(MODEL, b"weights")
        for key in (OWN, "otherjob/models/round-0001/model.safetensors"):
            with pytest.raises(BlobError, match=REFUSED):
                await cloud.put(key, b"x")
