"""Build the blob store a daemon's settings ask for (composition roots call this, nothing else)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from shared.blob.s3 import S3BlobStore, S3Config
from shared.blob.store import BlobStore, FileBlobStore
from shared.config.base import CommonSettings


def s3_config(settings: CommonSettings) -> S3Config:
    secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
    return S3Config(
        endpoint_url=settings.s3_endpoint_url,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=secret,
        bucket=settings.bucket,
        region=settings.s3_region,
        ca_bundle=settings.s3_ca_bundle,
        attempts=settings.s3_attempts,
        timeout_s=settings.s3_timeout_s,
    )


def build_blob_store(settings: CommonSettings) -> BlobStore:
    """S3 when ``blob_store`` is ``s3``, else the folder of a ``file:///DIR`` URL."""
    if settings.blob_store == "s3":
        return S3BlobStore(s3_config(settings))
    return FileBlobStore(Path(urlsplit(settings.blob_store).path), settings.bucket)
