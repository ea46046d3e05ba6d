"""monitor-address and metrics-address: the live statistics a running
server serves itself, from a real buildout, to real sockets and real ZEO
clients doing real work.
"""

import contextlib
import http.client
import os
import re
import socket
import subprocess
import textwrap
import time

import pytest
import transaction
import ZODB.POSException
from ZEO.monitor import StorageStats

from helpers import (client, commit, commit_lock_held, free_port, output,
                      read, ROOT, server_pid, wait_for)


TIMEOUT = 10  # seconds any single network wait of a test may take



def started(buildout, options):
    buildout.install(options)
    result = buildout.ctl("start")
    assert result.returncode == 0, output(result)
    return ("127.0.0.1", buildout.port)


def monitor(port):
    """What the monitor server at 127.0.0.1:PORT sends, up to its close."""
    with socket.create_connection(("127.0.0.1", port), TIMEOUT) as s:
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode("utf-8")


def blocks(text):
    """{storage name: its block, as StorageStats.parse takes it}."""
    header, _, body = text.partition("\n\n")
    found = {}
    for block in body.split("\n\n"):
        if block.strip():
            name = block.split("\n", 1)[0].removeprefix("Storage: ")
            found[name] = block.strip("\n")
    return found


def parsed(block):
    stats = StorageStats()
    stats.parse(block)
    return stats


def get(port, path="/metrics", method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), \
            response.read().decode("utf-8")
    finally:
        conn.close()


SAMPLE = re.compile(r'^([a-z_]+)\{storage="([^"]*)"\} (\S+)$')


def metrics(port):
    """{(metric, storage): value} from GET /metrics; every line checked
    against the Prometheus text format."""
    status, content_type, body = get(port)
    assert status == 200, body
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    values = {}
    typed = set()
    for line in body.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge")
            typed.add(name)
            continue
        match = SAMPLE.match(line)
        assert match, line
        name, storage, value = match.groups()
        assert name in typed, line
        values[name, storage] = float(value)
    return values


def open_files(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def conflict(db):
    """Make the server refuse a commit with a ConflictError."""
    tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
    first, second = db.open(tm1), db.open(tm2)
    try:
        second.root()["seen"] = second.root().get("seen", 0)  # loads root
        first.root()["by"] = "first"
        tm1.commit()
        second.root()["by"] = "second"
        with pytest.raises(ZODB.POSException.ConflictError):
            tm2.commit()
        tm2.abort()
    finally:
        first.close()
        second.close()


# -- the 1.5 monitor text ---------------------------------------------------

def test_monitor_text_follows_client_work(buildout):
    monitor_port = free_port()
    address = started(buildout, f"monitor-address = {monitor_port}")
    text = monitor(monitor_port)
    lines = text.split("\n")
    assert re.fullmatch(r"ZEO monitor server version 6\.\S+", lines[0])
    time.strptime(lines[1], "%a %b %d %H:%M:%S %Y")  # time.ctime()
    assert lines[2] == ""
    assert list(blocks(text)) == ["1"]
    before = parsed(blocks(text)["1"])
    assert before.commits == 0 and before.clients == 0

    for n in range(5):
        commit(address, n=n)
    assert read(address, "n") == 4
    with client(address) as db, client(address) as other:
        conflict(db)
        with other.transaction() as conn:
            conn.root()["n"]
        # Closed clients leave the count as the server notices.
        assert wait_for(lambda: parsed(
            blocks(monitor(monitor_port))["1"]).clients == 2)
        stats = parsed(blocks(monitor(monitor_port))["1"])
    assert stats.commits >= 5 + 1
    assert stats.stores >= 6
    assert stats.loads > before.loads
    assert stats.conflicts >= 1
    assert stats.active_txns == 0
    assert stats.lock_time is None  # no "Commit lock held for" line
    assert stats.verifying_clients == 0
    # Old scripts read the whole reply until the server closes it.
    assert text.endswith("Conflicts resolved: 0\n\n")


def test_every_storage_gets_a_block(buildout):
    monitor_port = free_port()
    address = started(buildout, f"""
        monitor-address = 127.0.0.1:{monitor_port}
        zeo-conf-additional =
            <filestorage 2>
              path ${{buildout:directory}}/var/filestorage/Two.fs
            </filestorage>
        """)
    commit(address, one=1)
    with client(address, storage="2") as db:
        with db.transaction() as conn:
            conn.root()["two"] = 2
        with db.transaction() as conn:
            conn.root()["two"] = 3
        found = blocks(monitor(monitor_port))
        assert list(found) == ["1", "2"]
        one, two = parsed(found["1"]), parsed(found["2"])
        assert two.clients == 1 and one.clients == 0
    assert one.commits >= 1
    assert two.commits >= 2
    assert two.commits > one.commits


def readme_block(first_line):
    """The literal block of README.rst that starts with FIRST_LINE."""
    text = (ROOT / "README.rst").read_text()
    start = text.index("    " + first_line + "\n")
    lines = []
    for line in text[start:].splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines)).strip() + "\n"


