"""A database written on Python 2: warned about, refused, converted
(bin/<part> convert-py3), then served, packed and backed up.

The databases in tests/data/py2 were written by Python 2.7 with ZODB 5.6
(tests/data/make_py2_data.sh; EXPECTED.txt says what they hold)."""

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from helpers import (ROOT, client, free_port, mounted_tmpfs,
                      needs_other_users, output, start, system_user,
                      wait_for)

PY2_DATA = ROOT / "tests" / "data" / "py2"

# A second storage, as 1.x buildouts declared one.
OTHER_STORAGE = """\
blob-storage = var/blobstorage
zeo-conf-additional =
    <filestorage other>
      path ${buildout:directory}/var/filestorage/Other.fs
    </filestorage>
"""

# The application whose class zeotestapp.Document the database holds,
# with the zodbupdate rule its package registers (as Plone's packages
# register theirs): `title` is text, in whatever encoding Python 2 had.
APPLICATION = '''\
import persistent


class Document(persistent.Persistent):
    pass


decodes = {"zeotestapp Document title": "utf-8"}
'''


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def copy_python2_data(buildout):
    """The Python 2 files where the part's options put them."""
    filestorage = buildout.path("var", "filestorage")
    filestorage.mkdir(parents=True, exist_ok=True)
    for name in ("Data.fs", "Data.fs.index", "Other.fs", "Other.fs.index"):
        shutil.copy2(PY2_DATA / name, filestorage / name)
    shutil.copytree(PY2_DATA / "blobstorage", buildout.path("var",
                                                           "blobstorage"))
    return filestorage / "Data.fs", filestorage / "Other.fs"


def blob_files_in(buildout):
    blobs = buildout.path("var", "blobstorage")
    return sorted(p.relative_to(blobs) for p in blobs.rglob("*")
                  if p.is_file())


def application_egg(buildout):
    egg = buildout.path("src", "zeotestapp")
    egg.mkdir(parents=True)
    (egg / "zeotestapp.py").write_text(APPLICATION)
    (egg / "setup.py").write_text(textwrap.dedent("""\
        from setuptools import setup
        setup(name="zeotestapp", version="1.0", py_modules=["zeotestapp"],
              entry_points={"zodbupdate.decode":
                            ["decodes = zeotestapp:decodes"]})
        """))
    return egg


def no_traceback(*texts):
    for text in texts:
        assert "Traceback" not in text, text


def log_text(buildout):
    path = buildout.path("var", "log", "zeo.log")
    return path.read_text() if path.exists() else ""


