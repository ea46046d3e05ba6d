"""bin/zeopack and bin/repozo against real servers."""

import configparser
import re
import shutil
import signal
import subprocess
import textwrap
import time

import pytest
import transaction
import ZODB.blob

from helpers import (client, commit, free_port, imports, output, read,
                      start, wait_for)


def address(buildout):
    return ("127.0.0.1", buildout.port)



def commit_revisions(addr, key, count):
    """COUNT transactions, each replacing root[KEY]: garbage for a pack."""
    with client(addr) as db:
        for i in range(count):
            with db.transaction() as conn:
                conn.root()[key] = f"{i:06d}" + "garbage " * 500
    return f"{count - 1:06d}"


def one_line_error(result):
    """A failure reported in one line on stderr, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in output(result)
    return lines[0]


def test_pack_and_backup(buildout):
    buildout.install("pack-days = 3")
    start(buildout)
    addr = address(buildout)
    last = commit_revisions(addr, "doc", 60)
    data_fs = buildout.path("var", "filestorage", "Data.fs")
    size = data_fs.stat().st_size

    # The part's pack-days is the default: everything is younger than
    # 3 days, so a pack without -d keeps every revision.  It loads no
    # module of the server's (the monitor would bring importlib.metadata).
    result, errors, modules = imports(buildout, "zeopack", timeout=30)
    assert result.returncode == 0, result.stdout + errors
    assert data_fs.stat().st_size >= size
    assert "plone.recipe.zope2zeoserver.pack" in modules
    assert "plone.recipe.zope2zeoserver.monitor" not in modules

    result = buildout.script("zeopack", "-d", "0", timeout=30)
    assert result.returncode == 0, output(result)
    assert "Traceback" not in output(result)
    packed = data_fs.stat().st_size
    assert packed < size / 5, (size, packed)
    assert read(addr, "doc").startswith(last)

    # A storage the server does not have: one line naming it, as soon as
    # the server refuses (not after the 10 s --timeout).
    started = time.monotonic()
    result = buildout.script("zeopack", "-d", "0", "-S", "nosuchstorage",
                             timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, output(result)
    assert elapsed < 5, elapsed
    line = one_line_error(result)
    assert "nosuchstorage" in line and "refused" in line, line
    assert buildout.ctl("status").returncode == 0

    # repozo backs up the live storage (making the repository the first
    # time, as 1.x users expect); the restore is identical.
    commit(addr, answer=42)
    backups = buildout.path("var", "backups")
    assert not backups.exists()
    # Nothing of zeopack's is loaded (its TLS client, argparse, sockets):
    # cron pays each import.
    result, errors, modules = imports(
        buildout, "repozo", "-B", "-r", "var/backups",
        "-f", "var/filestorage/Data.fs", timeout=60)
    assert result.returncode == 0, result.stdout + errors
    assert list(backups.glob("*.fs")), list(backups.iterdir())
    assert "plone.recipe.zope2zeoserver.backup" in modules
    assert not modules & {"plone.recipe.zope2zeoserver.pack",
                          "plone.recipe.zope2zeoserver.tlsclient"}
    result = buildout.ctl("stop")
    assert result.returncode == 0, output(result)
    result = buildout.script("repozo", "-R", "-r", "var/backups",
                             "-o", "restored.fs", timeout=60)
    assert result.returncode == 0, output(result)
    assert buildout.path("restored.fs").read_bytes() == data_fs.read_bytes()


def test_pack_without_server_and_options(buildout):
    buildout.install("pack-days = 3")

    started = time.monotonic()
    result = buildout.script("zeopack", "-d", "0", timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, output(result)
    assert elapsed < 10, elapsed
    line = one_line_error(result)
    assert f"127.0.0.1:{buildout.port}" in line

    result = buildout.script("zeopack", "-h")
    assert result.returncode == 0, output(result)
    assert "usage" in result.stdout.lower()
    assert "-d" in result.stdout and "-S" in result.stdout
    # The help shows the part's pack-days as the default.
    assert re.search(r"default: 3(\.0)?\b", result.stdout), result.stdout

    result = buildout.script("zeopack", "-d", "yesterday")
    assert result.returncode != 0
    assert "Traceback" not in output(result)
    errors = [line for line in result.stderr.splitlines()
              if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert "yesterday" in errors[0]


def blob_files(directory):
    return sorted(p for p in directory.rglob("*.blob"))


def test_pack_removes_old_blobs(buildout, tmp_path):
    buildout.install("blob-storage = var/blobstorage")
    start(buildout)
    addr = address(buildout)
    blob_dir = buildout.path("var", "blobstorage")
    cache = tmp_path / "blob-cache"

    with client(addr, blob_dir=str(cache)) as db:
        with db.transaction() as conn:
            conn.root()["file"] = ZODB.blob.Blob(b"first version")
        with db.transaction() as conn:
            with conn.root()["file"].open("w") as f:
                f.write(b"second version")
    files = blob_files(blob_dir)
    assert len(files) == 2, files
    old = [f for f in files if f.read_bytes() == b"first version"]
    assert len(old) == 1

    result = buildout.script("zeopack", "-d", "0", timeout=30)
    assert result.returncode == 0, output(result)
    assert not old[0].exists()
    files = blob_files(blob_dir)
    assert [f.read_bytes() for f in files] == [b"second version"]

    # A second pack (as a nightly job would run) works too.
    result = buildout.script("zeopack", "-d", "0", timeout=30)
    assert result.returncode == 0, output(result)

    with client(addr, blob_dir=str(tmp_path / "other-cache")) as db:
        conn = db.open()
        try:
            with conn.root()["file"].open("r") as f:
                assert f.read() == b"second version"
        finally:
            conn.close()
            transaction.abort()


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_tools_follow_the_zeo_conf_file(buildout, kind):
    """With zeo-conf, the user's file decides the address and storages:
    bin/zeopack packs them, not the options' defaults (8100, '1')."""
    if kind == "tcp":
        port = free_port()
        while port == buildout.port:
            port = free_port()
        addr, spelled = ("127.0.0.1", port), f"127.0.0.1:{port}"
    else:
        addr = spelled = str(buildout.path("var", "run", "zeo.sock"))
    d = buildout.dir
    buildout.path("my-zeo.conf").write_text(textwrap.dedent(f"""\
        <zeo>
          address {spelled}
          pid-filename {d}/var/run/zeo.pid
        </zeo>
        <filestorage main>
          path {d}/var/db/Main.fs
        </filestorage>
        <filestorage other>
          path {d}/var/db/Other.fs
          blob-dir {d}/var/db/other-blobs
        </filestorage>
        """))
    buildout.install("zeo-conf = my-zeo.conf")
    # The part made the file's directories, not the options' defaults.
    assert buildout.path("var", "db").is_dir()
    assert buildout.path("var", "run").is_dir()
    assert buildout.path("var", "db", "other-blobs").is_dir()
    assert not buildout.path("var", "filestorage").exists()
    parser = configparser.RawConfigParser()
    parser.read(buildout.path(".installed.cfg"))
    assert parser["zeo"]["file-storage"] == f"{d}/var/db/Main.fs"
    assert parser["zeo"]["pid-file"] == f"{d}/var/run/zeo.pid"

    start(buildout)
    with client(addr, storage="main") as db:
        for i in range(30):
            with db.transaction() as conn:
                conn.root()["doc"] = f"{i:06d}" + "garbage " * 500
    with client(addr, storage="other") as db:
        with db.transaction() as conn:
            conn.root()["answer"] = 42
    main_fs = buildout.path("var", "db", "Main.fs")
    size = main_fs.stat().st_size

    result = buildout.script("zeopack", "-d", "0", timeout=60)
    assert result.returncode == 0, output(result)
    assert result.stdout.startswith(
        f"packed storage 'main' at {spelled}, keeping 0 day(s) of history: ")
    assert main_fs.stat().st_size < size / 5
    # -S picks another storage of the file.
    result = buildout.script("zeopack", "-d", "0", "-S", "other", timeout=60)
    assert result.returncode == 0, output(result)
    assert f"packed storage 'other' at {spelled}" in result.stdout
    with client(addr, storage="other") as db:
        with db.transaction() as conn:
            assert conn.root()["answer"] == 42

    # The control script reads the same file.
    result = buildout.ctl("stats", timeout=60)
    assert result.returncode == 0, output(result)
    assert result.stdout.startswith(f"ZEO server at {spelled}\n")
    assert "Storage: main\n" in result.stdout
    assert "Storage: other\n" in result.stdout
    assert buildout.ctl("status").returncode == 0
    # The server wrote nothing into the part's directory for client caches.
    assert list(buildout.path("parts", "zeo", "var").iterdir()) == []
    # bin/repozo -B without -f backs up the file's first storage.
    backups = buildout.path("var", "backups")
    result = buildout.script("repozo", "-B", "-r", str(backups), timeout=60)
    assert result.returncode == 0, output(result)
    [full] = backups.glob("*.fs")
    assert full.stat().st_size == main_fs.stat().st_size

    if kind != "tcp":
        return
    # An edited zeo-conf file counts from the next restart, and the tools
    # follow it before bin/buildout runs again.
    time.sleep(0.01)  # a newer modification time
    moved = free_port()
    while moved in (port, buildout.port):
        moved = free_port()
    conf = buildout.path("my-zeo.conf")
    conf.write_text(conf.read_text().replace(spelled, f"127.0.0.1:{moved}"))
    assert buildout.ctl("restart", timeout=60).returncode == 0
    result = buildout.script("zeopack", timeout=60)
    assert result.returncode == 0, output(result)
    assert f"packed storage 'main' at 127.0.0.1:{moved}," in result.stdout
    assert result.stderr == (
        "zeopack: note: zeo.conf (or the zeo-conf file) changed since "
        "bin/buildout ran; this uses the new settings, a server started "
        "before the change still runs the old ones (restart it, and rerun "
        "bin/buildout)\n")
    result = buildout.ctl("stats", timeout=60)
    assert result.stdout.startswith(f"ZEO server at 127.0.0.1:{moved}\n")
    # Without resolved.conf the tools say what to do.
    buildout.path("parts", "zeo", "etc", "resolved.conf").unlink()
    result = buildout.script("zeopack", timeout=60)
    assert result.returncode == 1
    assert one_line_error(result).endswith(
        "resolved.conf is missing or was written by another version of "
        "the recipe; rerun bin/buildout")


