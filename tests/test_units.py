"""Pure functions, tested on their own: a mistake here fails in
milliseconds, not after a buildout.  They are imported from the
checkout's src/ (the other tests run the recipe from a wheel)."""

import logging
import os
import re
import select
import shutil
import socket
import sys
import time

import pytest

from helpers import ROOT

sys.path.insert(0, str(ROOT / "src"))

from plone.recipe.zope2zeoserver import acceptor  # noqa: E402
from plone.recipe.zope2zeoserver import addresses  # noqa: E402
from plone.recipe.zope2zeoserver import backup  # noqa: E402
from plone.recipe.zope2zeoserver import convert  # noqa: E402
from plone.recipe.zope2zeoserver import pack  # noqa: E402
from plone.recipe.zope2zeoserver import progress  # noqa: E402
from plone.recipe.zope2zeoserver import python2  # noqa: E402

PY2_DATA = ROOT / "tests" / "data" / "py2"


@pytest.mark.parametrize("address, text", [
    ("/srv/zeo.sock", "/srv/zeo.sock"),
    (("127.0.0.1", 8100), "127.0.0.1:8100"),
    (("::1", 8100), "[::1]:8100"),
])
def test_describe(address, text):
    assert addresses.describe(address) == text


@pytest.mark.parametrize("address, reached", [
    (("", 8100), (socket.AF_INET, ("127.0.0.1", 8100))),
    (("0.0.0.0", 8100), (socket.AF_INET, ("127.0.0.1", 8100))),
    (("::", 8100), (socket.AF_INET6, ("::1", 8100))),
    (("10.0.0.5", 8100), (socket.AF_INET, ("10.0.0.5", 8100))),
    ("/srv/zeo.sock", (socket.AF_UNIX, "/srv/zeo.sock")),
])
def test_client_address_reaches_a_wildcard_on_this_machine(address, reached):
    assert addresses.client_address(address) == reached


def test_remove_stale_socket(tmp_path):
    path = str(tmp_path / "s")
    live = socket.socket(socket.AF_UNIX)
    live.bind(path)
    live.listen()
    with pytest.raises(OSError):  # in use: kept
        addresses.remove_stale_socket(path)
    live.close()
    addresses.remove_stale_socket(path)  # dead: removed
    assert not (tmp_path / "s").exists()
    (tmp_path / "s").write_text("not a socket")
    addresses.remove_stale_socket(path)  # left for bind to refuse
    assert (tmp_path / "s").exists()


def test_python2_files_and_indexes_are_recognised(tmp_path):
    assert python2.wrote(PY2_DATA / "Data.fs")
    assert python2.wrote_index(PY2_DATA / "Data.fs.index")
    assert python2.wrote_index(PY2_DATA / "Other.fs.index")
    # What ZODB on Python 3 writes.
    import ZODB
    from ZODB.FileStorage import FileStorage
    path = tmp_path / "Data.fs"
    ZODB.DB(FileStorage(str(path))).close()
    assert not python2.wrote(path)
    assert python2.header(path) == python2.PYTHON3_HEADER
    assert not python2.wrote_index(f"{path}.index")
    # Not an index at all, or none.
    assert not python2.wrote_index(PY2_DATA / "EXPECTED.txt")
    assert not python2.wrote_index(tmp_path / "missing")


def test_python2_index_is_set_aside_beside_a_python3_file(tmp_path):
    import ZODB
    from ZODB.FileStorage import FileStorage
    path = tmp_path / "Data.fs"
    ZODB.DB(FileStorage(str(path))).close()
    shutil.copy(PY2_DATA / "Data.fs.index", f"{path}.index")
    said = []
    python2.set_aside_index(str(path), said.append)
    assert not (tmp_path / "Data.fs.index").exists()
    assert (tmp_path / "Data.fs.index.py2").exists()
    assert said and "written by Python 2" in said[0]
    # Beside a Python 2 file it stays: convert-py3 keeps it with it.
    shutil.copy(PY2_DATA / "Data.fs", path)
    shutil.copy(PY2_DATA / "Data.fs.index", f"{path}.index")
    python2.set_aside_index(str(path), said.append)
    assert (tmp_path / "Data.fs.index").exists()


