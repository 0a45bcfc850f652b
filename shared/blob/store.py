"""The blob-store interface, key rules, and the local-folder store for machines without S3."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Protocol

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,1023}$")


class BlobError(RuntimeError):
    """An object could not be stored or fetched."""


class BlobMissingError(BlobError):
    """The object does not exist."""


class BlobTooLargeError(BlobError):
    """The object is larger than the caller allows."""


def check_key(key: str) -> str:
    """Refuse keys that could escape a prefix: ``..``, empty segments, odd characters."""
    if not _KEY.fullmatch(key) or ".." in key.split("/") or "//" in key or key.endswith("/"):
        raise ValueError(f"object key {key!r} is not a plain relative path of [A-Za-z0-9._/-]")
    return key


class BlobStore(Protocol):
    """Where payloads live; ``uri`` of a key is what goes on the wire."""

    bucket: str

    def uri(self, key: str) -> str: ...

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str: ...

    async def get(self, key: str, max_bytes: int) -> bytes: ...

    async def size(self, key: str) -> int: ...

    async def delete(self, key: str) -> None: ...


class FileBlobStore:
    """Objects as files under ``root/bucket``; for one-machine demos without an S3 server."""

    def __init__(self, root: Path, bucket: str):
        self.root = root
        self.bucket = bucket
        (root / bucket).mkdir(parents=True, exist_ok=True)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _path(self, key: str) -> Path:
        return self.root / self.bucket / check_key(key)

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        path = self._path(key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with tmp.open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(path)

        await asyncio.to_thread(write)
        return self.uri(key)

    async def get(self, key: str, max_bytes: int) -> bytes:
        size = await self.size(key)
        if size > max_bytes:
            raise BlobTooLargeError(f"object {key} is {size} bytes, more than the {max_bytes} allowed")
        return await asyncio.to_thread(self._path(key).read_bytes)

    async def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise BlobMissingError(f"object {self.uri(key)} does not exist") from None

    async def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