# -- progress on a terminal, and what the work did -----------------------

needs_script = pytest.mark.skipif(not shutil.which("script"),
                                  reason="needs script(1) for a terminal")
SIZE = r"\d+(\.\d)? (bytes|KB|MB|GB)"
ELAPSED = r"(\d+\.\d s|\d+ min \d\d s)"
# What a progress line may say, after its label.
PROGRESS = rf"({SIZE}( of {SIZE} \((?P<share>\d+) %\))?, )?{ELAPSED}"


def on_terminal(buildout, command, timeout=60):
    """Run the shell COMMAND in the buildout on a pseudo-terminal
    (script(1)): (its exit status, what it wrote, as text: newlines
    are \r\n there)."""
    result = subprocess.run(
        ["script", "-qfec", command, "/dev/null"], cwd=buildout.dir,
        capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return result.returncode, result.stdout.decode()


def progress_lines(text, label):
    """The progress lines (redrawn with \r) in TEXT that start with LABEL
    (a pattern), each checked; their percentages."""
    shares = []
    for line in re.split(r"\r(?!\n)|\r\n", text):
        if re.match(label, line):
            match = re.fullmatch(rf"({label}): {PROGRESS}", line.rstrip())
            assert match, line
            if match.group("share"):
                shares.append(int(match.group("share")))
    assert all(share < 100 for share in shares), shares
    return shares


def last_line(text):
    """The line TEXT ends with, after what was drawn over and blanked."""
    return re.split(r"\r\n|\r", text.rstrip("\r\n"))[-1]


def plain(result):
    """Output of a run without a terminal: lines, nothing redrawn."""
    everything = output(result)
    assert "\r" not in everything and "\x1b" not in everything, everything
    return result.stdout


def many_objects(path, blob_dir=None, thousands=30):
    """A FileStorage at PATH, written before the server starts, where a
    pack has THOUSANDS thousand objects to walk and copy, and as many
    old revisions (and, with BLOB_DIR, one blob) to drop."""
    import ZODB
    from persistent.mapping import PersistentMapping
    from ZODB.FileStorage import FileStorage

    db = ZODB.DB(FileStorage(str(path), blob_dir=blob_dir and str(blob_dir)))
    try:
        for revision in range(2):
            with db.transaction() as conn:
                root = conn.root()
                for i in range(thousands):
                    root[i] = PersistentMapping(
                        {j: PersistentMapping(v=revision)
                         for j in range(1000)})
                if blob_dir and not revision:
                    root["file"] = ZODB.blob.Blob(b"first version")
                elif blob_dir:
                    with root["file"].open("w") as f:
                        f.write(b"second version")
    finally:
        db.close()


@needs_script
def test_zeopack_shows_progress_on_a_terminal_and_says_what_it_did(
        buildout):
    buildout.install("blob-storage = var/blobstorage")
    data_fs = buildout.path("var", "filestorage", "Data.fs")
    many_objects(data_fs, buildout.path("var", "blobstorage"))
    start(buildout)
    size = data_fs.stat().st_size
    assert len(blob_files(buildout.path("var", "blobstorage"))) == 2
    packed = (rf"packed storage '1' at 127\.0\.0\.1:{buildout.port}, "
              r"keeping 0 day\(s\) of history: ")

    status, text = on_terminal(buildout, "bin/zeopack -d 0")
    assert status == 0, text
    print(text)  # the test's -s shows what a user sees
    # While the server packs, a line on stderr redrawn in place: time,
    # and the packed copy's bytes against the file's size (below 100 %).
    assert "\rpacking storage '1': 0.0 s" in text, text
    progress_lines(text, "packing storage '1'")
    assert "\x1b" not in text
    # At the end, on stdout, what it did: sizes, blobs, time.
    summary = last_line(text)
    match = re.fullmatch(
        rf"{packed}({SIZE}) -> ({SIZE}), 1 of 2 blob\(s\) removed, "
        rf"{ELAPSED}", summary)
    assert match, summary
    assert data_fs.stat().st_size < size
    assert match.group(1) == f"{size / (1 << 20):.1f} MB"

    # The line goes to stderr, and only where stderr is a terminal.
    status, text = on_terminal(buildout, "bin/zeopack -d 0 2>/dev/null")
    assert status == 0, text
    assert "\r" not in text.replace("\r\n", ""), text
    assert re.fullmatch(rf"{packed}.*, 0 of 1 blob\(s\) removed, "
                        rf"{ELAPSED}", last_line(text)), text

    # Without a terminal (cron, CI, a service): the same last line, no
    # carriage return or escape sequence anywhere.
    commit_revisions(address(buildout), "doc", 5)
    result = buildout.script("zeopack", "-d", "0", timeout=60)
    assert result.returncode == 0, output(result)
    assert result.stderr == ""
    assert re.fullmatch(rf"{packed}({SIZE}) -> ({SIZE}), "
                        rf"0 of 1 blob\(s\) removed, {ELAPSED}\n",
                        plain(result)), result.stdout


def test_zeopack_interrupted_says_the_server_goes_on(buildout):
    """Ctrl-C stops only the waiting: the server finishes the pack."""
    buildout.install()
    data_fs = buildout.path("var", "filestorage", "Data.fs")
    many_objects(data_fs)
    start(buildout)
    size = data_fs.stat().st_size
    packing = data_fs.with_name("Data.fs.pack")
    process = subprocess.Popen(
        [str(buildout.path("bin", "zeopack")), "-d", "0"], cwd=buildout.dir,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: packing.exists() or process.poll() is not None,
                        timeout=30)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stdout + stderr
    assert stdout == ""
    assert stderr == (
        "zeopack: interrupted; the server goes on packing storage '1' "
        "until it is done (its log says when)\n")
    assert wait_for(lambda: data_fs.stat().st_size < size, timeout=60)


def next_second():
    """Wait for the next second: repozo names a backup after the second
    it was made in, and refuses to make two in one."""
    time.sleep(1.01 - time.time() % 1)


@needs_script
def test_repozo_shows_progress_on_a_terminal_and_says_what_it_wrote(
        server):
    addr = address(server)
    commit(addr, data="x" * (4 << 20))
    data_fs = server.path("var", "filestorage", "Data.fs")
    backups = server.path("var", "backups")
    stamp = r"var/backups/\d{4}(-\d\d){5}"

    def written(pattern):
        [path] = [p for p in backups.iterdir() if re.search(pattern, p.name)]
        return path

    status, text = on_terminal(server, "bin/repozo -B -r var/backups")
    assert status == 0, text
    print(text)
    assert "\rbacking up Data.fs: 0.0 s" in text, text
    progress_lines(text, r"backing up Data\.fs|full backup of Data\.fs")
    assert "\x1b" not in text
    full = written(r"\.fs$")
    assert re.fullmatch(
        rf"full backup of {data_fs}: {stamp}\.fs, "
        rf"{full.stat().st_size / (1 << 20):.1f} MB, {ELAPSED}",
        last_line(text)), text

    # An incremental: what was committed since.
    commit(addr, answer=42)
    next_second()
    status, text = on_terminal(server, "bin/repozo -B -r var/backups")
    assert status == 0, text
    print(text)
    progress_lines(text, r"backing up Data\.fs \(comparing with the last "
                         r"backup\)|incremental backup of Data\.fs")
    assert re.fullmatch(
        rf"incremental backup of {data_fs}: {stamp}\.deltafs, {SIZE}, "
        rf"{ELAPSED}", last_line(text)), text

    # Without a terminal: the last line only.
    commit(addr, answer=43)
    next_second()
    result = server.script("repozo", "-B", "-r", "var/backups", timeout=60)
    assert result.returncode == 0, output(result)
    assert re.fullmatch(
        rf"incremental backup of {data_fs}: {stamp}\.deltafs, {SIZE}, "
        rf"{ELAPSED}\n", plain(result)), result.stdout
    assert len(list(backups.glob("*.deltafs"))) == 2

    # Nothing changed: repozo writes nothing, and says so.
    result = server.script("repozo", "-B", "-r", "var/backups", timeout=60)
    assert result.returncode == 0, output(result)
    assert plain(result) == (
        f"no backup of {data_fs} written: it has not changed since the "
        f"last backup, {result.stdout.rpartition(', ')[2]}")
    assert re.search(rf"{ELAPSED}\n$", result.stdout)
    assert len(list(backups.glob("*.deltafs"))) == 2

    # What else goes to stderr meanwhile (repozo -v, warnings) takes
    # the progress line's place, whole, and the line comes back below.
    status, text = on_terminal(server, "bin/repozo -B -v -r var/backups")
    assert status == 0, text
    print(text)
    shown = [line.rpartition("\r")[2] for line in text.split("\r\n")]
    assert "No changes, nothing to do" in shown, shown
    assert shown[-2].startswith(f"no backup of {data_fs} written"), shown