@pytest.mark.parametrize("size, text", [
    (0, "0 bytes"), (1023, "1023 bytes"), (1024, "1.0 KB"),
    (11097, "10.8 KB"), (5 << 20, "5.0 MB"), (3 << 40, "3072.0 GB"),
])
def test_size_text(size, text):
    assert progress.size_text(size) == text
    assert convert.size_text is progress.size_text


@pytest.mark.parametrize("seconds, text", [
    (0, "0.0 s"), (0.44, "0.4 s"), (59.94, "59.9 s"), (60, "1 min 00 s"),
    (125.7, "2 min 05 s"), (3599, "59 min 59 s"), (3720, "1 h 02 min"),
])
def test_elapsed_text(seconds, text):
    assert progress.elapsed_text(seconds) == text


@pytest.mark.parametrize("done, total, share", [
    (0, 100, 0), (7, 100, 7), (999, 1000, 99),
    # Until the work returns it is not done, whatever the bytes say.
    (100, 100, 99),
    # More than the total: the total was wrong, no percentage.
    (101, 100, None),
    (5, None, None), (5, 0, None), (None, 100, None),
])
def test_percent_claims_no_more_than_it_knows(done, total, share):
    assert progress.percent(done, total) == share


@pytest.mark.parametrize("done, total, text", [
    (None, None, "packing storage '1': 4.1 s"),
    (None, 45 << 20, "packing storage '1': 4.1 s"),
    (3 << 20, None, "packing storage '1': 3.0 MB, 4.1 s"),
    (3 << 20, 48 << 20, "packing storage '1': 3.0 MB of 48.0 MB (6 %), 4.1 s"),
    (48 << 20, 48 << 20,
     "packing storage '1': 48.0 MB of 48.0 MB (99 %), 4.1 s"),
    (49 << 20, 48 << 20, "packing storage '1': 49.0 MB, 4.1 s"),
])
def test_progress_line_text(done, total, text):
    assert progress.line_text("packing storage '1'", 4.1, done, total) == text


@pytest.mark.parametrize("size, start, gzip, total", [
    (5000, 0, False, 5000),     # full
    (5000, 4200, False, 800),   # incremental: what the last ones lack
    (5000, 5000, False, 0),
    (5000, 0, True, None),      # compressed: not known
    (None, 0, False, None),     # no file
])
def test_backup_total(size, start, gzip, total):
    assert backup.backup_total(size, start, gzip) == total


@pytest.mark.parametrize("args, text", [
    ((4300000, 320000, False, None, None, 1.23),
     "4.1 MB -> 312.5 KB, 1.2 s"),
    ((4300000, 320000, True, 3, 1, 1.23),
     "4.1 MB -> 312.5 KB, 2 of 3 blob(s) removed, 1.2 s"),
    ((4300000, 320000, True, 1, 2, 0.5),  # a blob committed meanwhile
     "4.1 MB -> 312.5 KB, 0 of 1 blob(s) removed, 0.5 s"),
    ((None, None, True, None, None, 75),
     "its file is not on this machine, its blobs are not on this "
     "machine, 1 min 15 s"),
])
def test_pack_summary(args, text):
    assert pack.pack_summary(*args) == text


