"""The baseline for the relay benchmark: a plain asyncio TCP forwarder.

    python -m outpost_server.bench.forwarder --port P

A client's first line is `<pair> send` or `<pair> recv`; bytes from a pair's
sender are copied unchanged to its receiver. No framing, no lookup, no
queues: what a relay would cost if it did nothing but move bytes, with the
same event loop and stream API the server uses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

READ_BYTES = 64 * 1024


class Forwarder:
    def __init__(self) -> None:
        self.receivers: dict[str, asyncio.StreamWriter] = {}
        self.arrived: dict[str, asyncio.Event] = {}

    def _event(self, pair: str) -> asyncio.Event:
        return self.arrived.setdefault(pair, asyncio.Event())

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            pair, role = (await reader.readline()).decode().split()
            if role == "recv":
                self.receivers[pair] = writer
                self._event(pair).set()
                await reader.read()  # hold until the receiver leaves
                return
            await self._event(pair).wait()
            out = self.receivers[pair]
            while data := await reader.read(READ_BYTES):
                out.write(data)
                await out.drain()
        except (ConnectionError, ValueError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


async def main(port: int) -> None:
    fwd = Forwarder()
    server = await asyncio.start_server(fwd.handle, "127.0.0.1", port, reuse_address=True)
    print("forwarder: ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(p.parse_args().port))
