"""Looking at the broker from the fault tests: queue depths, consumers and a tap on published requests."""

from __future__ import annotations

import aio_pika

from dashboard_jobs.contracts.summary import DashboardSummaryRefreshRequestedV1
from dashboard_jobs.settings import Settings


async def queue_counts(rabbitmq_url: str, names: list[str]) -> dict[str, tuple[int, int]]:
    """Return (ready messages, consumers) of each queue. A missing queue counts as (0, 0)."""
    counts: dict[str, tuple[int, int]] = {}
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        for name in names:
            channel = await connection.channel()
            try:
                declared = await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                counts[name] = (0, 0)
                continue
            result = declared.declaration_result
            counts[name] = (result.message_count, result.consumer_count)
            await channel.close()
    return counts


async def take_messages(rabbitmq_url: str, queue_name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Remove every ready message from ``queue_name`` and return them in queue order."""
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)
        messages = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            messages.append(message)
    return messages


class PublishTap:
    """A queue bound to the events exchange that keeps a copy of every refresh request published.

    Nothing consumes it, so its depth is the number of publishes, duplicates included.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.name = f"{settings.broker_prefix}.faults-publish-tap"

    async def declare(self) -> None:
        """Declare the tap, bind it and empty it. Call it before the relay publishes."""
        connection = await aio_pika.connect(self._settings.rabbitmq_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(self.name, durable=True)
            await queue.bind(self._settings.exchange_name, routing_key=DashboardSummaryRefreshRequestedV1.TYPE)
            await queue.purge()

    async def count(self) -> int:
        return (await queue_counts(self._settings.rabbitmq_url, [self.name]))[self.name][0]

    async def delete(self) -> None:
        connection = await aio_pika.connect(self._settings.rabbitmq_url)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(self.name)