def test_what_a_pack_shows_of_the_files(tmp_path):
    data_fs = tmp_path / "Data.fs"
    data_fs.write_bytes(b"x" * 1000)
    (tmp_path / "Data.fs.pack").write_bytes(b"left by a pack that failed")
    watch = pack.PackWatch("1", str(data_fs), None)
    assert watch.state() == ("packing storage '1'", None, 1000)
    time.sleep(0.01)
    # The server's new copy: its header only while it reads the file.
    (tmp_path / "Data.fs.pack").write_bytes(b"FS30")
    assert watch.state() == ("packing storage '1'", None, 1000)
    assert watch.state() == ("packing storage '1'", None, 1000)
    with open(tmp_path / "Data.fs.pack", "ab") as f:
        f.write(b"y" * 296)
    assert watch.state() == ("packing storage '1'", 300, 1000)
    (tmp_path / "Data.fs.pack").rename(data_fs)
    assert watch.state() == ("packing storage '1'", None, 1000)
    assert re.fullmatch(r"1000 bytes -> 300 bytes, \d\.\d s",
                        watch.summary())
    # The server's file is on another machine.
    watch = pack.PackWatch("1", str(tmp_path / "elsewhere.fs"),
                           str(tmp_path / "elsewhere-blobs"))
    assert watch.state() == ("packing storage '1'", None, None)
    assert re.fullmatch(r"its file is not on this machine, its blobs are "
                        r"not on this machine, \d\.\d s", watch.summary())


def test_what_a_backup_shows_of_the_files(tmp_path):
    from ZODB.scripts import repozo
    data_fs = tmp_path / "Data.fs"
    data_fs.write_bytes(b"x" * 1000)
    repository = tmp_path / "backups"
    repository.mkdir()

    def watch(*args):
        return backup.BackupWatch(repozo.parseargs(
            ["-B", "-r", str(repository), "-f", str(data_fs), *args]))

    first = watch()
    assert first.state() == ("backing up Data.fs", None, None)
    first.decided("full", 0)
    assert first.state() == ("full backup of Data.fs", None, 1000)
    (repository / "tmp.tmp").write_bytes(b"x" * 400)
    assert first.state() == ("full backup of Data.fs", 400, 1000)
    (repository / "tmp.tmp").rename(repository / "2024-01-01-00-00-00.fs")
    assert re.fullmatch(
        rf"full backup of {data_fs}: {repository}/2024-01-01-00-00-00.fs, "
        r"400 bytes, \d\.\d s", first.summary())
    # An incremental copies what the last backups lack.
    later = watch()
    assert later.state() == (
        "backing up Data.fs (comparing with the last backup)", None, None)
    later.decided("incremental", 400)
    assert later.state() == ("incremental backup of Data.fs", None, 600)
    assert later.summary().startswith(
        f"no backup of {data_fs} written: it has not changed since the "
        "last backup, ")
    # Compressed: how much is left is not known.
    packed = watch("-z")
    packed.decided("incremental", 400)
    assert packed.state() == (
        "incremental backup of Data.fs (compressed)", None, None)


def test_blob_count(tmp_path):
    assert pack.blob_count(str(tmp_path / "missing")) is None
    assert pack.blob_count(None) is None
    (tmp_path / "0x00" / "0x01").mkdir(parents=True)
    (tmp_path / "0x00" / "0x01" / "0x03a.blob").write_bytes(b"a")
    (tmp_path / "0x00" / "0x01" / "0x03b.blob").write_bytes(b"b")
    (tmp_path / ".layout").write_text("bushy")
    assert pack.blob_count(str(tmp_path)) == 2


def test_a_file_left_by_an_earlier_run_does_not_count(tmp_path):
    path = tmp_path / "Data.fs.pack"
    path.write_bytes(b"x" * 10)
    new = progress.NewFile(str(path))
    assert new.size() is None
    time.sleep(0.01)
    path.write_bytes(b"y" * 3)  # written anew: truncated, then growing
    assert new.size() == 3
    path.unlink()  # renamed into place at the end
    assert new.size() is None


def test_no_progress_line_but_on_a_terminal(tmp_path):
    with open(tmp_path / "log", "w") as stream:
        with progress.Ticker(stream, lambda: ("working", 1, 2), 0.01):
            time.sleep(0.05)
    assert (tmp_path / "log").read_text() == ""


