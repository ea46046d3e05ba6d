"""bin/<part> stats and check: the running server's figures, asked over
its own address, as a person, a script and a monitoring system read them.
"""

import contextlib
import json
import os
import re
import signal
import socket
import threading
import time

import pytest
from ZEO.monitor import StorageStats

from helpers import client, commit, commit_lock_held, output, wait_for


FAST = 1.5  # seconds: stats and check answer "well under a second"

FIGURES = {
    "started": str, "clients": int, "clients_verifying": int,
    "active_transactions": int, "waiting_transactions": int,
    "commit_lock_seconds": float, "commits": int, "aborts": int,
    "loads": int, "stores": int, "conflicts": int, "conflicts_resolved": int,
    "last_transaction": (str, type(None)),
    "last_transaction_time": (float, type(None)),
    "seconds_since_last_transaction": (float, type(None)),
}



def timed(buildout, *args):
    started = time.monotonic()
    result = buildout.ctl(*args, timeout=60)
    return result, time.monotonic() - started


def stats_json(buildout):
    result, elapsed = timed(buildout, "stats", "--json")
    assert result.returncode == 0, output(result)
    assert elapsed < FAST, elapsed
    return json.loads(result.stdout)


def test_stats_shows_the_live_figures(buildout):
    buildout.install("""
        zeo-conf-additional =
            <filestorage 2>
              path ${buildout:directory}/var/filestorage/Two.fs
            </filestorage>
        """)
    assert buildout.ctl("start").returncode == 0
    address = ("127.0.0.1", buildout.port)
    for n in range(3):
        commit(address, n=n)
    with client(address):
        # Closed clients leave the count as the server notices; the
        # asking connection itself is never counted.
        assert wait_for(lambda: stats_json(buildout)["storages"]["1"][
            "clients"] == 1)
        report = stats_json(buildout)
        result, elapsed = timed(buildout, "stats")
        check, _ = timed(buildout, "check")
    assert report["address"] == f"127.0.0.1:{buildout.port}"
    assert abs(report["time"] - time.time()) < 60
    assert sorted(report["storages"]) == ["1", "2"]
    for figures in report["storages"].values():
        assert set(figures) == set(FIGURES)
        for key, kind in FIGURES.items():
            assert isinstance(figures[key], kind), (key, figures[key])
    one, two = report["storages"]["1"], report["storages"]["2"]
    assert one["commits"] >= 3 + 1 and one["stores"] >= 4
    assert one["loads"] >= 1
    assert two["commits"] == 0 and two["clients"] == 0
    assert two["last_transaction"] is None
    assert 0 <= one["seconds_since_last_transaction"] < 60
    assert len(one["last_transaction"]) == 16

    # The human form: the monitor's blocks, which ZEO itself parses.
    assert result.returncode == 0, output(result)
    assert elapsed < FAST, elapsed
    header, *blocks = result.stdout.split("\n\n")
    assert header == f"ZEO server at 127.0.0.1:{buildout.port}"
    assert [b.split("\n")[0] for b in blocks] == ["Storage: 1", "Storage: 2"]
    stats = StorageStats()
    stats.parse(blocks[0].strip())
    assert stats.commits == one["commits"] and stats.clients == 1
    assert "Last transaction: none" in blocks[1]

    assert check.returncode == 0, output(check)
    [line] = check.stdout.splitlines()
    assert line.startswith(f"ZEO OK - 2 storages, 1 clients, "
                           f"{one['commits']} commits | "), line
    assert " clients=1 " in line and " 2:commits=0 " in line


def test_check_warns_about_a_commit_lock_held_too_long(server):
    address = ("127.0.0.1", server.port)
    commit(address, x=1)
    assert server.ctl("check", "--lock-warning", "0.5").returncode == 0
    with commit_lock_held(address):
        assert wait_for(lambda: stats_json(server)["storages"]["1"][
            "commit_lock_seconds"] >= 1)
        warning, elapsed = timed(server, "check", "--lock-warning", "1")
        critical, _ = timed(server, "check", "--lock-warning", "0.5",
                            "--lock-critical", "1")
        relaxed, _ = timed(server, "check")  # default: 10 s
        text, _ = timed(server, "stats")
    assert warning.returncode == 1, output(warning)
    assert elapsed < FAST, elapsed
    assert re.match(r"ZEO WARNING - commit lock of storage '1' held for "
                    r"\d+ s; 1 clients, \d+ commits \| .* lock=\d",
                    warning.stdout), warning.stdout
    assert critical.returncode == 2, output(critical)
    assert critical.stdout.startswith("ZEO CRITICAL - commit lock")
    assert relaxed.returncode == 0, output(relaxed)
    assert re.search(r"^Commit lock held for: [1-9]", text.stdout, re.M)
    assert "Active transactions: 1" in text.stdout
    # The lock is free again once the client aborted.
    figures = stats_json(server)["storages"]["1"]
    assert figures["commit_lock_seconds"] == 0
    assert figures["active_transactions"] == 0
    assert figures["aborts"] >= 1
    assert server.ctl("check", "--lock-warning", "0").returncode == 0


