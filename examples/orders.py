"""An order-processing workflow: reserve stock, charge the card, ship.

Serve it with ``aiki dev examples.orders:worker`` (or ``aiki worker examples.orders:worker``
next to ``aiki server``), then start runs from any program with ``aiki.Client``.
"""

from __future__ import annotations

import collections

import attrs

import aiki


@attrs.frozen
class Order:
    """What the shop sends us."""

    id: str
    sku: str
    quantity: int
    amount_cents: int


@attrs.frozen
class Receipt:
    """What the workflow returns."""

    order_id: str
    reservation: str
    charge_id: str
    tracking: str


orders = aiki.workflow("order-processing")

_charge_attempts: collections.Counter[str] = collections.Counter()


@aiki.task
async def reserve_stock(order: Order) -> str:
    """Reserve the items (pretend)."""
    return f"res-{order.sku}-{order.quantity}"


@aiki.task(retry=aiki.retry.exponential(4, initial_delay_seconds=0.05))
async def charge_card(order: Order) -> str:
    """Charge the customer. The payment provider is flaky: some first attempts fail."""
    _charge_attempts[order.id] += 1
    if order.quantity % 3 == 0 and _charge_attempts[order.id] == 1:
        raise ConnectionError("payment provider timed out")
    if order.amount_cents <= 0:
        raise aiki.NonRetryableError(f"cannot charge {order.amount_cents} cents")
    return f"ch_{order.id}"


@aiki.task
def ship(order: Order) -> str:
    """Book the shipment. A plain (sync) function: it runs in a worker thread."""
    return f"TRACK-{order.id.upper()}"


@orders.version("1.0.0")
async def process_order(run: aiki.Run[Order], order: Order) -> Receipt:
    """Reserve, charge (retried by its policy), ship; each step runs once per order."""
    reservation = await reserve_stock.start(run, order)
    charge_id = await charge_card.start(run, order)
    tracking = await ship.start(run, order)
    return Receipt(order.id, reservation, charge_id, tracking)


@attrs.frozen
class CustomerSync:
    """Bring one customer's records over from the CRM."""

    customer_id: str
    since: str


@aiki.task
async def fetch_records(sync: CustomerSync) -> int:
    """Call the CRM's API (pretend): how many records changed."""
    return len(sync.customer_id) + len(sync.since)


syncs = aiki.workflow("customer-sync")


@syncs.version(
    "1.0.0",
    limits=[
        # One sync per customer at a time, for its whole life (a mutex: a second waits).
        aiki.ConcurrencyLimit(name="sync-per-customer", key="customer_id", per_key=1,
                              holds="open"),
        # The CRM takes 10 calls at once from us, whichever workflow makes them.
        aiki.ConcurrencyLimit(name="crm-api", per_key=10),
    ],
)  # fmt: skip
async def sync_customer(run: aiki.Run[int], sync: CustomerSync) -> int:
    """Fetch a customer's changed records; the limits say how many run at once."""
    return await fetch_records.start(run, sync)


worker = aiki.Worker(process_order, sync_customer, concurrency=8)
