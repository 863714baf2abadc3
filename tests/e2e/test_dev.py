"""`aiki dev` and the README's example, run as real processes."""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Final

import orjson
import trio

import aiki
from aiki.protocol import GetRun
from tests._deadline import deadline
from tests._processes import ROOT, start_aiki

from . import flows


def test_the_readme_example_runs_and_prints_its_results(pg_url: str, redis_url: str) -> None:
    """``./run-example``: five receipts, one idempotent start, one refusal, one failed
    order with its cause. Run twice: the second time it sets up nothing, it just runs."""
    env = {"PATH": "/usr/bin:/bin", "AIKI_DATABASE_URL": pg_url, "AIKI_REDIS_URL": redis_url}
    for _ in range(2):
        result = subprocess.run([str(ROOT / "run-example")], cwd=ROOT, capture_output=True,
                                text=True, timeout=600, env=env)  # fmt: skip
        assert result.returncode == 0, result.stderr
    assert "setup:" not in result.stderr, "set up again although nothing changed"
    assert result.stdout.count("completed  Receipt(") == 5
    assert "charge_id='ch_o3'" in result.stdout  # o3's first charge failed and was retried
    assert "same run = True" in result.stdout
    assert "bad input refused before anything was stored: expected Order, got dict" in result.stdout
    assert "order o0: failed; cause: aiki.errors.NonRetryableError: cannot charge 0 cents" in (
        result.stdout
    )


def test_without_chromium_the_test_command_stops_at_once_with_the_command_to_run(
    tmp_path: Path,
) -> None:
    """``./run-tests`` where Chromium is missing and cannot be installed (not root, or
    told not to): it stops before running anything, printing the one command to run."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("bash", "sha256sum", "cut", "cat", "id", "dirname", "env"):
        found = shutil.which(tool)
        assert found is not None, tool
        (tools / tool).symlink_to(found)
    result = subprocess.run([str(ROOT / "run-tests"), "--collect-only"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600,
                            env={"PATH": str(tools), "AIKI_NO_SYSTEM_INSTALL": "1"})  # fmt: skip
    assert result.returncode == 1
    assert "sudo apt-get install -y chromium" in result.stderr
    assert "collected" not in result.stdout, "stopped before running anything"


def _readme_commands(prefixes: tuple[str, ...]) -> list[list[str]]:
    """The README's command lines that start with one of ``prefixes`` (as argv, ``aiki``
    dropped), in the README's order."""
    text = (ROOT / "README.md").read_text()
    return [shlex.split(line, comments=True)[1:] for line in text.splitlines()
            if line.startswith(prefixes)]  # fmt: skip


_OPERATORS: Final = ("aiki schedules ", "aiki runs ", "aiki workers ", "aiki versions ",
                     "aiki limits ")  # fmt: skip
"""The README's operator commands (those of keys need a server with authentication:
`tests.e2e.test_cli_ops` runs them)."""


@deadline(120)
async def test_the_readmes_cli_commands_work_against_aiki_dev_with_the_example(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    """Every ``aiki schedules|runs|workers|versions|limits`` line of the README, in its order, and
    its ``curl`` line, against ``aiki dev examples.orders:worker``: the run completes and is
    found by its reference ID, the schedule is found and paused by its."""
    dev = start_aiki(["dev", "examples.orders:worker", "--port", "0", "--data-dir",
                      str(tmp_path)], tmp_path / "dev.log",
                     {"AIKI_DATABASE_URL": pg_url, "AIKI_REDIS_URL": redis_url})  # fmt: skip
    try:
        url = (await trio.to_thread.run_sync(dev.wait_ready, r"aiki dev: server (\S+),")).group(1)
        env = {"PATH": "/usr/bin:/bin", "AIKI_SERVER_URL": url}
        outputs = {}
        for argv in _readme_commands(_OPERATORS):
            result = await trio.to_thread.run_sync(lambda argv=argv: subprocess.run(
                [sys.executable, "-m", "aiki", *argv], cwd=ROOT, capture_output=True,
                text=True, timeout=60, env=env))  # fmt: skip
            assert result.returncode == 0, (argv, result.stderr)
            outputs[" ".join(argv[:2])] = result.stdout
        assert len(outputs) >= 13, outputs.keys()
        assert re.search(r"^crm-api +10 +- +10/- ", outputs["limits list"], flags=re.M)
        assert re.search(r"^sync-per-customer +1 ", outputs["limits list"], flags=re.M)
        assert re.search(r"^per key +20$", outputs["limits set"], flags=re.M)
        assert re.search(r"^declared +per key 10, total -$", outputs["limits show"], flags=re.M)
        assert re.search(r" 20 +- +no authentication$", outputs["limits show"], flags=re.M)
        assert re.match(r"started run (\S+) of order-processing@1\.0\.0", outputs["runs start"])
        assert re.search(r"^reference +daily-paper$", outputs["schedules show"], flags=re.M)
        assert re.match(r"schedule \S+ is paused", outputs["schedules pause"])
        assert re.search(r"^reference +order-7$", outputs["runs show"], flags=re.M)
        assert "running -> completed" in outputs["runs watch"].splitlines()[-1]
        assert re.search(r"^order-processing@1\.0\.0 +- +\S+ +-$", outputs["versions list"],
                         flags=re.M)  # fmt: skip
        (curl,) = [line for line in (ROOT / "README.md").read_text().splitlines()
                   if line.startswith("curl ")]  # fmt: skip
        fetched = await trio.to_thread.run_sync(lambda: subprocess.run(
            ["bash", "-c", curl.replace("http://127.0.0.1:8470", url)], capture_output=True,
            text=True, timeout=60, env={**env, "AIKI_API_KEY": ""}))  # fmt: skip
        assert fetched.returncode == 0, fetched.stderr
        assert orjson.loads(fetched.stdout)["reference_id"] == "order-7", fetched.stdout
        async with aiki.Client(url) as client:
            run = await client.get_run(GetRun(workflow="order-processing", version="1.0.0",
                                              reference_id="order-7"))  # fmt: skip
            result = await client.handle(run.id).wait_for_status("completed")
        assert result.success, result.error
    finally:
        dev.stop()


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