def test_stats_and_check_when_the_server_is_down(buildout):
    buildout.install()
    result, elapsed = timed(buildout, "stats")
    assert result.returncode == 3, output(result)
    assert elapsed < FAST, elapsed
    assert result.stdout == ""
    assert result.stderr == (
        f"the ZEO server at 127.0.0.1:{buildout.port} is not running "
        "(Connection refused); start it with the start command\n")
    result, elapsed = timed(buildout, "check")
    assert result.returncode == 2, output(result)
    assert elapsed < FAST, elapsed
    assert result.stdout.startswith("ZEO CRITICAL - the ZEO server at ")
    assert len(result.stdout.splitlines()) == 1
    # Usage errors are UNKNOWN to a monitoring system, not CRITICAL.
    result = buildout.ctl("check", "--lock-warning", "soon")
    assert result.returncode == 3, output(result)
    assert "Traceback" not in output(result)


@contextlib.contextmanager
def impostor(port, behave):
    """Something else on PORT: BEHAVE(connection) for each connection."""
    listener = socket.create_server(("127.0.0.1", port))
    connections = []

    def serve():
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                connections.append(conn)
                behave(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        # shutdown() wakes the accept() the thread is blocked in.
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(10)
        for conn in connections:
            conn.close()


def test_check_is_critical_when_something_else_answers(buildout):
    """Not ZEO, or a server that accepts but never answers: bounded."""
    buildout.install()
    with impostor(buildout.port, lambda conn: None):
        result, elapsed = timed(buildout, "check", "--timeout", "0.5")
        stats, _ = timed(buildout, "stats", "--timeout", "0.5")
    assert result.returncode == 2, output(result)
    assert elapsed < 0.5 + FAST, elapsed
    assert "did not answer within 0.5 s" in result.stdout
    assert stats.returncode == 1, output(stats)
    assert "did not answer within 0.5 s" in stats.stderr

    def talk_nonsense(conn):
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        conn.close()

    with impostor(buildout.port, talk_nonsense):
        result, elapsed = timed(buildout, "check")
    assert result.returncode == 2, output(result)
    assert elapsed < FAST, elapsed
    assert "did not answer like a ZEO server" in result.stdout


def test_stats_and_check_over_a_unix_socket(buildout):
    buildout.install("zeo-address = var/zeo.sock")
    assert buildout.ctl("start").returncode == 0
    path = str(buildout.path("var", "zeo.sock"))
    commit(path, x=1)
    report = stats_json(buildout)
    assert report["address"] == path
    assert report["storages"]["1"]["commits"] >= 1
    result = buildout.ctl("check")
    assert result.returncode == 0, output(result)
    assert result.stdout.startswith("ZEO OK - 0 clients, ")
    assert buildout.ctl("stop").returncode == 0
    result = buildout.ctl("check")
    assert result.returncode == 2, output(result)
    assert buildout.ctl("stats").returncode == 3


# -- stats --watch ------------------------------------------------------------

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Watch:
    """bin/<part> stats --watch ARGS with its output on a pseudo-terminal
    (24 x 100), read by a thread of its own so that it never blocks, and
    its stderr on a pipe."""

    def __init__(self, buildout, *args):
        import fcntl
        import pty
        import struct
        import subprocess
        import termios
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ,
                    struct.pack("HHHH", 24, 100, 0, 0))
        self.process = subprocess.Popen(
            [str(buildout.path("bin", "zeo")), "stats", "--watch", *args],
            cwd=buildout.dir, stdin=slave, stdout=slave,
            stderr=subprocess.PIPE, text=True, start_new_session=True)
        os.close(slave)
        self.data = ""
        self.reader = threading.Thread(target=self.drain, daemon=True)
        self.reader.start()

    def drain(self):
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the process and its terminal are gone
                return
            if not chunk:
                return
            self.data += chunk.decode("utf-8", "replace")

    def read(self, until, timeout=20):
        """Wait until UNTIL(self) or the end of the output, within
        TIMEOUT seconds; UNTIL's value."""
        deadline = time.monotonic() + timeout
        while (not until(self) and self.reader.is_alive()
               and time.monotonic() < deadline):
            time.sleep(0.05)
        return until(self)

    def screens(self):
        """Each screen drawn, without its escape sequences, as lines."""
        return [ESCAPES.sub("", screen).splitlines()
                for screen in self.data.split("\x1b[H")[1:]]

    def row(self, storage):
        """The last full row of STORAGE: {column title: cell}."""
        for lines in reversed(self.screens()):
            titles = [line.split() for line in lines
                      if line.startswith("storage  ")]
            cells = [line.split(None, 7) for line in lines
                     if line.split()[:1] == [storage]]
            if titles and cells and len(cells[0]) == 8:
                return dict(zip(titles[0], cells[0]))
        return None

    def end(self, timeout=20):
        """(exit status, stderr) once the process has ended."""
        _, stderr = self.process.communicate(timeout=timeout)
        self.reader.join(5)
        return self.process.returncode, stderr

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()
        self.reader.join(5)
        os.close(self.master)


