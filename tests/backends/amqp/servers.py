"""RabbitMQ for the tests: the machine's broker on 127.0.0.1:5672 (guest/guest), a random
queue prefix per URL and ``expires=60`` (the broker deletes each queue a minute after its
last use, so nothing is left behind even when a test dies halfway); and, for restart
scenarios, a test-owned broker node on free ports.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

AMQP_HOST = "127.0.0.1"
AMQP_PORT = int(os.environ.get("SHIGOTO_TEST_AMQP_PORT", "5672"))


def have_rabbitmqctl() -> bool:
    return shutil.which("rabbitmqctl") is not None


def _ctl(*args: str, node: str | None = None, env: dict[str, str] | None = None) -> None:
    command = ["rabbitmqctl", *(["-n", node] if node else []), *args]
    subprocess.run(
        command, check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=60, env=env
    )


def session_vhost() -> str:
    """The vhost of the shared broker's tests: the default one; isolation is by a random
    ``prefix`` per URL and cleanup by ``expires`` (the broker deletes a test's queues
    once unused). ``rabbitmqctl`` is never run on the shared node: each call holds one of
    its few CLI distribution ports, and parallel sessions exhausted them."""
    return os.environ.get("SHIGOTO_TEST_AMQP_VHOST", "/")


def amqp_url(
    store_url: str | None, *, port: int = AMQP_PORT, vhost: str | None = None, **opts: str
) -> str:
    """An ``amqp://`` URL in a fresh namespace (random prefix) over ``store_url``
    (None: a store-less URL)."""
    vhost = session_vhost() if vhost is None else vhost
    options = {"prefix": f"t-{uuid.uuid4().hex[:10]}", "expires": "60", **opts}
    extra = os.environ.get("SHIGOTO_TEST_AMQP_OPTIONS", "")  # e.g. classic=*
    query = "&".join([f"{k}={v}" for k, v in options.items()] + ([extra] if extra else []))
    store = f"&store={store_url}" if store_url is not None else ""
    return f"amqp://guest:guest@{AMQP_HOST}:{port}/{quote(vhost, safe='')}?{query}{store}"


_handshakes: dict[int, bool] = {}


def broker_answers(port: int = AMQP_PORT, timeout_s: float = 3.0) -> bool:
    """Does a broker on ``port`` answer the AMQP protocol header (cached per session)?

    A wedged broker still accepts TCP connections but never sends ``Connection.Start``;
    without this check every test would wait for its connect timeout."""
    if port not in _handshakes:
        try:
            with socket.create_connection((AMQP_HOST, port), timeout=timeout_s) as sock:
                sock.sendall(b"AMQP\x00\x00\x09\x01")
                _handshakes[port] = sock.recv(1) == b"\x01"  # a method frame
        except OSError:
            _handshakes[port] = False
    return _handshakes[port]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RabbitNode:
    """A broker node of its own (own name, ports, data directory), for restarts.

    Started with ``rabbitmq-server`` in the foreground as a child process and stopped by
    its pid (``stop``) — never the machine's shared node.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.name = f"shigoto-{uuid.uuid4().hex[:8]}@localhost"
        self.process: subprocess.Popen[bytes] | None = None
        config = directory / "rabbitmq.conf"
        config.write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\n")
        (directory / "enabled_plugins").write_text("[].\n")
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(directory / "node.pid"),
            # the CLI's own distribution ports: not the shared node's small default range
            "RABBITMQ_CTL_DIST_PORT_MIN": "45800",
            "RABBITMQ_CTL_DIST_PORT_MAX": "45899",
        }
        shutil.chown(directory, "rabbitmq", "rabbitmq")  # the server runs as that user
        for child in directory.iterdir():
            shutil.chown(child, "rabbitmq", "rabbitmq")

    @property
    def url_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        log = open(self.directory / "stdout.log", "ab")  # noqa: SIM115 - lives with the child
        self.process = subprocess.Popen(
            ["rabbitmq-server"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited; see {self.directory}/stdout.log")
            try:
                _ctl("await_startup", "--timeout", "5", node=self.name, env=self.env)
                return
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                time.sleep(0.5)
        raise RuntimeError(f"rabbitmq-server did not start in {timeout_s}s")

    def stop(self) -> None:
        """Stop the node (its data stays, so ``start`` again is a broker restart)."""
        if self.process is None:
            return
        try:
            _ctl("stop", node=self.name, env=self.env)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.process.kill()
        self.process.wait(timeout=60)
        self.process = None


def temporary_node() -> RabbitNode:
    return RabbitNode(Path(tempfile.mkdtemp(prefix="shigoto-rabbit-")))
