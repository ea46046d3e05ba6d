"""What the servers are given to do: a database to pack and back up, and
small commits from several client processes at once.

Run as a script it is one commit worker (see ``throughput``).
"""

import os
import subprocess
import sys
import time


PAYLOAD = 1000  # bytes per object
WORKER_OBJECTS = 16  # small objects each worker takes turns to change


def make_database(path, megabytes):
    """A FileStorage of about MEGABYTES, half of it garbage for pack.

    N objects are written; then a third of them is rewritten (their old
    revisions are garbage) and another third is dropped from the tree
    (unreachable, garbage once pack collects it).  Total 4N/3 records,
    2N/3 of them garbage.
    """
    import BTrees.IOBTree
    import persistent.mapping
    import ZODB
    import ZODB.FileStorage

    count = int(megabytes * 1e6 * 3 / 4 / (PAYLOAD + 150))
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(path)))
    try:
        with db.transaction() as conn:
            conn.root()["tree"] = BTrees.IOBTree.IOBTree()
        for start in range(0, count, 1000):
            with db.transaction() as conn:
                tree = conn.root()["tree"]
                for i in range(start, min(start + 1000, count)):
                    tree[i] = persistent.mapping.PersistentMapping(
                        data=os.urandom(PAYLOAD))
        for start in range(0, count, 3000):
            with db.transaction() as conn:
                tree = conn.root()["tree"]
                for i in range(start, min(start + 3000, count), 3):
                    tree[i]["data"] = os.urandom(PAYLOAD)
                    if i + 1 < count:
                        del tree[i + 1]
    finally:
        db.close()


def prepare(port, workers):
    """Give each worker its own objects, so commits never conflict."""
    import persistent.list
    import persistent.mapping
    import ZEO

    db = ZEO.DB(("127.0.0.1", port), wait_timeout=30)
    try:
        with db.transaction() as conn:
            for n in range(workers):
                conn.root()[f"w{n}"] = persistent.list.PersistentList(
                    persistent.mapping.PersistentMapping()
                    for _ in range(WORKER_OBJECTS))
    finally:
        db.close()


def throughput(port, workers, seconds):
    """Commits per second of WORKERS client processes together.

    Each worker connects, says "ready" and waits for "go" on stdin, so all
    of them start committing at once.
    """
    prepare(port, workers)
    command = [sys.executable, __file__, str(port), "", str(seconds)]
    procs = []
    try:
        for n in range(workers):
            command[3] = str(n)
            procs.append(subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True))
        for proc in procs:
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a commit worker failed to connect")
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        total = 0.0
        for proc in procs:
            out, _ = proc.communicate(timeout=seconds + 60)
            if proc.returncode:
                raise RuntimeError("a commit worker failed")
            commits, elapsed = map(float, out.split())
            total += commits / elapsed
        return total
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def worker(port, n, seconds):
    """Commit small changes to this worker's objects for SECONDS."""
    import transaction
    import ZEO

    db = ZEO.DB(("127.0.0.1", port), wait_timeout=30)
    try:
        conn = db.open()
        objects = conn.root()[f"w{n}"]
        print("ready", flush=True)
        sys.stdin.readline()
        commits = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            objects[commits % WORKER_OBJECTS]["n"] = commits
            transaction.commit()
            commits += 1
        print(commits, time.perf_counter() - started)
        conn.close()
    finally:
        db.close()


if __name__ == "__main__":
    worker(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