def test_progress_line_on_a_terminal(tmp_path):
    """Redrawn in place with carriage returns while the work runs, from
    what the state says; blank at the end; never longer than the
    terminal is wide (a wrapped line cannot be redrawn)."""
    master, slave = os.openpty()
    growing = tmp_path / "Data.fs.pack"
    new = progress.NewFile(str(growing))

    def state():
        return "packing storage '1'", new.size(), 1000

    try:
        with open(slave, "w", closefd=False) as stream:
            with progress.Ticker(stream, state, interval=0.02):
                for size in (0, 500, 1000):
                    growing.write_bytes(b"x" * size)
                    time.sleep(0.1)
            stream.write("done\n")
        drawn = b""
        while select.select([master], [], [], 0.5)[0]:
            chunk = os.read(master, 65536)
            drawn += chunk
            if drawn.endswith(b"done\r\n"):
                break
    finally:
        os.close(master)
        os.close(slave)
    text = drawn.decode()
    assert "\x1b" not in text and "\n" not in text[:-2]
    lines = text[:-len("done\r\n")].split("\r")
    assert lines[0] == "" and lines[-1] == ""
    shown = [line.rstrip() for line in lines if line.strip()]
    assert shown[0] == "packing storage '1': 0.0 s"
    pattern = (r"packing storage '1': (\d+ bytes of 1000 bytes "
               r"\((\d+) %\), )?\d+\.\d s")
    shares = []
    for line in shown:
        match = re.fullmatch(pattern, line)
        assert match, line
        if match.group(2):
            shares.append(int(match.group(2)))
    assert 50 in shares and 99 in shares and max(shares) == 99, shown
    # The end blanks what was drawn last.
    assert lines[-2].strip() == ""
    assert len(lines[-2]) >= max(len(line) for line in lines)


@pytest.mark.parametrize("version, text", [
    (b"Z4", "Z4 (a ZEO 4 client, e.g. Plone 5.0 or 5.1)"),
    (b"Z3101", "Z3101 (a ZEO 3 client, e.g. Plone 4)"),
    (b"\xff\xfe", "\\xff\\xfe"),
])
def test_old_client_text(version, text):
    assert acceptor.client_text(version) == text


def test_warnings_once_per_host_and_interval(caplog, monkeypatch):
    """At once, then at most once an interval per (host, reason), with
    the number of repeats in between; other hosts are their own."""
    clock = [1000.0]
    monkeypatch.setattr(acceptor.time, "monotonic", lambda: clock[0])
    warnings = acceptor.Warnings("client {peer} asked for {reason}")
    with caplog.at_level(logging.WARNING, logger=acceptor.logger.name):
        for port in range(5):
            warnings.report(f"10.0.0.5:{port}", "Z4")
        warnings.report("10.0.0.6:1", "Z4")
        clock[0] += 61
        warnings.report("10.0.0.5:9", "Z4")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "client 10.0.0.5:0 asked for Z4",
        "client 10.0.0.6:1 asked for Z4",
        "client 10.0.0.5:9 asked for Z4 (4 more from this host since the "
        "last report)",
    ]


def test_encoding_argument():
    options, status = convert.parse_arguments("")
    assert (options.encoding, options.fallbacks) == ("utf-8", ["latin-1"])
    options, _ = convert.parse_arguments(
        "--encoding cp1252 --encoding-fallback latin-1 "
        "--encoding-fallback ascii")
    assert (options.encoding, options.fallbacks) == (
        "cp1252", ["latin-1", "ascii"])
    options, _ = convert.parse_arguments("--no-fallback")
    assert options.fallbacks == []
    assert convert.parse_arguments("--encoding klingon") == (None, 2)


def readme_option_reference():
    """{option name: its text} of README.rst's option reference (the
    definition lists of its Options section)."""
    import re
    text = (ROOT / "README.rst").read_text()
    section = text.split("\nOptions\n-------\n", 1)[1].split(
        "\nWhat changed from 1.x\n", 1)[0]
    entries, names = {}, None
    for line in section.splitlines():
        if re.fullmatch(r"[a-z0-9-]+(, [a-z0-9-]+)*", line):
            names = line.split(", ")
            for name in names:
                entries[name] = ""
        elif names and (line.startswith(" ") or not line):
            for name in names:
                entries[name] += " " + line.strip()
        else:
            names = None
    return entries


