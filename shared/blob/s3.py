"""S3 blob store (boto3, path-style): calls run in worker threads and are retried with back-off."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.blob.store import BlobError, BlobMissingError, BlobTooLargeError, check_key

log = logging.getLogger(__name__)
T = TypeVar("T")

_MISSING = {"404", "NoSuchKey", "NotFound"}
_AUTH = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"}


@dataclass(frozen=True)
class S3Config:
    """Endpoint and credentials; the secret is never logged."""

    endpoint_url: str | None
    access_key_id: str | None
    secret_access_key: str | None
    bucket: str
    region: str = "us-east-1"
    ca_bundle: Path | None = None
    attempts: int = 6
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    timeout_s: float = 30.0
    max_pool: int = 16


class S3BlobStore:
    """Objects in one bucket; ``put`` returns ``s3://bucket/key``."""

    def __init__(self, config: S3Config):
        self.config = config
        self.bucket = config.bucket
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=config.endpoint_url,
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            region_name=config.region,
            verify=str(config.ca_bundle) if config.ca_bundle else None,
            config=Config(
                s3={"addressing_style": "path"},
                signature_version="s3v4",
                connect_timeout=config.timeout_s,
                read_timeout=config.timeout_s,
                retries={"max_attempts": 1, "mode": "standard"},
                max_pool_connections=config.max_pool,
            ),
        )
        self.put_seconds = 0.0
        self.get_seconds = 0.0

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    async def _retry(self, what: str, call: Callable[[], T]) -> T:
        delay = self.config.backoff_s
        for attempt in range(1, self.config.attempts + 1):
            try:
                return await asyncio.to_thread(call)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in _MISSING:
                    raise BlobMissingError(f"{what}: object does not exist") from None
                if code in _AUTH:
                    raise BlobError(
                        f"{what}: S3 refused the credentials ({code}); check ACCESS_KEY_ID/SECRET_ACCESS_KEY"
                    ) from None
                error: Exception = exc
            except (BotoCoreError, OSError) as exc:
                error = exc
            log.warning(
                "s3 call failed, retrying",
                extra={"what": what, "attempt": attempt, "error": f"{type(error).__name__}: {error}"},
            )
            if attempt == self.config.attempts:
                raise BlobError(f"{what} failed after {attempt} attempts: {type(error).__name__}: {error}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.max_backoff_s)
        raise AssertionError("unreachable")

    async def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (needs the right to)."""

        def create() -> None:
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except ClientError:
                self._client.create_bucket(Bucket=self.bucket)

        await self._retry(f"create bucket {self.bucket}", create)

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        check_key(key)
        started = time.perf_counter()
        await self._retry(
            f"put {self.uri(key)}",
            lambda: self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type),
        )
        self.put_seconds += time.perf_counter() - started
        return self.uri(key)

    async def size(self, key: str) -> int:
        check_key(key)
        head = await self._retry(f"head {self.uri(key)}", lambda: self._client.head_object(Bucket=self.bucket, Key=key))
        return int(head["ContentLength"])

    async def get(self, key: str, max_bytes: int) -> bytes:
        """The object's bytes; its size is checked before downloading (from the response headers, in the
        same request) and while reading."""
        check_key(key)
        too_large: list[int] = []

        def read() -> bytes:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            body = response["Body"]
            try:
                size = int(response.get("ContentLength", 0))
                if size > max_bytes:
                    too_large.append(size)
                    return b""
                data: bytes = body.read(max_bytes + 1)
                return data
            finally:
                body.close()

        started = time.perf_counter()
        data = await self._retry(f"get {self.uri(key)}", read)
        if too_large:
            raise BlobTooLargeError(
                f"object {self.uri(key)} is {too_large[0]} bytes, more than the {max_bytes} allowed"
            )
        self.get_seconds += time.perf_counter() - started
        if len(data) > max_bytes:
            raise BlobTooLargeError(f"object {self.uri(key)} grew past the {max_bytes} bytes allowed")
        return data

    async def delete(self, key: str) -> None:
        check_key(key)
        await self._retry(f"delete {self.uri(key)}", lambda: self._client.delete_object(Bucket=self.bucket, Key=key))
