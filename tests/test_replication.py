"""Scale-out: a ZRS primary and its secondary, and a fan-out server.

Each server is a buildout of its own, as on two machines, and everything
runs on 127.0.0.1.  Every server is stopped when a test ends (the
fixtures' stop_all), whatever happened.
"""

import json
import os
import signal
import socket
import threading
import time

import pytest
import transaction
import ZODB.blob
import ZODB.POSException
from ZEO.ClientStorage import ClientStorage

from helpers import Buildout
from helpers import client
from helpers import free_port
from helpers import new_buildout
from helpers import server_pid
from helpers import wait_for
from test_monitor import metrics


BLOBS = "blob-storage = var/blobstorage"


@pytest.fixture
def second(tmp_path, dist_dir, eggs_dir):
    """Another buildout directory (another machine); stopped afterwards."""
    with new_buildout(tmp_path / "second", dist_dir, eggs_dir) as b:
        yield b


def address(buildout):
    return ("127.0.0.1", buildout.port)


def started(buildout):
    result = buildout.ctl("start")
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def connect(buildout, tmp_path, name, **kw):
    """A ZEO client of BUILDOUT's server, with a blob cache of its own."""
    return client(address(buildout), blob_dir=str(tmp_path / name), **kw)


def tids(buildout):
    """Every transaction id of BUILDOUT's server, in order."""
    storage = ClientStorage(address(buildout), read_only=True,
                            wait_timeout=10)
    try:
        return [t.tid for t in storage.iterator()]
    finally:
        storage.close()


def same_transactions(one, other):
    return tids(one) == tids(other)


def sees(manager, conn, key, value):
    """True once CONN, in a new transaction of MANAGER, reads VALUE as
    the root's KEY."""
    manager.begin()
    return conn.root().get(key) == value


def test_secondary_follows_primary_through_crashes_and_promotion(
        buildout, second, tmp_path):
    primary = buildout
    replication = free_port()
    primary.install(f"replicate-to = {replication}\n{BLOBS}")
    metrics_port = free_port()
    second.install(f"replicate-from = {replication}\n"
                   f"keep-alive-delay = 60\n{BLOBS}\n"
                   f"metrics-address = {metrics_port}")
    assert "%import plone.recipe.zope2zeoserver" in primary.zeo_conf()
    assert f"replicate-to 127.0.0.1:{replication}" in primary.zeo_conf()
    assert f"replicate-from 127.0.0.1:{replication}" in second.zeo_conf()
    # The secondary may start first: it keeps trying to reach its primary.
    started(second)
    started(primary)

    # Commits with blobs on the primary are readable on the secondary
    # within a second, each of them.
    with connect(primary, tmp_path, "p") as pdb:
        with pdb.transaction() as conn:
            conn.root()["count"] = 0
        assert wait_for(lambda: same_transactions(primary, second), 10)
        with connect(second, tmp_path, "s", read_only=True) as sdb:
            reader = transaction.TransactionManager()
            sconn = sdb.open(reader)
            delays = []
            for i in range(1, 11):
                with pdb.transaction() as conn:
                    conn.root()["count"] = i
                    conn.root()[f"blob{i}"] = ZODB.blob.Blob(b"%d" % i * 1000)
                committed = time.monotonic()
                assert wait_for(lambda: sees(reader, sconn, "count", i), 5), i
                delays.append(time.monotonic() - committed)
            assert max(delays) < 1, delays
            with sconn.root()["blob7"].open() as f:
                assert f.read() == b"7" * 1000

            # The secondary refuses writes.
            sconn.root()["count"] = -1
            with pytest.raises(ZODB.POSException.ReadOnlyError):
                reader.commit()
            reader.abort()
            sconn.close()

        # status and stats tell the roles and the replication lag.
        status = second.ctl("status")
        assert (f"storage 1: secondary (read-only) of the primary at "
                f"127.0.0.1:{replication}") in status.stdout
        stats = second.ctl("stats")
        assert "; connected, lag " in stats.stdout, stats.stdout
        stats = second.ctl("stats", "--json")
        figures = json.loads(stats.stdout)["storages"]["1"]
        assert figures["role"]["role"] == "secondary"
        assert figures["replication"]["connected"] is True
        assert 0 <= figures["replication"]["lag"] < 1
        values = metrics(metrics_port)
        assert values["zeo_replication_connected", "1"] == 1
        assert 0 <= values["zeo_replication_lag_seconds", "1"] < 1
        assert values["zeo_storage_size_bytes", "1"] == second.path(
            "var", "filestorage", "Data.fs").stat().st_size
        assert second.ctl("check").returncode == 0
        # The primary counts the secondaries connected to it.
        assert (f"primary; secondaries connect to 127.0.0.1:{replication}"
                "; 1 connected now" in primary.ctl("stats").stdout)
        stats = primary.ctl("stats", "--json")
        figures = json.loads(stats.stdout)["storages"]["1"]
        assert figures["replication"] == {"secondaries": 1}

        # kill -9 the secondary while the primary commits: zdaemon
        # restarts it and it catches up, without a gap.
        writer = Writer(pdb)
        writer.start()
        try:
            assert wait_for(lambda: writer.count >= 5, 10)
            killed = server_pid(second)
            os.kill(killed, signal.SIGKILL)
            assert wait_for(lambda: writer.count >= 15 and restarted(
                second, killed), 30)
        finally:
            writer.stop()
        assert writer.error is None and not writer.is_alive(), writer.error
        assert wait_for(lambda: same_transactions(primary, second), 10)
        with connect(second, tmp_path, "s2", read_only=True) as sdb:
            with sdb.transaction() as conn:
                missing = [i for i in range(writer.count)
                           if conn.root().get(f"w{i}") != i]
        assert writer.count >= 15 and not missing, (writer.count, missing)

    # A restarted primary: the secondary reconnects and goes on.
    restart = primary.ctl("restart")
    assert restart.returncode == 0, restart.stdout + restart.stderr
    with connect(primary, tmp_path, "p2") as pdb:
        with pdb.transaction() as conn:
            conn.root()["after restart"] = True
        assert wait_for(lambda: same_transactions(primary, second), 10)

    # The primary is lost: promote the secondary.  Rerunning buildout
    # restarts its server, now writable, with every transaction.
    primary.stop_all()
    second.install(BLOBS)
    assert "<zrs" not in second.zeo_conf()
    assert "secondary" not in second.ctl("status").stdout
    with connect(second, tmp_path, "promoted") as db:
        with db.transaction() as conn:
            assert conn.root().get("after restart") is True
            assert conn.root().get("count") == 10
            conn.root()["promoted"] = True
        with db.transaction() as conn:
            assert conn.root()["promoted"] is True