def test_the_readme_documents_every_option_and_its_default():
    from plone.recipe.zope2zeoserver.options import OPTIONS
    entries = readme_option_reference()
    assert sorted(entries) == sorted(option.name for option in OPTIONS)
    for option in OPTIONS:
        if option.default is not None:
            default = option.default.replace("{var}", "var").replace(
                "{part}", "<part>")
            text = " ".join(entries[option.name].split())
            assert f"``{default}``" in text, (option.name, default)


def test_resolved_conf_is_stale_once_a_source_is_newer(tmp_path):
    import os
    from plone.recipe.zope2zeoserver import resolved
    source = tmp_path / "zeo.conf"
    source.write_text("")
    path = tmp_path / "resolved.conf"
    resolved.write(str(path), [
        ("source", f"$(ZOPE2ZEOSERVER_BUILDOUT)/{source.name}"),
        ("pid-file", "$(ZOPE2ZEOSERVER_BUILDOUT)/var/zeo.pid"),
        ("address", "127.0.0.1 8100"),
        ("storage", "1"), ("storage", "other"),
        ("file", "1 /srv/a dir/Data.fs"),
        ("role", '1 {"role": "primary", "replicate_to": "h:1"}'),
        ("start-timeout", "60"), ("stop-timeout", "20"),
        ("pack-days", "0.5")])
    found, fresh = resolved.read(str(path), str(tmp_path))
    assert fresh
    conf = resolved.Resolved(found)
    assert conf.one("pid-file") == f"{tmp_path}/var/zeo.pid"
    assert conf.address == ("127.0.0.1", 8100)
    assert conf.storages == ["1", "other"]
    assert conf.files == {"1": "/srv/a dir/Data.fs"}
    assert conf.roles == {"1": {"role": "primary", "replicate_to": "h:1"}}
    assert conf.pack_days == 0.5 and conf.tls is None
    assert conf.stop_limit == 65
    later = os.stat(path).st_mtime_ns + 10**9
    os.utime(source, ns=(later, later))
    assert resolved.read(str(path), str(tmp_path)) == (found, False)
    assert resolved.read(str(tmp_path / "missing"), str(tmp_path)) == (
        {}, False)
    with pytest.raises(resolved.Unusable, match="rerun bin/buildout"):
        resolved.load(str(tmp_path / "etc" / "zeo.conf"), str(tmp_path))


@pytest.mark.parametrize("when", [
    (1900, 1, 1, 0, 0, 0.0), (2015, 6, 1, 12, 0, 1.5),
    (2026, 12, 1, 19, 59, 59.999), (2024, 2, 29, 23, 30, 7.25)])
def test_tid_time_is_zodbs(when):
    """figures.tid_time agrees with ZODB's TimeStamp, without importing
    ZODB (check runs every minute)."""
    from persistent.timestamp import TimeStamp
    from plone.recipe.zope2zeoserver import figures
    tid = TimeStamp(*when).raw()
    assert figures.tid_time(tid) == pytest.approx(
        TimeStamp(tid).timeTime(), abs=1e-6)


@pytest.mark.parametrize("lines, reason", [
    (["starting\n", "Error: storage 1 is locked by pid 7\n"],
     "storage 1 is locked by pid 7"),
    (["Traceback (most recent call last):\n", '  File "x", line 1\n',
      "ZODB.FileStorage.FileStorageFormatError: /srv/Data.fs\n"],
     "ZODB.FileStorage.FileStorageFormatError: /srv/Data.fs"),
    (["all is well\n"], None),
])
def test_failure_reason_is_the_last_error_line(lines, reason):
    from plone.recipe.zope2zeoserver import logs
    assert logs.failure_reason(lines) == reason


