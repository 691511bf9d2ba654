"""A real S3-compatible server on 127.0.0.1 for tests: moto's server mode in a thread (NOTES).

    from s3server import s3  # noqa: F401  (the fixture)

    def test_x(s3):
        s3.upload_tree(local_folder, "corpus")   # -> s3://bucket/corpus
        ... storage / discover / read_input on "s3://bucket/corpus" ...

While the fixture is up, os.environ holds AWS_ENDPOINT_URL and dummy keys (the values
`dataengine.storage.options_from_env` reads); the previous environment is restored afterwards.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

BUCKET = "bucket"
ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
       "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE")


@dataclass
class S3:
    endpoint: str
    bucket: str
    client: object  # a boto3 S3 client: an independent way in, to plant and change objects

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}".rstrip("/")

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def upload_tree(self, folder: Path, prefix: str) -> int:
        """Every file under `folder` (hidden ones too) as `prefix/REL`; returns how many."""
        n = 0
        for dirpath, _, files in os.walk(folder):
            for name in files:
                path = Path(dirpath) / name
                self.put(f"{prefix}/{path.relative_to(folder).as_posix()}", path.read_bytes())
                n += 1
        return n


@pytest.fixture(scope="module")
def s3():
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    saved = {k: os.environ.get(k) for k in ENV}
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for k in ENV:
            os.environ.pop(k, None)
        os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing",
                          AWS_SECRET_ACCESS_KEY="testing-secret", AWS_REGION="us-east-1")
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing-secret")
        client.create_bucket(Bucket=BUCKET)
        yield S3(endpoint, BUCKET, client)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()
