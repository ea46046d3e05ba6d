"""A bounded load: clients committing and reading at once, conflicts
resolved on the server by an egg's code; nothing lost, nothing doubled.

bench/load.py runs the same load longer and prints its speed.
"""

import random
import sys
import threading
import time

import transaction
import ZODB.POSException
from BTrees.IOBTree import IOBTree

from helpers import client, commit, counter_egg


CLIENTS = 6
SECONDS = 5

class Worker(threading.Thread):
    """One client: mostly commits (the shared counter plus a key of its
    own), some reads, until DEADLINE."""

    def __init__(self, address, name, deadline):
        super().__init__(daemon=True)
        self.address, self.name, self.deadline = address, name, deadline
        self.committed = []   # keys of the commits the server confirmed
        self.latencies = []   # seconds per confirmed commit
        self.reads = 0
        self.errors = []

    def run(self):
        rng = random.Random(self.name)
        with client(self.address) as db:
            tm = transaction.TransactionManager()
            conn = db.open(tm)
            try:
                for key in range(1, 1_000_000):
                    if time.monotonic() > self.deadline:
                        break
                    if rng.random() < 0.3:
                        with tm:
                            conn.root()["counter"].value  # noqa: B018
                            self.reads += 1
                        continue
                    started = time.perf_counter()
                    try:
                        tm.begin()
                        root = conn.root()
                        root["counter"].add(1)
                        root[self.name][key] = key
                        tm.commit()
                    except ZODB.POSException.ConflictError as e:
                        self.errors.append(repr(e))  # must not happen
                        tm.abort()
                    else:
                        self.committed.append(key)
                        self.latencies.append(time.perf_counter() - started)
            finally:
                conn.close()


class Watcher(threading.Thread):
    """A client that keeps one connection and only reads the counter: it
    sees new values only if the server's invalidations reach it."""

    def __init__(self, address, deadline):
        super().__init__(daemon=True)
        self.address, self.deadline = address, deadline
        self.seen = []

    def run(self):
        with client(self.address) as db:
            tm = transaction.TransactionManager()
            conn = db.open(tm)
            try:
                while time.monotonic() < self.deadline:
                    with tm:
                        self.seen.append(conn.root()["counter"].value)
                    time.sleep(0.05)
            finally:
                conn.close()


def run_load(address, counter_class, clients, seconds):
    """Run the load; return the workers and the watcher, finished."""
    names = [f"client{n}" for n in range(clients)]
    commit(address, counter=counter_class(),
           **{name: IOBTree() for name in names})
    deadline = time.monotonic() + seconds
    workers = [Worker(address, name, deadline) for name in names]
    watcher = Watcher(address, deadline)
    for thread in workers + [watcher]:
        thread.start()
    for thread in workers + [watcher]:
        thread.join(seconds + 60)
    assert not any(t.is_alive() for t in workers + [watcher])
    return workers, watcher


def server_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:"))
                   .split()[1])


def test_load(buildout, monkeypatch):
    module, egg = counter_egg(buildout)
    buildout.install(f"eggs = {module}",
                     buildout_options="develop = src/counter")
    result = buildout.ctl("start")
    assert result.returncode == 0, result.stdout + result.stderr
    pid = int(buildout.path("var", "zeo.pid").read_text())
    monkeypatch.syspath_prepend(str(egg))
    counter = __import__(module)
    address = ("127.0.0.1", buildout.port)
    try:
        rss_before = server_rss_kb(pid)
        workers, watcher = run_load(address, counter.Counter, CLIENTS,
                                    SECONDS)
        rss_after = server_rss_kb(pid)

        assert [w.errors for w in workers] == [[]] * CLIENTS
        total = sum(len(w.committed) for w in workers)
        assert total > 100, total
        with client(address) as db:
            with db.transaction() as conn:
                root = conn.root()
                # Every confirmed commit counted once: none lost, none
                # applied twice.
                assert root["counter"].value == total
                # Concurrent increments did conflict, and the server
                # resolved them with the egg's code.
                assert root["counter"].resolutions > 0
                for w in workers:
                    assert list(root[w.name].keys()) == w.committed
        # The watcher's cached counter followed the commits.
        assert watcher.seen == sorted(watcher.seen)
        assert len(set(watcher.seen)) > 10, watcher.seen
        # Memory stays bounded (no per-transaction leak).
        assert rss_after - rss_before < 100_000, (rss_before, rss_after)
    finally:
        del sys.modules[module]