def test_new_lines_since_a_mark(tmp_path):
    from plone.recipe.zope2zeoserver import files
    from plone.recipe.zope2zeoserver import logs
    path = tmp_path / "zeo.log"
    path.write_text("".join(f"old {i}\n" for i in range(20)))
    mark = files.file_size(str(path))
    with path.open("a") as f:
        f.write("new 1\nnew 2\n")
    assert logs.new_lines(str(path), mark) == ["new 1\n", "new 2\n"]
    # Without a mark, or after the file was replaced: its last 10 lines.
    assert logs.new_lines(str(path), None)[-1] == "new 2\n"
    assert len(logs.new_lines(str(path), 10**6)) == 10
    assert logs.new_lines(str(tmp_path / "missing"), 0) == []


BUILD_TIME = {"recipe", "options", "zeoconf", "eggs", "scripts", "tls",
              "systemd"}


def imported_modules(path):
    """The modules PATH imports, at the top or inside functions."""
    import ast
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}"
                         for alias in node.names)
    return found


def test_run_time_modules_never_import_build_time_ones():
    """The generated scripts work where buildout is gone, and pay for no
    build-time module (README, Development)."""
    package = ROOT / "src" / "plone" / "recipe" / "zope2zeoserver"
    prefix = "plone.recipe.zope2zeoserver."
    build_time = {prefix + name for name in BUILD_TIME}
    run_time = [path for path in package.glob("*.py")
                if path.stem not in BUILD_TIME]
    assert len(run_time) > 15
    for path in run_time:
        wrong = {name for name in imported_modules(path)
                 if name in build_time or name.startswith("zc.buildout")}
        assert not wrong, (path.name, wrong)


def status(start="Thu Nov 26 17:20:56 2026", **counters):
    """A storage's `server_status`, as ZEO's `ruok` answers it."""
    values = {"start": start, "connections": 3, "verifying_clients": 0,
              "active_txns": 1, "waiting": 2, "lock_time": None,
              "commits": 0, "aborts": 0, "loads": 0, "stores": 0,
              "conflicts": 0, "conflicts_resolved": 0,
              "last-transaction": "0" * 16}
    values.update(counters)
    return values


def test_rates_per_second_between_two_answers():
    from plone.recipe.zope2zeoserver import stats
    before = {"1": status(commits=10, loads=100, stores=20)}
    after = {"1": status(commits=15, loads=400, stores=30),
             "2": status(commits=7)}
    assert stats.rates(before, after, 2.0) == {
        "1": {"commits": 2.5, "loads": 150.0, "stores": 5.0},
        # New since the last answer: nothing to compare.
        "2": {"commits": None, "loads": None, "stores": None}}
    # The first screen has no previous answer.
    assert stats.rates({}, before, 0) == {
        "1": {"commits": None, "loads": None, "stores": None}}
    # The server restarted in between: its counters began again.
    restarted = {"1": status(start="Thu Nov 26 17:25:00 2026", commits=1,
                             loads=500, stores=1)}
    assert stats.rates(before, restarted, 2.0)["1"]["commits"] is None
    back = {"1": status(commits=3, loads=100, stores=20)}
    assert stats.rates(before, back, 2.0)["1"] == {
        "commits": None, "loads": 0.0, "stores": 0.0}


