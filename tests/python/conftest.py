"""Starts a real `skiff server` for the Python client tests.

The binary is $SKIFF_BIN, else the release build in $CARGO_TARGET_DIR (or ./target).
The server runs on a free 127.0.0.1 port with a temporary data dir and is killed by PID.
"""
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def skiff_bin() -> str:
    if os.environ.get("SKIFF_BIN"):
        return os.environ["SKIFF_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR") or str(REPO / "target")
    return str(Path(target) / "release" / "skiff")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="skiff-pytest-")
        self.dir = Path(self.tmp.name)
        self.port = free_port()
        self.kubeconfig = self.dir / "kubeconfig.yaml"
        self.log_path = self.dir / "server.log"
        self.proc = None

    def start(self, timeout=60):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [skiff_bin(), "server", "--disable-agent",
             "--data-dir", str(self.dir / "data"),
             "--https-listen-port", str(self.port),
             "--bind-address", "127.0.0.1",
             "--write-kubeconfig", str(self.kubeconfig)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + timeout
        last = ""
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"skiff server exited ({self.proc.returncode}):\n{self.log_tail()}")
            if self.kubeconfig.exists():
                r = subprocess.run(
                    ["kubectl", "--kubeconfig", str(self.kubeconfig), "get", "--raw", "/readyz",
                     "--request-timeout=5s"],
                    capture_output=True, text=True, stdin=subprocess.DEVNULL,
                )
                if r.returncode == 0 and r.stdout.strip() == "ok":
                    return
                last = r.stdout + r.stderr
            time.sleep(0.1)
        raise RuntimeError(f"skiff server not ready after {timeout}s: {last}\n{self.log_tail()}")

    def log_tail(self, n=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)  # by PID, never by name
            self.proc.wait()
        self.tmp.cleanup()


@pytest.fixture(scope="module")
def server():
    s = Server()
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def api(server):
    from kubernetes import client, config

    return config.new_client_from_config(config_file=str(server.kubeconfig))


@pytest.fixture
def ns(api, request):
    """A fresh namespace per test."""
    from kubernetes import client

    name = "py-" + request.node.name.replace("_", "-").lower()[:40].rstrip("-")
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name
