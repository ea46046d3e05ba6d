"""Real servers in the configurations the part's options produce."""

import contextlib
import os
import re
import shutil
import signal
import socket
import sys
from pathlib import Path

import pytest
import transaction
import ZODB
import ZODB.blob
import ZODB.FileStorage
import ZODB.POSException

from helpers import (accepts, alive, another_users_buildout, Buildout,
                      client, commit, counter_egg, needs_other_users,
                      output, processes_using, read, start,
                      use_interpreter, wait_for)




def stop(buildout):
    result = buildout.ctl("stop")
    assert result.returncode == 0, output(result)
    assert buildout.ctl("status").returncode == 3


def status_pid(buildout):
    result = buildout.ctl("status")
    match = re.search(r"pid=(\d+)", result.stdout)
    assert result.returncode == 0 and match, output(result)
    return int(match.group(1))


def kill_processes_under(directory):
    for pid in processes_using(directory):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def read_file_storage(path, key):
    """root[KEY] read from the FileStorage at PATH, no server involved."""
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(path), read_only=True))
    try:
        with db.transaction() as conn:
            return conn.root().get(key)
    finally:
        db.close()


def test_unix_socket(buildout):
    buildout.install("zeo-address = var/zeo.sock")
    sock = str(buildout.path("var", "zeo.sock"))
    start(buildout)
    assert accepts(sock)
    commit(sock, answer=42)
    assert read(sock, "answer") == 42
    result = buildout.script("zeopack", "-d", "0", timeout=30)
    assert result.returncode == 0, output(result)
    stop(buildout)
    assert not accepts(sock)


def ipv6_loopback():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
            s.listen()
            with socket.create_connection(s.getsockname()[:2], timeout=1):
                pass
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6(buildout):
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
    buildout.install(f"zeo-address = [::1]:{port}")
    start(buildout)
    assert accepts(("::1", port))
    assert not accepts(("127.0.0.1", port))
    commit(("::1", port), answer=6)
    assert read(("::1", port), "answer") == 6
    stop(buildout)
    assert not accepts(("::1", port))


def test_blob_storage(buildout, tmp_path):
    buildout.install("blob-storage = var/blobstorage")
    start(buildout)
    address = ("127.0.0.1", buildout.port)
    with client(address, blob_dir=str(tmp_path / "cache1")) as db:
        with db.transaction() as conn:
            conn.root()["file"] = ZODB.blob.Blob(b"blob contents " * 1000)
    # The server keeps the blob in the part's blob directory.
    stored = list(buildout.path("var", "blobstorage").rglob("*.blob"))
    assert [p.read_bytes() for p in stored] == [b"blob contents " * 1000]
    with client(address, blob_dir=str(tmp_path / "cache2")) as db:
        conn = db.open()
        try:
            with conn.root()["file"].open("r") as f:
                assert f.read() == b"blob contents " * 1000
        finally:
            conn.close()
            transaction.abort()


def test_read_only(buildout):
    buildout.install()
    start(buildout)
    address = ("127.0.0.1", buildout.port)
    commit(address, answer=42)
    stop(buildout)

    buildout.install("read-only = true")
    start(buildout)
    with client(address, read_only=True) as db:
        with db.transaction() as conn:
            assert conn.root()["answer"] == 42
    # A read-write client falls back to read-only; writing fails.
    with client(address, read_only_fallback=True) as db:
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        conn.root()["answer"] = 43
        with pytest.raises(ZODB.POSException.ReadOnlyError):
            tm.commit()
        tm.abort()
        conn.close()
    with client(address, read_only=True) as db:
        with db.transaction() as conn:
            assert conn.root()["answer"] == 42


