"""Real ``aiki`` processes for end-to-end tests: start, wait for ready, stop, kill; and the
API keys they act with (`make_keys`)."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import attrs

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
    return run_aiki_all([args], env)[0]


def run_aiki_all(commands: list[list[str]], env: dict[str, str]) -> list[str]:
    """Run several ``python -m aiki <args>`` at once, to completion; each one's output's
    last line, in order."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("AIKI_")}
    running = [subprocess.Popen([sys.executable, "-m", "aiki", *args], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**base, **env}) for args in commands]  # fmt: skip
    lines = []
    for process in running:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        lines.append(out.strip().splitlines()[-1])
    return lines


def make_keys(
    database_url: str, server_url: str, env: dict[str, str] | None = None
) -> dict[str, str]:
    """A key of each role, as an operator makes them: the first admin key with ``aiki keys
    create --bootstrap`` against the database, the others with it through the server
    (``env``: more of the commands' environment, e.g. ``AIKI_CA_FILE``)."""
    made = {"admin": run_aiki(["keys", "create", "--bootstrap", "--role", "admin", "--name",
                               "test admin"], {"AIKI_DATABASE_URL": database_url})}  # fmt: skip
    admin = {**(env or {}), "AIKI_SERVER_URL": server_url, "AIKI_API_KEY": made["admin"]}
    roles = ("worker", "client", "viewer")
    keys = run_aiki_all(
        [["keys", "create", "--role", role, "--name", f"test {role}"] for role in roles], admin
    )
    return made | dict(zip(roles, keys, strict=True))
