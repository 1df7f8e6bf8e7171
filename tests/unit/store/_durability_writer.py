"""A writer process for the durability test: writes as fast as it can, printing each acknowledged write.

Usage: ``python _durability_writer.py DB PREFIX`` (DB: a SQLite file, or an ``etcd://`` store URL). One line per
acknowledged write, flushed before the next one:
``<verb> <namespace>/<name> <rv>``. The test kills this process with SIGKILL mid-stream and then checks that every
printed write is in the database.
"""

from __future__ import annotations

import asyncio
import pathlib
import sys

from meshplane.store import GroupResource, JSONObject, SqliteStore
from meshplane.store.etcd import EtcdStore, parse_etcd_url

VS = GroupResource("networking.istio.io", "virtualservices")
WORKERS = 24


def ack(verb: str, namespace: str, name: str, rv: str) -> None:
    sys.stdout.write(f"{verb} {namespace}/{name} {rv}\n")
    sys.stdout.flush()


async def worker(store: SqliteStore | EtcdStore, prefix: str, w: int) -> None:
    namespace = f"{prefix}-ns{w % 3}"
    i = 0
    while True:
        name = f"{prefix}-w{w}-{i}"
        obj: JSONObject = {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"hosts": [f"{name}.example.com"]},
        }
        created = await store.create(VS, obj, actor="writer")
        ack("create", namespace, name, created["metadata"]["resourceVersion"])
        obj["spec"]["hosts"].append("more.example.com")
        updated = await store.update(VS, obj, actor="writer")
        ack("update", namespace, name, updated["metadata"]["resourceVersion"])
        if i % 3 == 2:
            deleted = await store.delete(VS, namespace, name, actor="writer")
            ack("delete", namespace, name, deleted["metadata"]["resourceVersion"])
        i += 1


async def main(path: str, prefix: str) -> None:
    store = EtcdStore(parse_etcd_url(path)) if path.startswith("etcd://") else SqliteStore(pathlib.Path(path))
    await store.start()
    sys.stdout.write(f"ready {store.current_rv}\n")
    sys.stdout.flush()
    await asyncio.gather(*(worker(store, prefix, w) for w in range(WORKERS)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