def restarted(buildout, old_pid):
    """True once zdaemon runs a new server process that accepts
    connections."""
    try:
        pid = server_pid(buildout)
    except (OSError, ValueError):
        return False
    return pid != old_pid and buildout.ctl("status").returncode == 0 and \
        can_connect(buildout)


def can_connect(buildout):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(address(buildout)) == 0


class Writer(threading.Thread):
    """Commits root["w<n>"] = n on DB until stopped (at most 1000)."""

    def __init__(self, db):
        super().__init__(daemon=True)
        self.db = db
        self.count = 0
        self.error = None
        self.stopping = threading.Event()

    def run(self):
        try:
            while not self.stopping.is_set() and self.count < 1000:
                with self.db.transaction() as conn:
                    conn.root()[f"w{self.count}"] = self.count
                self.count += 1
                time.sleep(0.01)
        except Exception as e:
            self.error = e

    def stop(self):
        self.stopping.set()
        self.join(30)


def test_fan_out_serves_the_upstream_storage_read_only(
        buildout, second, tmp_path):
    upstream, fan_out = buildout, second
    upstream.install(BLOBS)
    fan_out.install(f"upstream-address = {upstream.port}\n"
                    f"upstream-cache-size = 50MB\n{BLOBS}")
    assert (f"server 127.0.0.1:{upstream.port}\n  storage 1\n"
            "  read-only true\n") in fan_out.zeo_conf()
    assert "cache-size 50MB" in fan_out.zeo_conf()
    assert not fan_out.path("var", "filestorage").exists()
    # It starts while its upstream is down, and connects once it is up.
    started(fan_out)
    started(upstream)
    assert ("storage 1: fan-out (read-only) of the ZEO server at "
            f"127.0.0.1:{upstream.port}") in fan_out.ctl("stats").stdout
    with connect(upstream, tmp_path, "u") as db:
        with db.transaction() as conn:
            conn.root()["answer"] = 42
            conn.root()["blob"] = ZODB.blob.Blob(b"from upstream")
        assert wait_for(lambda: fan_out_reads(fan_out, "answer") == 42, 15)

        with connect(fan_out, tmp_path, "f", read_only=True) as fdb:
            reader = transaction.TransactionManager()
            conn = fdb.open(reader)
            with conn.root()["blob"].open() as f:
                assert f.read() == b"from upstream"
            # A commit upstream reaches the fan-out's clients.
            with db.transaction() as uconn:
                uconn.root()["answer"] = 43
            assert wait_for(lambda: sees(reader, conn, "answer", 43), 5)
            assert tids(fan_out) == tids(upstream)
            conn.root()["answer"] = 0
            with pytest.raises(ZODB.POSException.ReadOnlyError):
                reader.commit()
            reader.abort()
            conn.close()


