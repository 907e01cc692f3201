"""A Ray cluster of separate ``ray start`` nodes on 127.0.0.1, for tests: a head and worker
nodes, each with its own temporary folder, optionally in a mount namespace of its own that hides
a folder of this machine from it, killable one by one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil

RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def can_hide_folders() -> bool:
    """Whether nodes can get a mount namespace of their own here (root, ``unshare``)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--mount", "--propagation", "private", "true"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


@dataclass
class Node:
    """One ``ray start`` node: its temporary folder (Ray's ``--temp-dir``, also its ``HOME``
    and ``TMPDIR``) and the folder its processes see empty and read-only (``None``: none)."""

    temp_dir: Path
    hidden: Path | None = None

    def processes(self) -> list[psutil.Process]:
        """The node's Ray processes (raylet, its workers...), found by their temp folder."""
        mine = []
        for process in psutil.process_iter(["cmdline", "environ"]):
            try:
                cmdline = " ".join(process.info["cmdline"] or ())
                environ = process.info["environ"] or {}
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if str(self.temp_dir) in cmdline or environ.get("TMPDIR") == str(self.temp_dir):
                mine.append(process)
        return mine

    def raylet(self) -> psutil.Process:
        return next(p for p in self.processes() if p.name() == "raylet")

    def sees(self, path: Path) -> bool:
        """Whether the node's processes see ``path`` (through their mount namespace)."""
        return Path(f"/proc/{self.raylet().pid}/root{path}").exists()


@dataclass
class LoopbackCluster:
    """Start with :meth:`start_head`, add nodes with :meth:`add_worker`, :meth:`stop` at the
    end (it also removes every node's folder)."""

    root: Path  # short: Ray's socket paths are limited to about 100 characters
    nodes: list[Node] = field(default_factory=list)
    address: str = ""

    def _start(self, node: Node, args: list[str]) -> None:
        node.temp_dir.mkdir(parents=True)
        env = {
            **os.environ,
            "RAY_AUTH_MODE": "disabled",
            "PYTHONPATH": os.getcwd(),
            "HOME": str(node.temp_dir),
            "TMPDIR": str(node.temp_dir),
        }
        env.pop("RAY_ADDRESS", None)
        env.pop("XDG_CACHE_HOME", None)  # the node's caches are under its own HOME
        command = [str(RAY), "start", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
        command += [f"--temp-dir={node.temp_dir}", *args]
        if node.hidden is not None:  # an empty read-only tmpfs over it, for this node only
            mount = 'mount -t tmpfs -o ro tmpfs "$0" && exec "$@"'
            unshare = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount]
            command = [*unshare, str(node.hidden), *command]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
        self.nodes.append(node)

    def start_head(self, cpus: int) -> str:
        """Start the head node with ``cpus`` CPUs; the cluster's address."""
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        flags = ["--head", f"--port={port}", "--include-dashboard=false", f"--num-cpus={cpus}"]
        self._start(Node(self.root / "head"), flags)
        return self.address

    def add_worker(self, cpus: int = 1, hidden: Path | None = None, gpus: int = 0) -> Node:
        """A worker node with ``cpus`` CPUs and ``gpus`` GPUs (declared to Ray, not real)
        whose processes do not see ``hidden``."""
        node = Node(self.root / f"worker{len(self.nodes)}", hidden)
        flags = [f"--address={self.address}", f"--num-cpus={cpus}", f"--num-gpus={gpus}"]
        self._start(node, flags)
        return node

    def kill(self, node: Node) -> list[psutil.Process]:
        """SIGKILL every process of ``node``: the node is lost, as when its machine dies.
        Returns the processes signalled."""
        processes = node.processes()
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        return processes

    def stop(self) -> None:
        """Kill every node's processes, and only theirs (another test's Ray may run beside this
        one), wait until they are gone, and remove the folders."""
        killed = [p for node in reversed(self.nodes) for p in self.kill(node)]
        psutil.wait_procs(killed, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
