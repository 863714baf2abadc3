"""The chaos soak: the chaos suite's load and faults for as long as you like.

    python -m benchmarks soak [--seconds 600] [--rate 40] [--fault-every 8] [--seed 7]

Starts its own PostgreSQL, Redis, server and three workers (see ``tests/chaos``), starts
``--rate`` workflows per second for ``--seconds`` (tasks, retries, sleeps and events), and
every ``--fault-every`` seconds injects a fault picked at random: SIGKILL a worker
mid-task, SIGSTOP a worker past the claim timeout, restart Redis without its data, SIGKILL
and restart the server, SIGKILL and restart PostgreSQL. Then it waits for every run to end
and checks the suite's invariants. Exits 1 if any is broken.
"""

from __future__ import annotations

import argparse
import random
import time

import trio

from tests.chaos.harness import Chaos


async def _soak(chaos: Chaos, args: argparse.Namespace) -> int:
    faults = [chaos.kill_worker_mid_task, chaos.freeze_worker, chaos.restart_redis,
              chaos.restart_server, chaos.restart_postgres]  # fmt: skip
    rng = random.Random(args.seed)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(chaos.load, int(args.seconds * args.rate), args.rate)
        end = trio.current_time() + args.seconds
        while trio.current_time() + args.fault_every < end:
            await trio.sleep(args.fault_every)  # the fault schedule, not a settling wait
            await trio.to_thread.run_sync(rng.choice(faults))
    return await chaos.wait_until_settled(max(180.0, args.seconds / 2))


def main(argv: list[str]) -> None:
    """Run the soak and print its report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks soak")
    parser.add_argument("--seconds", type=float, default=600.0, help="how long the load runs")
    parser.add_argument("--rate", type=float, default=40.0, help="workflows started per second")
    parser.add_argument("--fault-every", type=float, default=8.0, help="seconds between faults")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    started = time.monotonic()
    chaos = Chaos.start(seed=args.seed)
    try:
        still_open = trio.run(_soak, chaos, args)
        report = chaos.check()
    finally:
        chaos.stop()
    elapsed = time.monotonic() - started
    print(f"soak: {args.seconds:g} s of load at {args.rate:g} runs/s, {elapsed:.0f} s in all")
    print("\n".join(report.lines()))
    print(f"still open after settling: {still_open}")
    if still_open or not report.clean:
        raise SystemExit(1)