def test_the_readmes_nagios_check_reads_the_monitor(buildout, tmp_path):
    """A 1.x-style monitoring script, unchanged, against a 2.x server."""
    script = tmp_path / "check_zeo_monitor"
    script.write_text(readme_block("#!/bin/bash"))
    script.chmod(0o755)
    monitor_port = free_port()
    address = started(buildout, f"monitor-address = {monitor_port}")
    commit(address, x=1)

    def check(limit):
        return subprocess.run(
            [str(script), "127.0.0.1", str(monitor_port), str(limit)],
            capture_output=True, text=True, timeout=30)

    result = check(30)
    assert result.returncode == 0, output(result)
    assert result.stdout == "ZEO OK - 2 commits | commits=2\n"
    with commit_lock_held(address):
        assert wait_for(lambda: "Commit lock held for: 1" in monitor(
            monitor_port))
        result = check(0)
    assert result.returncode == 1, output(result)
    assert result.stdout.startswith("ZEO WARNING - commit lock held for ")
    assert buildout.ctl("stop").returncode == 0
    result = check(30)
    assert result.returncode == 2, output(result)
    assert result.stdout.startswith("ZEO CRITICAL - no answer")


# -- robustness -------------------------------------------------------------

def test_hostile_monitor_clients_cannot_hold_the_server(buildout):
    monitor_port, metrics_port = free_port(), free_port()
    address = started(buildout, f"""
        monitor-address = {monitor_port}
        metrics-address = {metrics_port}
        """)
    pid = server_pid(buildout)
    files_before = open_files(pid)
    count = 1000
    started_at = time.monotonic()
    with contextlib.ExitStack() as stack:
        # Connect and never read: the replies stay unread.
        hostile = [stack.enter_context(socket.create_connection(
            ("127.0.0.1", monitor_port), TIMEOUT)) for _ in range(count)]
        # Connect and never send a request.
        silent = [stack.enter_context(socket.create_connection(
            ("127.0.0.1", metrics_port), TIMEOUT)) for _ in range(200)]
        # Meanwhile the server serves clients and scrapers.
        before_commit = time.monotonic()
        commit(address, during="attack")
        assert time.monotonic() - before_commit < 5
        assert metrics(metrics_port)[("zeo_commits_total", "1")] >= 1
        assert re.search(r"^Commits: [1-9]", monitor(monitor_port), re.M)
        assert time.monotonic() - started_at < 30
        # Held connections are bounded, whatever the clients do.
        assert open_files(pid) < files_before + 100
        # Every monitor connection got its reply and was closed.
        for s in hostile:
            s.settimeout(TIMEOUT)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            assert data.startswith(b"ZEO monitor server version")
        # Silent ones are dropped within the reply timeout (5 s).
        deadline = time.monotonic() + TIMEOUT
        for s in silent:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ConnectionResetError):
                assert s.recv(1) == b""
    assert time.monotonic() - started_at < 40
    assert wait_for(lambda: open_files(pid) <= files_before + 2)
    assert read(address, "during") == "attack"


def test_monitor_address_in_use_fails_start_naming_it(buildout):
    monitor_port = free_port()
    buildout.install(f"monitor-address = {monitor_port}")
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", monitor_port))
        occupant.listen()
        start = time.monotonic()
        result = buildout.ctl("start", timeout=60)
        elapsed = time.monotonic() - start
    text = output(result)
    assert result.returncode == 1, text
    assert elapsed < 10, elapsed
    assert (f"monitor-address 127.0.0.1:{monitor_port} is already in use"
            in text), text
    assert "Traceback" not in text
    assert buildout.ctl("status").returncode == 3
    # Once the address is free the server starts.
    result = buildout.ctl("start")
    assert result.returncode == 0, output(result)
    assert "Storage: 1" in monitor(monitor_port)


