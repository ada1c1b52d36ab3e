"""The floor under any aio-pika job queue: publish -> consume latency of bare aio-pika.

    python bench/amqp_floor.py [--url amqp://guest:guest@127.0.0.1:5672/] [--messages 200]
                               [--gap-ms 10] [--queue-type classic|quorum] [--no-confirms]

One process publishes persistent messages (with publisher confirms unless
``--no-confirms``), one every ``--gap-ms``, each carrying its send time; a consumer in a
second process (prefetch 10, acking each) notes when it received it. No job queue is
involved, so this is what shigoto's RabbitMQ backend cannot go below: its enqueue →
start latency adds the record store's enqueue and claim round trips (and the worker's
dispatch) to it. The queue is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

import aio_pika


def queue_arguments(args: argparse.Namespace) -> dict[str, str | int]:
    arguments: dict[str, str | int] = {"x-expires": 600_000}
    if args.queue_type == "quorum":
        arguments["x-queue-type"] = "quorum"
    return arguments


async def consume(args: argparse.Namespace) -> None:
    connection = await aio_pika.connect(args.url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=10)
    queue = await channel.declare_queue(args.queue, durable=True, arguments=queue_arguments(args))
    latencies: list[float] = []
    done = asyncio.get_running_loop().create_future()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        latencies.append((time.time_ns() - int(message.body)) / 1e6)
        await message.ack()
        if len(latencies) == args.messages and not done.done():
            done.set_result(None)

    await queue.consume(on_message)
    print("ready", flush=True)
    await asyncio.wait_for(done, 60 + args.messages * args.gap_ms / 1000)
    print(f"{statistics.median(latencies):.3f} {max(latencies):.3f}", flush=True)
    await connection.close()


async def produce(args: argparse.Namespace) -> None:
    connection = await aio_pika.connect(args.url)
    channel = await connection.channel(publisher_confirms=not args.no_confirms)
    queue = await channel.declare_queue(args.queue, durable=True, arguments=queue_arguments(args))
    try:
        for _ in range(args.messages):
            body = str(time.time_ns()).encode()
            message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await channel.default_exchange.publish(message, routing_key=args.queue)
            await asyncio.sleep(args.gap_ms / 1000)
        await asyncio.sleep(0.5)
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--gap-ms", type=float, default=10.0)
    parser.add_argument("--queue-type", choices=("classic", "quorum"), default="quorum")
    parser.add_argument("--no-confirms", action="store_true")
    parser.add_argument("--consumer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--queue", default=f"bench-floor-{os.urandom(4).hex()}")
    args = parser.parse_args()
    if args.consumer:
        asyncio.run(consume(args))
        return
    child = subprocess.Popen(
        [sys.executable, __file__, "--consumer", *sys.argv[1:], "--queue", args.queue],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        raise SystemExit("the consumer did not start")
    asyncio.run(produce(args))
    p50, worst = child.stdout.readline().split()
    child.wait(10)
    confirms = "no confirms" if args.no_confirms else "confirms"
    print(
        f"aio-pika {aio_pika.__version__}, {args.queue_type} queue, persistent, {confirms}, "
        f"one every {args.gap_ms:g} ms: publish -> consume p50 {p50} ms, max {worst} ms "
        f"(n={args.messages})"
    )


if __name__ == "__main__":
    main()