def test_python2_database_from_warning_to_backup(buildout, tmp_path):
    data, other = copy_python2_data(buildout)
    originals = {path: digest(path) for path in (data, other)}
    inodes = {path: os.stat(path).st_ino for path in (data, other)}
    blob_files = blob_files_in(buildout)

    # bin/buildout warns, naming each file and the way out, and completes.
    result = buildout.install(OTHER_STORAGE)
    text = output(result)
    for path in (data, other):
        assert f"[zeo] {path} was written by Python 2" in text, text
    assert "bin/zeo convert-py3" in text
    assert buildout.path("bin", "zeo").exists()
    # And on every rerun, which changes nothing.
    text = output(buildout.run())
    for path in (data, other):
        assert f"[zeo] {path} was written by Python 2" in text, text

    # start and fg refuse, in their first line, without a traceback.
    # (fg exits as the server would: 2, which systemd does not restart.)
    for command, status in (("start", 1), ("fg", 2)):
        result = buildout.ctl(command)
        assert result.returncode == status, output(result)
        first = result.stderr.splitlines()[0]
        assert first.startswith(f"{data} was written by Python 2"), first
        assert "bin/zeo convert-py3" in first
        assert "do not restore a backup" in first
        no_traceback(output(result))
    # So does the server run by hand (systemd, a process manager).
    result = buildout.script("parts/zeo/bin/runzeo")
    assert result.returncode == 2, output(result)
    assert f"{data} was written by Python 2" in result.stderr
    no_traceback(output(result), log_text(buildout))
    assert {path: digest(path) for path in (data, other)} == originals

    # convert-py3 converts both storages, keeping the originals.
    result = buildout.ctl("convert-py3", timeout=300)
    text = output(result)
    assert result.returncode == 0, text
    for path in (data, other):
        assert f"the original is kept as {path}.py2" in text
        assert digest(f"{path}.py2") == originals[path]
        # The original itself, under a second name: not a copy.
        assert os.stat(f"{path}.py2").st_ino == inodes[path]
        assert path.read_bytes()[:4] == b"FS30"
        # The Python 2 index went with its file.
        assert digest(f"{path}.py2.index") == digest(
            PY2_DATA / f"{path.name}.index")
    assert "storage 1: converting" in text and "storage other:" in text
    assert "fstest finds no error" in text
    assert f"the blobs in {buildout.path('var', 'blobstorage')} need no " \
           "conversion" in text
    assert "ZEO 5 or newer" in text
    # The application's class is not on this part's path: its rules
    # could not apply, and the operator is told so.
    assert "cannot be imported here (zeotestapp Document)" in text
    assert not list(buildout.path("var", "filestorage").glob("*.converting*"))
    no_traceback(text)

    # A second run says so and changes nothing.
    converted = {path: digest(path) for path in (data, other)}
    result = buildout.ctl("convert-py3")
    assert result.returncode == 0, output(result)
    assert f"{data} is in Python 3 format already; unchanged" in result.stdout
    assert "nothing to convert" in result.stdout
    assert {path: digest(path) for path in (data, other)} == converted

    # Served: every kind of value reads back as Python 3 text.
    start(buildout)
    address = ("127.0.0.1", buildout.port)
    blob_cache = str(tmp_path / "blob-cache")
    with client(address, blob_dir=blob_cache) as db:
        with db.transaction() as conn:
            root = conn.root()
            assert root["title_utf8"] == "Café Köln"
            assert root["unicode"] == "Übung ✓"
            assert root["ascii"] == "plain ascii"
            assert root["counter"] == 3
            assert len(root["tree"]) == 200
            assert root["tree"]["key-007"] == "value 7"
            assert root["itree"][99] == "item-099"
            assert root["folder"]["sub"]["title"] == "Sous-élément"
            assert list(root["folder"]["items"]) == [1, "two", "three",
                                                     "vier ä"]
            with root["blob"].open() as f:
                assert f.read() == b"blob content written by Python 2\n" * 10
            root["after"] = "written on Python 3"
    with client(address, storage="other") as db:
        with db.transaction() as conn:
            assert conn.root()["name"] == "second storage é"
            assert len(conn.root()["numbers"]) == 50
    assert [p for p in blob_files_in(buildout)
            if p.parts[0] != "tmp"] == blob_files

    # Packed and backed up like any database.
    # With the part's pack-days: no revision written by Python 2 is left
    # for the pack to read.
    for args in ((), ("-d", "0"), ("-S", "other")):
        result = buildout.script("zeopack", *args, timeout=120)
        assert result.returncode == 0, output(result)
    result = buildout.script("repozo", "-B", "-r", "var/backups", "-f",
                             str(data))
    assert result.returncode == 0, output(result)
    assert list(buildout.path("var", "backups").glob("*.fsz")) or list(
        buildout.path("var", "backups").glob("*.fs"))
    with client(address, blob_dir=blob_cache) as db:
        with db.transaction() as conn:
            assert conn.root()["after"] == "written on Python 3"
            with conn.root()["blob"].open() as f:
                assert f.read().startswith(b"blob content")
    assert buildout.ctl("stop").returncode == 0
    # The new index is Python 3's: nothing was set aside on starting.
    assert "index was written by Python 2" not in log_text(buildout)
    no_traceback(log_text(buildout))


def test_convert_applies_the_rules_of_the_parts_eggs(buildout, monkeypatch):
    """The eggs of the part bring their zodbupdate rules: the document's
    Latin-1 title becomes text through the fallback encoding."""
    data, _ = copy_python2_data(buildout)
    # This client, like the site's Zope, has the application's class.
    monkeypatch.syspath_prepend(str(application_egg(buildout)))
    buildout.install("eggs = zeotestapp",
                     buildout_options="develop = src/zeotestapp")

    result = buildout.ctl("convert-py3", timeout=300)
    text = output(result)
    assert result.returncode == 0, text
    assert "cannot be imported here" not in text
    assert "decoded with the fallback" in text

    start(buildout)
    with client(("127.0.0.1", buildout.port)) as db:
        with db.transaction() as conn:
            document = conn.root()["document"]
            assert type(document).__module__ == "zeotestapp"
            assert document.title == "Grüße"
            assert document.body == "Köln"
            # No rule covers this one: it stays the bytes it was.
            assert conn.root()["title_latin1"] == b"Gr\xfc\xdfe"


