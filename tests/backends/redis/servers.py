"""Redis servers a test (or the test session) starts itself on free loopback ports.

Used for what the machine's shared Redis must not be used for: restarts, memory
measurements, ``SCRIPT FLUSH``, and a 3-node Redis Cluster. Every process started here
is stopped by its owner (and by ``atexit`` for the session-wide cluster), by pid.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis

START_TIMEOUT_S = 10.0


def have_redis_binaries() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, with_bus: bool = False) -> int:
    """A free loopback port (and, for cluster nodes, its bus port ``port + 10000``)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not with_bus or (port + 10000 < 65536 and _port_free(port + 10000)):
            return port
    raise RuntimeError("no free loopback port found")


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, with its data in ``directory``."""

    def __init__(
        self,
        directory: Path,
        *,
        appendonly: bool = False,
        cluster: bool = False,
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
        client_kwargs: dict[str, object] | None = None,
    ) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.cluster = cluster
        self.port = port or free_port(with_bus=cluster)
        self.extra_args = extra_args
        """More redis-server options (TLS, a unix socket...)."""
        self.client_kwargs = client_kwargs or {"host": "127.0.0.1", "port": self.port}
        """How :meth:`client` (and the readiness check) reaches the server."""
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def url(self, prefix: str | None = None, **options: str) -> str:
        query = {"prefix": prefix or f"test-{uuid.uuid4().hex[:10]}", **options}
        return f"redis://127.0.0.1:{self.port}/0?" + "&".join(f"{k}={v}" for k, v in query.items())

    def client(self) -> redis.Redis:
        return redis.Redis(socket_timeout=5, **self.client_kwargs)  # type: ignore[arg-type]

    def start(self) -> RedisServer:
        args = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always" if self.appendonly else "no",
            "--daemonize",
            "no",
        ]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        args += self.extra_args
        log = (self.directory / "redis.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with self.client() as client:
                    if client.ping():
                        return self
            except redis.exceptions.RedisError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start: {self.log()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM: Redis flushes its append-only file, then exits)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self, *, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


class RedisClusterServers:
    """Three cluster-enabled ``redis-server`` nodes joined by ``redis-cli --cluster
    create ... --cluster-replicas 0 --cluster-yes`` (all slots on three primaries)."""

    def __init__(self, directory: Path, nodes: int = 3) -> None:
        self.nodes = [RedisServer(directory / f"node-{n}", cluster=True) for n in range(nodes)]

    @property
    def port(self) -> int:
        return self.nodes[0].port

    def url(self, prefix: str | None = None) -> str:
        return self.nodes[0].url(prefix)

    def start(self) -> RedisClusterServers:
        for node in self.nodes:
            node.start()
        command = [
            "redis-cli",
            "--cluster",
            "create",
            *(f"127.0.0.1:{node.port}" for node in self.nodes),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ]
        subprocess.run(command, check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready():
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not become ready")
            time.sleep(0.05)
        return self

    def _ready(self) -> bool:
        for node in self.nodes:
            with node.client() as client:
                info = client.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text:
                    return False
        return True

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


_shared_lock = threading.Lock()
_shared_cluster: RedisClusterServers | None = None


def shared_cluster() -> RedisClusterServers:
    """The test session's cluster, started on first use and stopped at exit."""
    global _shared_cluster
    with _shared_lock:
        if _shared_cluster is None:
            directory = Path(tempfile.mkdtemp(prefix="shigoto-cluster-"))
            cluster = RedisClusterServers(directory)
            try:
                cluster.start()
            except BaseException:
                cluster.stop()
                raise
            atexit.register(_stop_shared, cluster, directory)
            _shared_cluster = cluster
        return _shared_cluster


def _stop_shared(cluster: RedisClusterServers, directory: Path) -> None:
    cluster.stop()
    shutil.rmtree(directory, ignore_errors=True)


def cluster_url(prefix: str) -> str:
    return shared_cluster().url(prefix)


if __name__ == "__main__":  # pragma: no cover - manual use: a cluster to play with
    demo = RedisClusterServers(Path(tempfile.mkdtemp(prefix="shigoto-cluster-"))).start()
    print(f"cluster up: {demo.url('demo')}  (pids {[n.proc.pid for n in demo.nodes if n.proc]})")
    print("Ctrl-C stops it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        demo.stop()
