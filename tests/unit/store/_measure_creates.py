"""How long N concurrent creates take through the store alone (a measurement, not a test; never gates anything).

Usage: ``python tests/unit/store/_measure_creates.py [N] [--watchers K]``. Prints, for MemoryStore and SqliteStore
(a real file in a temporary directory, WAL + synchronous=FULL), the wall time of N concurrent ``create`` calls, the
number of SQLite transactions they took, and the time to reopen the file. MemoryStore is the baseline measured in the
same run: the difference is what durability costs.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import tempfile
import time
from collections.abc import Sequence

from meshplane.store import GroupResource, JSONObject, MemoryStore, SqliteStore
from meshplane.store._core import Change, CoreStore

VS = GroupResource("networking.istio.io", "virtualservices")


def virtual_service(i: int) -> JSONObject:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": f"vs-{i}", "namespace": f"ns-{i % 10}", "labels": {"app": f"app-{i % 50}"}},
        "spec": {
            "hosts": [f"svc-{i}.example.com"],
            "http": [
                {
                    "match": [{"uri": {"prefix": "/v1"}}],
                    "route": [{"destination": {"host": f"svc-{i}", "subset": "v1", "port": {"number": 80}}}],
                    "timeout": "5s",
                }
            ],
        },
    }


async def measure(store: CoreStore, n: int, watchers: int) -> float:
    await store.start()
    drained = [asyncio.create_task(_drain(store, n)) for _ in range(watchers)]
    started = time.perf_counter()
    await asyncio.gather(*(store.create(VS, virtual_service(i), actor="bench") for i in range(n)))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*drained)
    assert len(store.list(VS)[0]) == n
    await store.close()
    return elapsed


async def _drain(store: CoreStore, n: int) -> None:
    watch = store.watch(VS, since_rv=store.current_rv)
    seen = 0
    async for _ in watch:
        seen += 1
        if seen == n:
            break
    watch.close()


async def main(n: int, watchers: int) -> None:
    memory = await measure(MemoryStore(), n, watchers)
    print(f"MemoryStore  {n} concurrent creates, {watchers} watchers: {memory:.2f} s ({n / memory:,.0f}/s)")
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "store.db"
        sqlite = SqliteStore(path)
        batches: list[int] = []
        write_batch = sqlite._write_batch

        def counting(batch: Sequence[Change], compacted_rv: int) -> None:
            batches.append(len(batch))
            write_batch(batch, compacted_rv)

        sqlite._write_batch = counting  # type: ignore[method-assign]
        elapsed = await measure(sqlite, n, watchers)
        print(
            f"SqliteStore  {n} concurrent creates, {watchers} watchers: {elapsed:.2f} s ({n / elapsed:,.0f}/s) "
            f"in {len(batches)} transactions (largest {max(batches)}); {elapsed / memory:.2f}x MemoryStore"
        )
        started = time.perf_counter()
        reopened = SqliteStore(path)
        await reopened.start()
        print(f"SqliteStore  reopen with {n} objects and their history: {time.perf_counter() - started:.2f} s")
        await reopened.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=10_000)
    parser.add_argument("--watchers", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.watchers))