def test_a_failed_conversion_leaves_the_original_in_place(buildout):
    data, _ = copy_python2_data(buildout)
    application_egg(buildout)
    buildout.install("eggs = zeotestapp",
                     buildout_options="develop = src/zeotestapp")
    before = digest(data)

    # The title is neither UTF-8 nor ASCII: the application's rule fails.
    result = buildout.ctl("convert-py3", "--encoding-fallback", "ascii",
                          timeout=300)
    text = output(result)
    assert result.returncode == 1, text
    assert "storage 1 was not converted: zodbupdate failed: " in text
    assert f"{data} is as it was" in text
    assert "zeo-convert-py3.log" in text
    no_traceback(text)
    assert digest(data) == before
    assert not Path(f"{data}.py2").exists()
    assert not list(data.parent.glob("*.converting*"))
    assert buildout.ctl("start").returncode == 1

    # Without a fallback, the same string stops it too.
    result = buildout.ctl("convert-py3", "--no-fallback", timeout=300)
    assert result.returncode == 1, output(result)
    assert "was not converted" in result.stderr
    assert digest(data) == before

    # A mistake on the command line is one line, exit status 2.
    result = buildout.ctl("convert-py3", "--encoding", "klingon")
    assert result.returncode == 2, output(result)
    assert "unknown encoding 'klingon'" in result.stderr
    no_traceback(output(result))

    result = buildout.ctl("help", "convert-py3")
    assert result.returncode == 0, output(result)
    assert "--encoding-fallback" in result.stdout
    assert "convert-py3" in buildout.ctl("help").stdout

    # Once the cause is fixed, it converts.
    result = buildout.ctl("convert-py3", timeout=300)
    assert result.returncode == 0, output(result)
    assert digest(f"{data}.py2") == before


def test_convert_refuses_while_the_server_runs(buildout):
    """However the server runs: under zdaemon, under a process manager
    (found by its process, as zdaemon's socket knows nothing of it), or
    as a server of another buildout (an old Python 2 one) holding the
    file's lock."""
    buildout.install()
    start(buildout)
    result = buildout.ctl("convert-py3")
    assert result.returncode == 1, output(result)
    assert "the server is running (pid=" in result.stderr
    assert buildout.ctl("stop").returncode == 0

    env = dict(os.environ, SUPERVISOR_ENABLED="1")
    server = subprocess.Popen([str(buildout.path("bin", "zeo")), "console"],
                              cwd=buildout.dir, env=env,
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: buildout.path("var", "zeo.pid").exists(), 15)
        result = buildout.ctl("convert-py3")
        assert result.returncode == 1, output(result)
        assert f"the server is running (pid={server.pid})" in result.stderr
    finally:
        server.terminate()
        server.wait(15)

    # Another process holds the lock of a Python 2 file.
    data = buildout.path("var", "filestorage", "Data.fs")
    shutil.copy2(PY2_DATA / "Data.fs", data)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, zc.lockfile; lock = zc.lockfile.LockFile(sys.argv[1]);"
         " print('locked', flush=True); sys.stdin.read()", f"{data}.lock"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = buildout.ctl("convert-py3")
        assert result.returncode == 1, output(result)
        assert f"the file is in use by process {holder.pid}" in result.stderr
    finally:
        holder.communicate("", timeout=15)
    assert data.read_bytes() == (PY2_DATA / "Data.fs").read_bytes()
    assert not Path(f"{data}.py2").exists()

    # A copy from an earlier conversion is never overwritten.
    Path(f"{data}.py2").write_bytes(b"an earlier copy")
    result = buildout.ctl("convert-py3")
    assert result.returncode == 1, output(result)
    assert f"{data}.py2 exists already" in result.stderr
    assert Path(f"{data}.py2").read_bytes() == b"an earlier copy"
    assert data.read_bytes() == (PY2_DATA / "Data.fs").read_bytes()


def test_python2_index_beside_a_converted_file(buildout):
    """Converted in place by hand (zodbupdate), or copied with its old
    index: the Python 2 index is set aside and rebuilt, not logged as a
    traceback."""
    data, _ = copy_python2_data(buildout)
    buildout.install()
    assert buildout.ctl("convert-py3", timeout=300).returncode == 0
    shutil.copy2(PY2_DATA / "Data.fs.index", f"{data}.index")
    Path(f"{data}.py2.index").unlink()

    start(buildout)
    with client(("127.0.0.1", buildout.port)) as db:
        with db.transaction() as conn:
            assert conn.root()["title_utf8"] == "Café Köln"
    log = log_text(buildout)
    assert f"{data}.index was written by Python 2; moved it to " \
           f"{data}.index.py2" in log
    no_traceback(log)