def fan_out_reads(fan_out, key):
    """KEY of the root as a client of FAN_OUT reads it, or None while
    the fan-out has not reached its upstream yet."""
    try:
        with client(address(fan_out), read_only=True, wait_timeout=2) as db:
            with db.transaction() as conn:
                return conn.root().get(key)
    except Exception:
        return None


def test_replicate_to_in_use_stops_the_start_with_one_line(buildout):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        buildout.install(f"replicate-to = {port}")
        result = buildout.ctl("start")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert (f"Error: cannot listen for secondaries on replicate-to "
            f"127.0.0.1:{port}: Address already in use") in out
    assert buildout.ctl("status").returncode == 3


BAD_OPTIONS = [
    ("replicate-to = 9001\nreplicate-from = 9001", "replicate-from",
     "9001", "listens there itself (replicate-to)"),
    ("zeo-address = 9002\nupstream-address = 127.0.0.1:9002",
     "upstream-address", "127.0.0.1:9002", "listens there itself"),
    ("zeo-address = 9003\nreplicate-to = 9003", "replicate-to", "9003",
     "zeo-address uses this address"),
    ("replicate-from = 0.0.0.0:9001", "replicate-from", "0.0.0.0:9001",
     "wildcard"),
    ("replicate-to = primary", "replicate-to", "primary", "port"),
    ("keep-alive-delay = 60", "keep-alive-delay", "60",
     "only a secondary"),
    ("replicate-from = 9001\nkeep-alive-delay = soon", "keep-alive-delay",
     "soon", "whole number"),
    ("upstream-address = 9001\nreplicate-to = 9004", "upstream-address",
     "9001", "fan-out"),
    ("upstream-cache-size = 10MB", "upstream-cache-size", "10MB",
     "only a fan-out"),
    ("zeo-conf = own.conf\nreplicate-to = 9005", "replicate-to", "9005",
     "zeo-conf replaces"),
]


@pytest.mark.parametrize("options, option, value, reason", BAD_OPTIONS,
                         ids=[case[0].replace("\n", ",").replace(" ", "")
                              for case in BAD_OPTIONS])
def test_bad_scale_out_options_fail_with_one_line(buildout, options, option,
                                                  value, reason):
    buildout.path("own.conf").write_text(
        "<zeo>\n  address 9006\n</zeo>\n<mappingstorage 1>\n"
        "</mappingstorage>\n")
    buildout.write(options)
    result = buildout.run(check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "Traceback" not in out
    [line] = [line for line in out.splitlines() if line.startswith("Error:")]
    assert line.startswith(f"Error: [zeo] {option} = "), line
    assert value in line and reason in line, line


def test_chain_of_secondaries_and_zeo_conf_of_ones_own(
        buildout, second, tmp_path, dist_dir, eggs_dir):
    """A secondary may have secondaries of its own (replicate-from and
    replicate-to on one part).  And a zeo-conf may use the recipe's <zrs>
    section, or zc.zrs's own, which the server fixes for ZODB 6 too."""
    primary, middle = buildout, second
    last = Buildout(tmp_path / "last", dist_dir, eggs_dir)
    last.dir.mkdir()
    first_hop, second_hop = free_port(), free_port()
    primary.path("own.conf").write_text(f"""\
%import plone.recipe.zope2zeoserver
<zeo>
  address 127.0.0.1:{primary.port}
</zeo>
<zrs 1>
  replicate-to 127.0.0.1:{first_hop}
  <filestorage>
    path {primary.path("var", "Data.fs")}
  </filestorage>
</zrs>
""")
    last.path("own.conf").write_text(f"""\
%import zc.zrs
<zeo>
  address 127.0.0.1:{last.port}
</zeo>
<zrs 1>
  replicate-from 127.0.0.1:{second_hop}
  <filestorage>
    path {last.path("var", "Data.fs")}
  </filestorage>
</zrs>
""")
    try:
        primary.install("zeo-conf = own.conf\n"
                        "eggs = plone.recipe.zope2zeoserver[zrs]")
        middle.install(f"replicate-from = {first_hop}\n"
                       f"replicate-to = {second_hop}")
        last.install("zeo-conf = own.conf\neggs = zc.zrs")
        # In this order: zc.zrs's own secondary retries only every 60 s.
        for server in (primary, middle, last):
            started(server)
        with client(address(primary)) as db:
            with db.transaction() as conn:
                conn.root()["chained"] = True
        assert wait_for(lambda: same_transactions(primary, last), 10)
        assert "storage 1: primary" in primary.ctl("status").stdout
        status = middle.ctl("status").stdout
        assert (f"of the primary at 127.0.0.1:{first_hop}; its secondaries "
                f"connect to 127.0.0.1:{second_hop}") in status, status
        assert "storage 1: secondary" in last.ctl("status").stdout
    finally:
        last.stop_all()