def test_relative_paths_survive_a_move(buildout, tmp_path):
    buildout.install(buildout_options="relative-paths = true")
    old = buildout.dir
    new = tmp_path / "moved"
    moved = Buildout(new, buildout.dist_dir, buildout.eggs_dir)
    moved.port = buildout.port
    address = ("127.0.0.1", buildout.port)
    shutil.move(old, new)
    try:
        start(moved)
        assert processes_using(old) == []
        commit(address, moved=True)
        data_fs = new / "var" / "filestorage" / "Data.fs"
        assert data_fs.exists()
        result = moved.script("zeopack", "-d", "0", timeout=30)
        assert result.returncode == 0, output(result)
        (new / "var" / "backups").mkdir()
        result = moved.script("repozo", "-B", "-r", "var/backups",
                              "-f", "var/filestorage/Data.fs", timeout=60)
        assert result.returncode == 0, output(result)
        assert list((new / "var" / "backups").glob("*.fs"))
        assert read(address, "moved") is True
        stop(moved)
        # Nothing was created at the old place.
        assert not old.exists()
        assert read_file_storage(data_fs, "moved") is True
    finally:
        moved.stop_all()
        kill_processes_under(new)


def test_uninstall_stops_the_server_and_keeps_the_data(server):
    address = ("127.0.0.1", server.port)
    commit(address, answer=42)
    pid = status_pid(server)
    config = server.write()
    assert "parts = zeo\n" in config
    server.path("buildout.cfg").write_text(
        config.replace("parts = zeo\n", "parts =\n"))
    server.run()
    assert not alive(pid)
    assert not accepts(address)
    assert wait_for(lambda: not processes_using(server.dir), 5)
    assert not server.path("bin", "zeo").exists()
    assert not server.path("parts", "zeo").exists()
    data_fs = server.path("var", "filestorage", "Data.fs")
    assert read_file_storage(data_fs, "answer") == 42
    assert server.path("var", "log", "zeo.log").exists()


def test_changed_option_restarts_the_server(server):
    address = ("127.0.0.1", server.port)
    commit(address, answer=42)
    pid = status_pid(server)
    server.install("invalidation-queue-size = 200")
    assert "invalidation-queue-size 200" in server.zeo_conf()
    new_pid = status_pid(server)
    assert new_pid != pid and not alive(pid)
    assert read(address, "answer") == 42


@needs_other_users
def test_effective_user(dist_dir):
    with another_users_buildout(dist_dir) as (buildout, user, python):
        buildout.install(f"effective-user = {user.pw_name}")
        if python != sys.executable:
            use_interpreter(buildout, python)
        start(buildout)
        pid = status_pid(buildout)
        uids = re.search(r"(?m)^Uid:\s+(.*)$",
                         Path(f"/proc/{pid}/status").read_text())
        assert {int(uid) for uid in uids.group(1).split()} == {
            user.pw_uid}
        address = ("127.0.0.1", buildout.port)
        commit(address, answer=42)
        assert read(address, "answer") == 42
        data_fs = buildout.path("var", "filestorage", "Data.fs")
        assert data_fs.stat().st_uid == user.pw_uid
        stop(buildout)
        assert not alive(pid)
        assert wait_for(lambda: not processes_using(buildout.dir), 5)


def test_eggs_put_conflict_resolution_on_the_servers_path(
        buildout, monkeypatch):
    module, egg = counter_egg(buildout)
    buildout.install(f"eggs = {module}",
                     buildout_options="develop = src/counter")
    assert str(egg) in buildout.path("parts", "zeo", "bin",
                                     "runzeo").read_text()
    start(buildout)

    monkeypatch.syspath_prepend(str(egg))
    counter = __import__(module)
    try:
        resolve_a_conflict(("127.0.0.1", buildout.port), counter)
    finally:
        del sys.modules[module]


def resolve_a_conflict(address, counter):
    commit(address, counter=counter.Counter())

    with client(address) as db1, client(address) as db2:
        tm1 = transaction.TransactionManager()
        tm2 = transaction.TransactionManager()
        conn1, conn2 = db1.open(tm1), db2.open(tm2)
        c1, c2 = conn1.root()["counter"], conn2.root()["counter"]
        assert c1.value == c2.value == 0
        c1.add(1)
        c2.add(10)
        tm1.commit()
        tm2.commit()  # conflicts with tm1; the server resolves it
        conn1.close()
        conn2.close()
    with client(address) as db:
        with db.transaction() as conn:
            assert conn.root()["counter"].value == 11