def test_watch_screen():
    from plone.recipe.zope2zeoserver import stats
    now = 1795713661.5  # 4.2 s after the transaction below
    statuses = {
        "1": status(commits=15, lock_time=now - 12.34,
                    **{"last-transaction": "040d4770f48f5922"}),
        "catalog": status(connections=0, waiting=0, active_txns=0)}
    per_second = {"1": {"commits": 2.5, "loads": 1234.56, "stores": 5.0},
                  "catalog": dict.fromkeys(stats.RATE_COUNTERS)}
    lines = stats.watch_lines("127.0.0.1:8100", statuses, per_second, {},
                              0.5, now)
    assert lines[0].startswith("ZEO server at 127.0.0.1:8100 - ")
    assert lines[0].endswith(", every 0.5 s (Ctrl-C ends)")
    assert lines[1:] == [
        "",
        "storage  commits/s  loads/s  stores/s  clients  waiting    lock"
        "  last txn",
        "1              2.5   1234.6       5.0        3        2  12.3 s"
        "   4 s ago",
        "catalog          -        -         -        0        0    free"
        "      none",
    ]
    role = {"role": "secondary", "replicate_from": "10.0.0.5:8101"}
    lines = stats.watch_lines("x", {"1": status()}, {"1": per_second[
        "catalog"]}, {"1": role}, 2, now)
    assert lines[1] == ("storage 1: secondary (read-only) of the primary "
                        "at 10.0.0.5:8101")


@pytest.mark.parametrize("seconds, text", [
    (0.4, "0 s"), (119, "119 s"), (120, "2 min"), (7199, "119 min"),
    (7200, "2 h"), (3 * 86400, "3 d")])
def test_duration_text(seconds, text):
    from plone.recipe.zope2zeoserver import stats
    assert stats.duration_text(seconds) == text


@pytest.mark.parametrize("arg, watch", [
    ("", None), ("--watch", 2), ("--watch 0.2", 0.2),
    ("--watch --timeout 1", 2)])
def test_stats_watch_argument(arg, watch):
    from plone.recipe.zope2zeoserver import arguments
    from plone.recipe.zope2zeoserver import stats
    options, status = arguments.parse_command(stats.stats_parser(), arg)
    assert status is None and options.watch == watch


@pytest.mark.parametrize("arg, error", [
    ("--watch 0", "'0' is less than 0.1 seconds"),
    ("--watch soon", "argument --watch: 'soon' is not a number"),
    ("--watch --json", "not allowed with argument"),
])
def test_stats_watch_mistakes_are_one_line(capsys, arg, error):
    from plone.recipe.zope2zeoserver import arguments
    from plone.recipe.zope2zeoserver import stats
    assert arguments.parse_command(stats.stats_parser(), arg) == (None, 2)
    [line] = capsys.readouterr().err.splitlines()
    assert error in line, line


def test_progress_line_is_cut_to_the_terminal_width():
    import fcntl
    import struct
    import termios
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 30, 0, 0))
    try:
        with open(slave, "w", closefd=False) as stream:
            with progress.Ticker(stream, lambda: ("x" * 50, None, None), 1):
                pass
        drawn = os.read(master, 65536).decode()
    finally:
        os.close(master)
        os.close(slave)
    assert drawn.split("\r")[1] == "x" * 29


def test_blob_loss_when_zodb_would_create_the_file(tmp_path):
    from plone.recipe.zope2zeoserver.files import blob_loss
    data_fs, blobs = tmp_path / "Data.fs", tmp_path / "blobs"
    (blobs / "0x00" / "0x01").mkdir(parents=True)
    assert blob_loss(str(data_fs), str(blobs)) is None  # no blob yet
    assert blob_loss(str(data_fs), None) is None
    (blobs / "0x00" / "0x01" / "0x03.blob").write_bytes(b"data")
    assert "holds blobs but" in blob_loss(str(data_fs), str(blobs))
    data_fs.write_bytes(b"FS30")
    assert blob_loss(str(data_fs), str(blobs)) is None
    assert "create true" in blob_loss(str(data_fs), str(blobs), create=True)


@pytest.mark.parametrize("name", ["README.rst", "CHANGES.rst"])
def test_the_manual_renders_without_a_warning(name):
    """The package index renders them with docutils: a literal block
    glued to the next paragraph shows as broken text there."""
    import io
    import docutils.core
    warnings = io.StringIO()
    docutils.core.publish_doctree(
        (ROOT / name).read_text(),
        settings_overrides={"warning_stream": warnings, "report_level": 2})
    assert warnings.getvalue() == ""
