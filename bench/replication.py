"""Replication lag of a ZRS primary and secondary made by this recipe.

    .venv/bin/python bench/replication.py [--rate 50] [--seconds 10]

One buildout with two parts, a primary (replicate-to) and its secondary
(replicate-from), both with blobs, on free ports of 127.0.0.1.  A writer
commits a small object to the primary at a steady rate; a client of the
primary and a client of the secondary each note when the server tells
them of every transaction (ZEO's invalidations, which is when a Zope
client of that server can see it).  Printed: for each, the delay after
the writer's commit returned, median, 90th and 99th percentile and
maximum; the difference is what replication adds.

Bounded: the load runs --seconds, every wait has a limit, and the
servers are stopped whatever happens.  Needs the test venv (make test
makes it): its zc.buildout, and zc.zrs installed there.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import transaction
import ZODB
import ZODB.blob
from ZEO.ClientStorage import ClientStorage


ROOT = Path(__file__).resolve().parents[1]
BUILDOUT = Path(sys.executable).parent / "buildout"
TIMEOUT = 300  # seconds a buildout or a control command may take
SETTLE = 10  # seconds the last transactions get to arrive


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50,
                        help="commits per second (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=10,
                        help="how long the load runs (default: %(default)s)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-replication-") as tmp:
        tmp = Path(tmp)
        ports = free_ports(3)
        directory = make_buildout(tmp, *ports)
        try:
            for part in ("secondary", "primary"):
                control(directory, part, "start")
            primary = ("127.0.0.1", ports[0])
            secondary = ("127.0.0.1", ports[2])
            committed, seen = measure(primary, secondary, options.rate,
                                      options.seconds, tmp / "blobs")
        finally:
            for part in ("primary", "secondary"):
                control(directory, part, "stop", check=False)
    report(committed, seen, options)


def free_ports(count):
    import socket
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def make_buildout(tmp, primary_port, replication_port, secondary_port):
    """A buildout with parts primary and secondary, installed."""
    dist, eggs, directory = tmp / "dist", tmp / "eggs", tmp / "buildout"
    for path in (dist, eggs, directory):
        path.mkdir()
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--no-build-isolation", "--wheel-dir", str(dist), str(ROOT)])
    (directory / "buildout.cfg").write_text(textwrap.dedent(f"""\
        [buildout]
        parts = primary secondary
        find-links = {dist}
        index = file://{dist}/
        eggs-directory = {eggs}
        newest = false

        [primary]
        recipe = plone.recipe.zope2zeoserver
        var = var/primary
        zeo-address = {primary_port}
        replicate-to = {replication_port}
        blob-storage = var/primary/blobstorage

        [secondary]
        recipe = plone.recipe.zope2zeoserver
        var = var/secondary
        zeo-address = {secondary_port}
        replicate-from = {replication_port}
        blob-storage = var/secondary/blobstorage
        """))
    run([str(BUILDOUT), "-c", "buildout.cfg"], cwd=directory)
    return directory


def control(directory, part, command, check=True):
    run([str(directory / "bin" / part), command], cwd=directory, check=check)


def run(command, cwd=None, check=True):
    result = subprocess.run(command, cwd=cwd, capture_output=True,
                            text=True, timeout=TIMEOUT)
    if check and result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout}"
                 f"{result.stderr}")
    return result


class Observer:
    """Stands in for a ZODB.DB: notes when each transaction is announced."""

    def __init__(self):
        self.seen = {}  # tid -> time.monotonic()

    def invalidate(self, tid, oids, version=""):
        self.seen.setdefault(tid, time.monotonic())

    def invalidateCache(self):
        pass

    transform_record_data = untransform_record_data = staticmethod(
        lambda data: data)


def observe(address):
    storage = ClientStorage(address, read_only=True, wait_timeout=30)
    observer = Observer()
    storage.registerDB(observer)
    return storage, observer


def measure(primary, secondary, rate, seconds, blob_dir):
    """({tid: commit time}, {"primary": {tid: time}, "secondary": ...})"""
    db = ZODB.DB(ClientStorage(primary, wait_timeout=30,
                               blob_dir=str(blob_dir)))
    # The secondary's clients can open a database once it has the root.
    deadline = time.monotonic() + 30
    while not secondary_has_root(secondary):
        if time.monotonic() > deadline:
            sys.exit("the secondary did not replicate the root in 30 s")
        time.sleep(0.05)
    watchers = {"primary": observe(primary), "secondary": observe(secondary)}
    committed = {}
    try:
        manager = transaction.TransactionManager()
        conn = db.open(manager)
        interval = 1 / rate
        start = time.monotonic()
        for i in range(int(rate * seconds)):
            time.sleep(max(0.0, start + i * interval - time.monotonic()))
            conn.root()["counter"] = i
            conn.root()[f"blob{i % 10}"] = ZODB.blob.Blob(b"x" * 4096)
            manager.commit()
            committed[db.storage.lastTransaction()] = time.monotonic()
        deadline = time.monotonic() + SETTLE
        while time.monotonic() < deadline and not all(
                set(committed) <= set(observer.seen)
                for _, observer in watchers.values()):
            time.sleep(0.05)
        conn.close()
    finally:
        db.close()
        for storage, _ in watchers.values():
            storage.close()
    return committed, {name: observer.seen
                       for name, (_, observer) in watchers.items()}


def secondary_has_root(address):
    storage = ClientStorage(address, read_only=True, wait_timeout=30)
    try:
        return storage.lastTransaction() != b"\0" * 8
    finally:
        storage.close()


def report(committed, seen, options):
    span = max(committed.values()) - min(committed.values())
    print(f"{len(committed)} commits, each with a 4 KB blob, asked at "
          f"{options.rate:g}/s for {options.seconds:g} s, done at "
          f"{(len(committed) - 1) / span:.0f}/s")
    print(f"{'a client of the':<18} {'median':>8} {'p90':>8} {'p99':>8} "
          f"{'max':>8} {'missing':>8}   (ms after the commit returned)")
    for name, times in seen.items():
        delays = sorted((times[tid] - done) * 1000
                        for tid, done in committed.items() if tid in times)
        missing = len(committed) - len(delays)
        if not delays:
            print(f"{name:<18} no transaction arrived")
            continue
        print(f"{name:<18} {statistics.median(delays):8.1f} "
              f"{percentile(delays, 90):8.1f} {percentile(delays, 99):8.1f} "
              f"{delays[-1]:8.1f} {missing:8d}")


def percentile(ordered, p):
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


if __name__ == "__main__":
    main()
