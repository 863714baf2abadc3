"""`aiki dev` and the README's example, run as real processes."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import trio

import aiki
from tests._deadline import deadline
from tests._processes import ROOT, start_aiki

from . import flows


def test_the_readme_example_runs_and_prints_its_results(pg_url: str, redis_url: str) -> None:
    """`python -m examples.quickstart`: five receipts, one idempotent start, one refusal,
    one failed order with its cause."""
    result = subprocess.run(
        [sys.executable, "-m", "examples.quickstart"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "AIKI_DATABASE_URL": pg_url, "AIKI_REDIS_URL": redis_url},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("completed  Receipt(") == 5
    assert "charge_id='ch_o3'" in result.stdout  # o3's first charge failed and was retried
    assert "same run = True" in result.stdout
    assert "bad input refused before anything was stored: expected Order, got dict" in result.stdout
    assert "order o0: failed; cause: aiki.errors.NonRetryableError: cannot charge 0 cents" in (
        result.stdout
    )


@deadline(90)
async def test_aiki_dev_serves_the_given_worker_until_interrupted(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    """`aiki dev module:worker` runs server and worker; a run completes; Ctrl-C stops all."""
    dev = start_aiki(
        ["dev", "tests.e2e.flows:main_worker", "--port", "0", "--data-dir", str(tmp_path)],
        tmp_path / "dev.log",
        {"AIKI_DATABASE_URL": pg_url, "AIKI_REDIS_URL": redis_url, "AIKI_E2E_DATABASE_URL": pg_url},
    )
    try:
        match = await trio.to_thread.run_sync(dev.wait_ready, r"aiki dev: server (\S+),")
        async with aiki.Client(match.group(1)) as client:
            handle = await flows.one_task.start(client, 20)
            result = await handle.wait_for_status("completed")
        assert (result.success, result.output) == (True, 40)
        assert "authentication is OFF" in dev.log.read_text()  # (said at start)
        dev.process.send_signal(signal.SIGINT)
        assert await trio.to_thread.run_sync(dev.process.wait, 60) == 0
    finally:
        dev.kill()
