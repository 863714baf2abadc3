"""Real ``aiki`` processes for end-to-end tests: start, wait for ready, stop, kill; and the
API keys they act with (`make_keys`)."""

from __future__ import annotations

import os
import re
import select
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import httpx

ROOT = Path(__file__).resolve().parent.parent


@attrs.define
class AikiProcess:
    """One ``python -m aiki ...`` child; its stderr goes to ``log``."""

    argv: list[str]
    log: Path
    process: subprocess.Popen[str]
    ready_line: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, pattern: str, seconds: float = 60.0) -> re.Match[str]:
        """Read stdout until a line matches ``pattern``; fail with the log tail otherwise."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if readable:
                line = self.process.stdout.readline()
                if match := re.search(pattern, line):
                    self.ready_line = line
                    return match
            if self.process.poll() is not None:
                break
        raise AssertionError(f"{' '.join(self.argv)} not ready:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, seconds: float = 30.0) -> int:
        """SIGTERM, wait; SIGKILL if it takes longer."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(seconds)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def stop_all(processes: list[AikiProcess], seconds: float = 30.0) -> None:
    """SIGTERM every process at once, then wait for each (SIGKILL past ``seconds``)."""
    for process in processes:
        if process.process.poll() is None:
            process.process.send_signal(signal.SIGTERM)
    for process in processes:
        process.stop(seconds)


def start_aiki(args: list[str], log: Path, env: dict[str, str]) -> AikiProcess:
    """Start ``python -m aiki <args>`` from the repository root."""
    argv = [sys.executable, "-m", "aiki", *args]
    base = {key: value for key, value in os.environ.items() if not key.startswith("AIKI_")}
    handle = log.open("a")
    process = subprocess.Popen(
        argv, cwd=ROOT, env={**base, **env}, stdout=subprocess.PIPE, stderr=handle, text=True
    )
    return AikiProcess(argv, log, process)


def run_aiki(args: list[str], env: dict[str, str]) -> str:
    """Run ``python -m aiki <args>`` to completion; its output's last line."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("AIKI_")}
    done = subprocess.run([sys.executable, "-m", "aiki", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**base, **env}, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def start_bootstrap(database_url: str) -> Callable[[], str]:
    """Start ``aiki keys create --bootstrap`` (the first admin key, written to the database
    directly; it applies the migrations itself, so it may run while a server starts); the
    function returned waits for it and returns the key."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("AIKI_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "aiki", "keys", "create", "--bootstrap", "--role", "admin",
         "--name", "test admin"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**base, "AIKI_DATABASE_URL": database_url},
    )  # fmt: skip

    def key() -> str:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        return out.strip().splitlines()[-1]

    return key


def make_keys(
    database_url: str,
    server_url: str,
    env: dict[str, str] | None = None,
    admin: Callable[[], str] | None = None,
) -> dict[str, str]:
    """A key of each role, as an operator makes them: the first admin key with ``aiki keys
    create --bootstrap`` against the database, the others with it through the server's
    API (``create_key``; ``env``: where ``AIKI_CA_FILE`` is, for an HTTPS server, and
    ``AIKI_CLIENT_CERT``, for one that asks for client certificates;
    ``admin``: a bootstrap already started with `start_bootstrap`).
    ``tests/e2e/test_cli_ops.py`` covers ``aiki keys create`` through the server."""
    made = {"admin": (admin or start_bootstrap(database_url))()}
    ca_file, cert = (env or {}).get("AIKI_CA_FILE"), (env or {}).get("AIKI_CLIENT_CERT")
    verify: bool | ssl.SSLContext = True
    if ca_file is not None:
        verify = ssl.create_default_context(cafile=ca_file)
        if cert is not None:  # (mutual TLS: a certificate for the handshake)
            verify.load_cert_chain(cert, (env or {}).get("AIKI_CLIENT_KEY"))
    with httpx.Client(verify=verify, timeout=30,
                      headers={"authorization": f"Bearer {made['admin']}"}) as http:  # fmt: skip
        for role in ("worker", "client", "viewer"):
            reply = http.post(f"{server_url.split(',')[0]}/api/v1/create_key",
                              json={"role": role, "name": f"test {role}"})  # fmt: skip
            assert reply.status_code == 200, reply.text
            made[role] = reply.json()["key"]
    return made
