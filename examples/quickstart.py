"""Start a few orders and print their results, with everything started in-process.

    python -m examples.quickstart

Uses `aiki.dev.open_dev`: a local PostgreSQL and Redis (or AIKI_DATABASE_URL /
AIKI_REDIS_URL), a server and a worker, all stopped at the end.
"""

from __future__ import annotations

import trio

import aiki
import aiki.dev

from .orders import Order, process_order, worker


async def main() -> None:
    """Start five orders, a duplicate, a bad one and a failing one; print what happened."""
    print("Starting PostgreSQL, Redis, the server and a worker...")
    async with aiki.dev.open_dev(worker) as env:
        print(f"Server at {env.url}\n")
        handles = [
            await process_order.start(env.client, Order(f"o{n}", "mug", n, 1200 * n))
            for n in range(1, 6)
        ]
        for handle in handles:
            result = await handle.wait_for_status("completed")
            print(f"{handle.run_id}  {result.status:<9}  {result.output}")

        again = await process_order.with_(reference_id="order-o1").start(
            env.client, Order("o1", "mug", 1, 1200)
        )
        same = await process_order.with_(reference_id="order-o1").start(
            env.client, Order("o1", "mug", 1, 1200)
        )
        same_run = again.run_id == same.run_id
        print(f"\nstarted twice with reference ID 'order-o1': same run = {same_run}")

        try:
            await process_order.start(env.client, {"id": "o9"})  # type: ignore[arg-type]
        except aiki.ValidationError as error:
            print(f"bad input refused before anything was stored: {error.errors[0]}")

        free = await process_order.start(env.client, Order("o0", "mug", 1, 0))
        result = await free.wait_for_status("completed")
        cause = result.error.cause if result.error else None
        print(
            f"order o0: {result.status}; cause: {cause.type if cause else None}: "
            f"{cause.message if cause else None}"
        )


if __name__ == "__main__":
    trio.run(main)
