"""A real S3 API on localhost for the whole test session: moto in server mode.

The session's environment points every S3 client at it (``AWS_ENDPOINT_URL`` and test credentials, read by
pyarrow, boto3 and MLflow alike), and the session's Ray starts after it, so Ray workers inherit the same.
Cluster manifests' own ``s3://bucket/...`` arguments therefore reach it unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_REGION": "us-east-1"}


@dataclass
class S3Server:
    endpoint: str   # http://127.0.0.1:PORT

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ENV["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"], region_name=ENV["AWS_DEFAULT_REGION"])

    def bucket(self, name: str) -> str:
        """Create ``name`` (if new); returns ``s3://name``."""
        client = self.client()
        if name not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=name)
        return f"s3://{name}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def start() -> tuple[S3Server, object]:
    """Start the server on a free port and point this process's S3 clients at it."""
    import logging

    from moto.server import ThreadedMotoServer

    from tests.serve_helpers import free_port

    logging.getLogger("werkzeug").setLevel(logging.ERROR)   # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(ENV, AWS_ENDPOINT_URL=endpoint, MLFLOW_S3_ENDPOINT_URL=endpoint)
    return S3Server(endpoint), server