@needs_other_users
def test_conversion_keeps_owner_and_mode_and_resumes(buildout):
    """Run by root for a server that runs as effective-user, the converted
    file and its index stay that user's.  A second name of the file left
    by an interrupted run (killed between keeping the original and
    putting the copy in place) does not block the next run."""
    data, _ = copy_python2_data(buildout)
    buildout.install()
    original = digest(data)
    with system_user() as user:
        for path in (data, Path(f"{data}.index")):
            os.chown(path, user.pw_uid, user.pw_gid)
            path.chmod(0o640)
        os.link(data, f"{data}.py2")

        result = buildout.ctl("convert-py3", timeout=300)
        assert result.returncode == 0, output(result)
        assert digest(f"{data}.py2") == original
        for path in (data, Path(f"{data}.index"), Path(f"{data}.lock")):
            info = path.stat()
            assert (info.st_uid, info.st_gid) == (user.pw_uid, user.pw_gid)
            assert info.st_mode & 0o777 == 0o640


def test_convert_on_a_small_or_read_only_file_system(buildout):
    """Room is checked before anything is written (a copy left by an
    interrupted run is ours to remove first); a read-only file system is
    one line, not a traceback."""
    filestorage = buildout.path("var", "filestorage")
    with mounted_tmpfs(filestorage, "size=2m"):
        data, _ = copy_python2_data(buildout)
        buildout.install()
        before = digest(data)
        subprocess.run(["mount", "-o", "remount,ro", str(filestorage)],
                       check=True)
        result = buildout.ctl("convert-py3")
        assert result.returncode == 1, output(result)
        assert "cannot take the file's lock: Read-only file system" in \
            result.stderr
        no_traceback(output(result))
        subprocess.run(["mount", "-o", "remount,rw", str(filestorage)],
                       check=True)

        # Four times the file and 1 MB are needed, less is free.
        (filestorage / "Other.fs").unlink()
        (filestorage / "filler").write_bytes(b"x" * 800 * 1024)
        (filestorage / "Data.fs.converting").write_bytes(b"y" * 600 * 1024)
        (filestorage / "more").write_bytes(b"z" * 400 * 1024)
        result = buildout.ctl("convert-py3")
        assert result.returncode == 1, output(result)
        assert "converting needs 1.0 MB free beside it" in result.stderr
        assert digest(data) == before
        assert not Path(f"{data}.py2").exists()

        # Without the filler, the leftover copy's room is enough.
        (filestorage / "more").unlink()
        result = buildout.ctl("convert-py3", timeout=300)
        assert result.returncode == 0, output(result)
        assert not (filestorage / "Data.fs.converting").exists()
        assert digest(f"{data}.py2") == before


def test_convert_follows_a_symbolic_link(buildout, tmp_path):
    """Data.fs on a bigger disk, linked from var/filestorage: the file it
    points to is converted, beside itself; the link stays a link."""
    data, _ = copy_python2_data(buildout)
    target = tmp_path / "bigdisk" / "Data.fs"
    target.parent.mkdir()
    shutil.move(data, target)
    data.symlink_to(target)
    buildout.install()
    result = buildout.ctl("convert-py3", timeout=300)
    assert result.returncode == 0, output(result)
    assert f"the original is kept as {target}.py2" in result.stdout
    assert data.is_symlink() and data.resolve() == target
    assert target.read_bytes()[:4] == b"FS30"
    assert digest(f"{target}.py2") == digest(PY2_DATA / "Data.fs")



def test_convert_refuses_a_zrs_secondary(buildout):
    """Converted on its own, a secondary's history would differ from its
    primary's: the primary is converted, the secondary copies it."""
    data, _ = copy_python2_data(buildout)
    buildout.install(f"replicate-from = {free_port()}")
    result = buildout.ctl("convert-py3")
    assert result.returncode == 1, output(result)
    assert f"storage 1 ({data}) is a ZRS secondary" in result.stderr
    assert "convert the primary" in result.stderr
    assert digest(data) == digest(PY2_DATA / "Data.fs")
    assert not Path(f"{data}.py2").exists()


def test_a_zeo_conf_files_storages_are_named_and_converted(buildout):
    """With zeo-conf, the storages are the file's."""
    data, other = copy_python2_data(buildout)
    buildout.path("zeo.conf").write_text(textwrap.dedent(f"""\
        <zeo>
          address 127.0.0.1:{buildout.port}
        </zeo>
        <filestorage main>
          path {other}
        </filestorage>
        """))
    text = output(buildout.install("zeo-conf = zeo.conf"))
    assert f"[zeo] {other} was written by Python 2" in text, text
    assert str(data) not in text  # not the file-storage default's
    result = buildout.ctl("convert-py3", timeout=300)
    assert result.returncode == 0, output(result)
    assert f"storage main: converting {other}" in result.stdout
    assert data.read_bytes()[:4] == b"FS21"  # not this part's
    start(buildout)
    with client(("127.0.0.1", buildout.port), storage="main") as db:
        with db.transaction() as conn:
            assert conn.root()["name"] == "second storage é"
