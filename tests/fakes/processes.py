"""Real Prometheus-family binaries from Debian's packages, started for a test and stopped after."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

__all__ = ["RunningProcess", "free_port", "start_alertmanager", "start_prometheus"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningProcess:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _binary(*names: str, package: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    message = f"{names[0]} is not installed: apt-get install {package}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}; see {log}:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{what} was not ready within {timeout}s; see {log}")


def start_alertmanager(config_yaml: str, tmp_path: Path) -> RunningProcess:
    """The real Alertmanager on an ephemeral port, clustering off, with this config."""
    binary = _binary("prometheus-alertmanager", "alertmanager", package="prometheus-alertmanager")
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "alertmanager.yml").write_text(config_yaml)
    port = free_port()
    log = tmp_path / "alertmanager.log"
    process = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'alertmanager.yml'}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=debug"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url, process, log, "alertmanager")
    return RunningProcess(url=url, port=port, process=process, log=log)


def start_prometheus(scrape_targets: list[str], tmp_path: Path) -> RunningProcess:
    """The real Prometheus scraping `host:port` targets every second."""
    binary = _binary("prometheus", package="prometheus")
    tmp_path.mkdir(parents=True, exist_ok=True)
    targets = ", ".join(f'"{t}"' for t in scrape_targets)
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: test\n    static_configs:\n      - targets: [{targets}]\n"
    )
    port = free_port()
    log = tmp_path / "prometheus.log"
    process = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url, process, log, "prometheus")
    return RunningProcess(url=url, port=port, process=process, log=log)
