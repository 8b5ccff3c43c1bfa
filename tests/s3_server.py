"""A local S3-compatible server (moto's server mode) on 127.0.0.1, for the remote-storage tests."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

ACCESS_KEY = "raytrade-test-access-key"
SECRET_KEY = "raytrade-test-secret-must-not-leak-0123456789"


@dataclass(frozen=True)
class LocalS3:
    """A running server: ``uri(bucket, path)`` names a location on it (endpoint in the query)."""

    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def uri(self, bucket: str, path: str = "") -> str:
        query = f"endpoint_override=127.0.0.1:{self.port}&scheme=http&region=us-east-1"
        return f"s3://{bucket}/{path.strip('/')}?{query}" if path else f"s3://{bucket}?{query}"

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def keys(self, bucket: str) -> list[str]:
        """Every object key of ``bucket``, sorted."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def body(self, bucket: str, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=bucket, Key=key)["Body"].read())


@contextmanager
def local_s3() -> Iterator[LocalS3]:
    """Start moto's ThreadedMotoServer on a free loopback port; stop it afterwards."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield LocalS3(port)
    finally:
        server.stop()


def use_credentials(monkeypatch: pytest.MonkeyPatch, cache: Any) -> None:
    """The test's S3 credentials in the environment (where the code reads them), and the mirrors
    of remote locations under ``cache``."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("RAYTRADE_CACHE_DIR", str(cache))