@contextlib.contextmanager
def committing(address, seconds=30):
    """A client committing as fast as it can, in a thread, while inside."""
    stop = threading.Event()

    def work():
        with client(address) as db:
            deadline = time.monotonic() + seconds
            n = 0
            while not stop.is_set() and time.monotonic() < deadline:
                with db.transaction() as conn:
                    conn.root()["n"] = n = n + 1

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(20)


@pytest.mark.parametrize("ending", [signal.SIGINT, signal.SIGTERM],
                         ids=["ctrl-c", "kill"])
def test_stats_watch_redraws_rates_until_ctrl_c(server, ending):
    address = ("127.0.0.1", server.port)
    with committing(address), Watch(server, "0.2") as watch:
        busy = watch.read(lambda w: (row := w.row("1")) is not None
                          and row["commits/s"] not in ("-", "0.0"))
        watch.process.send_signal(ending)
        status, stderr = watch.end()
    assert busy, watch.data
    assert status == 0, (watch.data, stderr)
    # The cursor it hid is shown again.
    assert watch.data.rfind("\x1b[?25h") > watch.data.rfind("\x1b[?25l")
    assert stderr == ""
    assert "Traceback" not in watch.data
    screens = watch.screens()
    assert len(screens) >= 2
    assert screens[-1][0].startswith(
        f"ZEO server at 127.0.0.1:{server.port} - ")
    assert screens[-1][0].endswith(", every 0.2 s (Ctrl-C ends)")
    row = watch.row("1")
    assert float(row["commits/s"]) > 0 and float(row["stores/s"]) > 0
    assert row["clients"] == "1"
    # The first screen has no rates yet; the cursor is shown again.
    assert watch.screens()[0][3].split()[1] == "-"
    assert watch.data.startswith("\x1b[?25l") and \
        watch.data.endswith("\x1b[?25h")


def test_stats_watch_ends_when_the_server_goes_away(server):
    with Watch(server, "0.2") as watch:
        assert watch.read(lambda w: w.row("1") is not None), watch.data
        assert server.ctl("stop").returncode == 0
        status, stderr = watch.end()
    assert status == 1, (watch.data, stderr)
    assert stderr == (
        f"stopped watching: the ZEO server at 127.0.0.1:{server.port} is "
        "not running (Connection refused); start it with the start "
        "command\n")
    assert "Traceback" not in watch.data


def test_stats_watch_refusals(buildout):
    buildout.install()
    # Not on a terminal: nothing to redraw.
    result = buildout.ctl("stats", "--watch")
    assert result.returncode == 2, output(result)
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert "--watch redraws a terminal" in line
    assert "'stats --json' in a loop" in line and "metrics-address" in line
    result = buildout.ctl("stats", "--watch", "1", "--json")
    assert result.returncode == 2, output(result)
    [line] = result.stderr.splitlines()
    assert "not allowed with argument" in line, line
    # On a terminal, a server that does not run: as stats says it.
    with Watch(buildout, "0.2") as watch:
        status, stderr = watch.end()
    assert status == 3, (watch.data, stderr)
    assert stderr == (
        f"the ZEO server at 127.0.0.1:{buildout.port} is not running "
        "(Connection refused); start it with the start command\n")
    assert "\x1b[" not in watch.data  # the screen is left alone


def test_stats_watch_ctrl_c_while_the_server_keeps_it_waiting(buildout):
    buildout.install()
    asking = threading.Event()
    with impostor(buildout.port, lambda conn: asking.set()), \
            Watch(buildout, "0.2") as watch:
        assert asking.wait(20)  # connected, waiting for an answer
        watch.process.send_signal(signal.SIGINT)
        status, stderr = watch.end()
    assert status == 0, (watch.data, stderr)
    assert stderr == "" and "Traceback" not in watch.data