def test_monitor_and_metrics_on_unix_sockets(buildout):
    address = started(buildout, """
        monitor-address = var/monitor.sock
        metrics-address = var/metrics.sock
        """)
    commit(address, x=1)
    path = str(buildout.path("var", "monitor.sock"))
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(TIMEOUT)
        s.connect(path)
        text = s.makefile("rb").read().decode()
    assert parsed(blocks(text)["1"]).commits >= 1
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(TIMEOUT)
        s.connect(str(buildout.path("var", "metrics.sock")))
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        reply = s.makefile("rb").read().decode()
    assert reply.startswith("HTTP/1.1 200 OK\r\n")
    assert 'zeo_commits_total{storage="1"} ' in reply
    assert buildout.ctl("stop").returncode == 0
    # The server removes its socket files when it stops.
    assert not os.path.exists(path)


# -- metrics ----------------------------------------------------------------

def test_metrics_follow_client_work(buildout):
    metrics_port = free_port()
    address = started(buildout, f"metrics-address = {metrics_port}")
    before = metrics(metrics_port)
    assert before[("zeo_commits_total", "1")] == 0
    assert before[("zeo_commit_lock_held_seconds", "1")] == 0
    # An empty storage has no last transaction.
    assert ("zeo_seconds_since_last_transaction", "1") not in before
    # Only a ZRS secondary has replication figures.
    assert not {name for name, _ in before if "replication" in name}
    # The size is the Data.fs's: an empty one is its header.
    data_fs = buildout.path("var", "filestorage", "Data.fs")
    assert before[("zeo_storage_size_bytes", "1")] == \
        data_fs.stat().st_size == 4
    for n in range(3):
        commit(address, n=n)
    with client(address) as db:
        conflict(db)
        assert wait_for(lambda: metrics(metrics_port)[
            ("zeo_clients", "1")] == 1)
        after = metrics(metrics_port)
    assert after[("zeo_commits_total", "1")] >= 4
    assert after[("zeo_stores_total", "1")] >= 4
    assert after[("zeo_loads_total", "1")] > before[("zeo_loads_total", "1")]
    assert after[("zeo_conflicts_total", "1")] >= 1
    assert after[("zeo_active_transactions", "1")] == 0
    assert 0 <= after[("zeo_seconds_since_last_transaction", "1")] < 60
    assert after[("zeo_storage_size_bytes", "1")] == \
        data_fs.stat().st_size > 4
    assert {name for name, _ in after} >= {
        "zeo_commits_total", "zeo_aborts_total", "zeo_loads_total",
        "zeo_stores_total", "zeo_conflicts_total",
        "zeo_conflicts_resolved_total", "zeo_clients",
        "zeo_active_transactions", "zeo_commit_lock_held_seconds",
        "zeo_storage_size_bytes"}
    assert get(metrics_port, "/")[0] == 404
    assert get(metrics_port, "/metrics", "POST")[0] == 405
    assert get(metrics_port, "/metrics?name[]=x")[0] == 200


# -- buildout time ------------------------------------------------------------

@pytest.mark.parametrize("options, option, value, reason", [
    ("monitor-address = abc", "monitor-address", "abc", "port"),
    ("monitor-address = 99999", "monitor-address", "99999", "port"),
    ("monitor-address = :8101", "monitor-address", ":8101", "host"),
    ("metrics-address = ::1:9100", "metrics-address", "::1:9100",
     "brackets"),
    ("metrics-address = afile/metrics.sock", "metrics-address", "afile",
     "cannot"),
    ("zeo-address = 8100\nmonitor-address = 127.0.0.1:8100",
     "monitor-address", "127.0.0.1:8100", "zeo-address uses"),
    ("zeo-address = 8100\nmetrics-address = 0.0.0.0:8100",
     "metrics-address", "0.0.0.0:8100", "zeo-address uses"),
    ("monitor-address = 9100\nmetrics-address = 9100",
     "metrics-address", "127.0.0.1:9100", "monitor-address uses"),
    ("monitor-address = var/zeo.zdsock", "monitor-address", "zeo.zdsock",
     "socket-name uses"),
])
def test_bad_addresses_fail_buildout_with_one_line(buildout, options, option,
                                                    value, reason):
    buildout.path("afile").write_text("a regular file\n")
    buildout.write(options)
    result = buildout.run(check=False)
    text = output(result)
    assert result.returncode != 0, text
    assert "Traceback" not in text
    [line] = [line for line in text.splitlines()
              if "[zeo]" in line and option in line]
    assert value in line and reason in line, line
    assert not buildout.path("bin", "zeo").exists()
