"""Buildout time: option validation, published options, reruns, scripts.

Every test drives a real bin/buildout; none starts a server.
"""

import configparser
import json
import os
import textwrap
import zipfile

import pytest

from helpers import buildout_command, free_port, importtime, output



def installed(buildout, part="zeo"):
    """The options buildout recorded for PART in .installed.cfg."""
    parser = configparser.RawConfigParser()
    parser.read(buildout.path(".installed.cfg"))
    return parser[part]


# -- bad input ----------------------------------------------------------

LONG = "x" * 120

# (part options, option named in the error, text of the value in the
# error line or None, words the reason contains)
BAD_INPUT = [
    ("zeo-address = abc", "zeo-address", "abc", "port"),
    ("zeo-address = 0", "zeo-address", "'0'", "port"),
    ("zeo-address = 70000", "zeo-address", "70000", "port"),
    ("zeo-address = localhost:http", "zeo-address", "localhost:http", "port"),
    ("zeo-address = :8100", "zeo-address", ":8100", "host"),
    ("zeo-address = ::1:8100", "zeo-address", "::1:8100", "brackets"),
    ("zeo-address = [nothost]:8100", "zeo-address", "nothost", "IPv6"),
    ("zeo-address = bad_host!:8100", "zeo-address", "bad_host!", "host"),
    ("zeo-address =", "zeo-address", "''", "PORT"),
    (f"zeo-address = var/{LONG}/zeo.sock", "zeo-address", LONG, "100"),
    ("zeo-address = afile/zeo.sock", "zeo-address", "afile", "cannot"),
    ("pack-days = -1", "pack-days", "-1", "at least 0"),
    ("pack-days = soon", "pack-days", "soon", "number"),
    # nan/inf used to be written into bin/zeopack as undefined names.
    ("pack-days = nan", "pack-days", "nan", "finite"),
    ("pack-days = 1e400", "pack-days", "1e400", "finite"),
    ("invalidation-age = inf", "invalidation-age", "inf", "finite"),
    ("invalidation-queue-size = many", "invalidation-queue-size", "many",
     "whole number"),
    ("invalidation-queue-size = -5", "invalidation-queue-size", "-5",
     "at least 0"),
    ("invalidation-age = old", "invalidation-age", "old", "number"),
    ("transaction-timeout = 0", "transaction-timeout", "'0'", "at least 1"),
    ("storage-number = main db", "storage-number", "main db", "storage name"),
    ("zeo-conf = missing.conf", "zeo-conf", "missing.conf", "does not exist"),
    # Data inside parts/<part> would go with the next reinstall.
    ("file-storage = parts/zeo/Data.fs", "file-storage", "parts/zeo/Data.fs",
     "buildout removes"),
    ("blob-storage = parts/zeo/blobs", "blob-storage", "parts/zeo/blobs",
     "buildout removes"),
    ("zeo-conf = relative-storage.conf", "zeo-conf", "relative-storage.conf",
     "inside the part's directory"),
    ("zope2-location = missing-zope2", "zope2-location", "missing-zope2",
     "does not exist"),
    ("zeo-log-level = loud", "zeo-log-level", "loud", "expected one of"),
    ("read-only = maybe", "read-only", "maybe", "true or false"),
    ("client-conflict-resolution = sometimes", "client-conflict-resolution",
     "sometimes", "true or false"),
    ("msgpack = perhaps", "msgpack", "perhaps", "true or false"),
    ("pack-gc = kinda", "pack-gc", "kinda", "true or false"),
    ("pack-keep-old = 2", "pack-keep-old", "'2'", "true or false"),
    ("relative-paths = sometimes", "relative-paths", "sometimes",
     "true or false"),
    ("zeo-log-max-size = 10 parsecs", "zeo-log-max-size", "10 parsecs",
     "size"),
    ("zeo-log-old-files = few", "zeo-log-old-files", "few", "whole number"),
    ("effective-user = no-such-user-zz", "effective-user", "no-such-user-zz",
     "no such user"),
    ("start-timeout = 0", "start-timeout", "'0'", "at least 1"),
    ("stop-timeout = never", "stop-timeout", "never", "whole number"),
    ("zeopack-script-name = sub/zeopack", "zeopack-script-name",
     "sub/zeopack", "plain file name"),
    ("repozo-script-name = ../repozo", "repozo-script-name", "../repozo",
     "plain file name"),
    ("zeopack = missing-zeopack.py", "zeopack", "missing-zeopack.py",
     "does not exist"),
    ("zeopack = adir", "zeopack", "adir", "no zeopack.py"),
    ("repozo = adir", "repozo", "adir", "no repozo.py"),
    # Places the server cannot write (tests run as root: only a path
    # below a regular file is unwritable for sure).
    ("var = afile/var", "var", "afile/var", "cannot"),
    ("var = afile", "var", "afile", "directory"),
    ("file-storage = afile/Data.fs", "file-storage", "afile/Data.fs",
     "cannot"),
    ("file-storage = adir", "file-storage", "adir", "directory"),
    ("blob-storage = afile", "blob-storage", "afile", "directory"),
    ("blob-storage = afile/blobs", "blob-storage", "afile/blobs", "cannot"),
    ("zeo-log = afile/zeo.log", "zeo-log", "afile/zeo.log", "cannot"),
    ("pid-file = afile/zeo.pid", "pid-file", "afile/zeo.pid", "cannot"),
    ("socket-name = afile/zeo.zdsock", "socket-name", "afile/zeo.zdsock",
     "cannot"),
    # A file where the part makes a directory: the server would never
    # start (socket-name = var looped on "Unlinking stale socket").
    ("socket-name = var", "socket-name", "/var'", "(for var = '"),
    ("zeo-log = var/filestorage", "zeo-log", "var/filestorage'",
     "(for file-storage = '"),
    ("blob-storage = var/blobstorage\npid-file = var/blobstorage", "pid-file", "var/blobstorage'",
     "(for blob-storage = '"),
    ("zeo-log = parts/zeo/var", "zeo-log", "parts/zeo/var'",
     "(for location = '"),
    ("zeo-address = var/log", "zeo-address", "var/log'",
     "(for zeo-log = '"),
    # Text that goes into zeo.conf as it is: ZEO's schema rejects it.
    ("""zeo-conf-additional =
            <filestorage 2>
              path ${buildout:directory}/var/filestorage/Two.fs""",
     "zeo-conf-additional", None, "unclosed"),
    ("""zeo-conf-additional =
            <filestorage 2>
              pth ${buildout:directory}/var/filestorage/Two.fs
            </filestorage>""",
     "zeo-conf-additional", None, "pth"),
    ("""zeo-log-custom =
            <logfile>
              paht /tmp/x.log
            </logfile>""",
     "zeo-log-custom", None, "paht"),
    ("zeo-log-format = %(asctime)s %(bogus", "zeo-log-format", None,
     "format"),
    ("zeo-log-format = %(nosuchfield)s", "zeo-log-format", None,
     "nosuchfield"),
    ("zeo-conf = bad.conf", "zeo-conf", "bad.conf", "malformed"),
    ("zeo-conf = unknown-key.conf", "zeo-conf", "unknown-key.conf",
     "adress"),
    # The 1.5 authentication options: see test_tls.py.
]


@pytest.mark.parametrize(
    "options, option, value, reason", BAD_INPUT,
    ids=[case[0].split("\n")[0].replace(" ", "")
         + (f"-{case[3]}" if "\n" in case[0] else "") for case in BAD_INPUT])
def test_bad_input_fails_with_one_clear_line(buildout, options, option, value,
                                             reason):
    buildout.path("afile").write_text("a regular file\n")
    buildout.path("adir").mkdir()
    buildout.path("bad.conf").write_text("<zeo\n  address 8100\n</zeo>\n")
    buildout.path("unknown-key.conf").write_text(
        "<zeo>\n  adress 8100\n</zeo>\n")
    # The server runs in parts/zeo: that is where this path would be.
    buildout.path("relative-storage.conf").write_text(
        "<zeo>\n  address 8100\n</zeo>\n"
        "<filestorage 1>\n  path var/filestorage/Data.fs\n</filestorage>\n")
    buildout.write(options)
    result = buildout.run(check=False)
    out = output(result)
    assert result.returncode != 0, out
    assert "Traceback" not in out
    lines = [line for line in out.splitlines()
             if "[zeo]" in line and option in line]
    assert len(lines) == 1, out
    [line] = lines
    if value is not None:
        assert value in line, line
    assert reason in line, line
    # Nothing was installed.
    assert not buildout.path("bin", "zeo").exists()


# Paths that os.access calls writable for root, where mkdir then fails.
NOT_MAKEABLE = [
    ("var = /proc/zeotest", "var", "/proc/zeotest"),
    ("file-storage = /proc/zeotest/Data.fs", "file-storage",
     "/proc/zeotest/Data.fs"),
    ("blob-storage = /proc/zeotest/blobs", "blob-storage",
     "/proc/zeotest/blobs"),
    ("zeo-log = /proc/zeotest/zeo.log", "zeo-log", "/proc/zeotest/zeo.log"),
    ("pid-file = /proc/zeotest/zeo.pid", "pid-file", "/proc/zeotest/zeo.pid"),
    ("zeo-address = /proc/zeotest/zeo.sock", "zeo-address",
     "/proc/zeotest/zeo.sock"),
]


@pytest.mark.skipif(not os.access("/proc", os.W_OK | os.X_OK),
                    reason="/proc is not writable for this user: the "
                    "permission check catches these paths first")
@pytest.mark.parametrize("options, option, path", NOT_MAKEABLE,
                         ids=[case[1] for case in NOT_MAKEABLE])
def test_directory_that_cannot_be_made(buildout, options, option, path):
    buildout.write(options)
    result = buildout.run(check=False)
    out = output(result)
    assert result.returncode != 0, out
    assert "Traceback" not in out
    [line] = [line for line in out.splitlines() if "[zeo]" in line]
    assert line == (
        f"Error: [zeo] {option} = {path!r}: cannot create directory "
        "/proc/zeotest: No such file or directory; fix the permissions or "
        "choose another path"), out
    assert not buildout.path("bin", "zeo").exists()


def test_pack_user_and_password_without_authentication(buildout):
    """1.x's zeopack sent them only to a server that asked: harmless then,
    and in production buildouts since.  ZEO 6 has no passwords."""
    result = buildout.install("""
        pack-user = admin
        pack-password = s3cret
        """)
    out = output(result)
    assert "s3cret" not in out
    [line] = [line for line in out.splitlines() if "pack-user" in line]
    assert line == (
        "plone.recipe.zope2zeoserver: [zeo] pack-user = 'admin' and "
        "pack-password = '***' are ignored: the server has no "
        "authentication (ZEO 6 has none by password; for authentication by "
        "TLS client certificates, which bin/zeopack gets too, set "
        "tls-generate = true); remove them"), out
    assert "s3cret" not in buildout.path("bin", "zeopack").read_text()
    assert "s3cret" not in buildout.zeo_conf()

    result = buildout.install("pack-password = s3cret")
    [line] = [line for line in output(result).splitlines()
              if "pack-password" in line]
    assert "[zeo] pack-password = '***' is ignored: " in line
    assert line.endswith("; remove it")


def test_error_does_not_leave_old_installation_half_updated(buildout):
    """A bad value on rerun fails before the installed part is touched."""
    buildout.install()
    before = buildout.zeo_conf()
    buildout.write("pack-days = -1")
    result = buildout.run(check=False)
    assert result.returncode != 0
    assert "[zeo] pack-days = '-1'" in output(result)
    assert buildout.zeo_conf() == before
    assert buildout.path("bin", "zeo").exists()


def test_missing_egg_fails_without_traceback(buildout):
    buildout.write("eggs = no-such-egg-zz")
    result = buildout.run(check=False)
    out = output(result)
    assert result.returncode != 0
    assert "Traceback" not in out
    assert "no-such-egg-zz" in out


# -- unknown options ----------------------------------------------------

def test_unknown_option_warns_with_suggestion(buildout):
    result = buildout.install("""
        zeo-adress = 1234
        colour = blue
        """)
    out = output(result)
    [line] = [line for line in out.splitlines()
              if "[zeo]" in line and "zeo-adress" in line]
    assert "'zeo-address'" in line
    assert "unknown option" in line
    [line] = [line for line in out.splitlines()
              if "[zeo]" in line and "colour" in line]
    assert "did you mean" not in line
    # The typo did not change the address.
    assert f"address 127.0.0.1:{buildout.port}\n" in buildout.zeo_conf()
    assert "1234" not in buildout.zeo_conf()


def test_known_options_do_not_warn(buildout):
    result = buildout.install("""
        eggs =
        extra-paths =
        initialization =
        relative-paths = false
        var = var
        zeopack-script-name = zeopack
        """)
    assert "unknown option" not in output(result)


# -- published options --------------------------------------------------

def test_published_paths_are_absolute_and_really_used(buildout):
    buildout.install("""
        file-storage = data/Main.fs
        blob-storage = data/blobs
        var = state
        """, parts="zeo other", extra=f"""
        [other]
        recipe = plone.recipe.zope2zeoserver
        zeo-address = {free_port()}
        var = ${{zeo:var}}/other
        zeo-conf-additional =
            # datafs=${{zeo:file-storage}}
            # blobs=${{zeo:blob-storage}}
            # location=${{zeo:location}}
        """)
    d = str(buildout.dir)
    zeo = installed(buildout)
    assert zeo["file-storage"] == f"{d}/data/Main.fs"
    assert zeo["blob-storage"] == f"{d}/data/blobs"
    assert zeo["var"] == f"{d}/state"
    assert zeo["location"] == f"{d}/parts/zeo"
    assert zeo["pid-file"] == f"{d}/state/zeo.pid"
    assert zeo["socket-name"] == f"{d}/state/zeo.zdsock"
    assert zeo["zeo-log"] == f"{d}/state/log/zeo.log"
    # They are the paths zeo.conf gives the server.
    text = buildout.zeo_conf()
    assert f"  path {zeo['file-storage']}\n" in text
    assert f"  blob-dir {zeo['blob-storage']}\n" in text
    assert f"  pid-filename {zeo['pid-file']}\n" in text
    # Another part sees the resolved values through substitution.
    other = buildout.zeo_conf("other")
    assert f"# datafs={d}/data/Main.fs\n" in other
    assert f"# blobs={d}/data/blobs\n" in other
    assert f"# location={d}/parts/zeo\n" in other
    assert f"  path {d}/state/other/filestorage/Data.fs\n" in other


def test_published_paths_with_zeo_conf_name_the_users_storage(buildout):
    buildout.path("my-zeo.conf").write_text(textwrap.dedent(f"""\
        <zeo>
          address 127.0.0.1:{buildout.port}
        </zeo>
        <filestorage 1>
          path {buildout.dir}/var/filestorage/Users.fs
          blob-dir {buildout.dir}/var/userblobs
        </filestorage>
        """))
    buildout.install("zeo-conf = my-zeo.conf")
    zeo = installed(buildout)
    assert zeo["file-storage"] == f"{buildout.dir}/var/filestorage/Users.fs"
    assert zeo.get("blob-storage") == f"{buildout.dir}/var/userblobs"


# -- reruns, reinstalls, removal ------------------------------------------

def write_data(buildout):
    """Files standing for a server's data; returns {path: bytes}."""
    files = {
        buildout.path("var", "filestorage", "Data.fs"): os.urandom(4096),
        buildout.path("var", "filestorage", "Data.fs.index"): b"index",
        buildout.path("var", "blobstorage", "0x01", "blob"): b"blob bytes",
        buildout.path("var", "log", "zeo.log"): b"log line\n",
    }
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


def assert_data_intact(files):
    for path, content in files.items():
        assert path.read_bytes() == content, path


def test_rerun_is_a_noop_and_a_change_reinstalls(buildout):
    buildout.install("blob-storage = var/blobstorage")
    files = write_data(buildout)
    conf = buildout.path("parts", "zeo", "etc", "zeo.conf")
    # Rewritten only when the eggs are resolved again.
    record = buildout.path("parts", "zeo", "working-set.txt")
    scripts = [buildout.path("bin", name) for name in
               ("zeo", "zeopack", "repozo")]
    stamps = [p.stat().st_mtime_ns for p in [conf, record] + scripts]

    result = buildout.run()
    assert "Updating zeo." in result.stdout
    assert "Installing zeo." not in result.stdout
    assert [p.stat().st_mtime_ns for p in [conf, record] + scripts] == stamps
    assert_data_intact(files)

    buildout.write("blob-storage = var/blobstorage\n"
                   "invalidation-queue-size = 250")
    result = buildout.run()
    assert "Uninstalling zeo." in result.stdout
    assert "Installing zeo." in result.stdout
    assert "  invalidation-queue-size 250\n" in buildout.zeo_conf()
    assert_data_intact(files)


def wheel(buildout, name, version):
    """A wheel of project NAME, VERSION in BUILDOUT's links/ (see
    `write_with_links`): one empty module."""
    tag = f"{name}-{version}"
    files = {f"{name}.py": "",
             f"{tag}.dist-info/METADATA":
                 f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{tag}.dist-info/WHEEL": "Wheel-Version: 1.0\n"
                 "Root-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [f"{path},," for path in files] + [f"{tag}.dist-info/RECORD,,"]
    files[f"{tag}.dist-info/RECORD"] = "\n".join(record) + "\n"
    links = buildout.path("links")
    links.mkdir(exist_ok=True)
    with zipfile.ZipFile(links / f"{tag}-py3-none-any.whl", "w") as z:
        for path, text in files.items():
            z.writestr(path, text)


def write_with_links(buildout, part_options, extra=""):
    """Buildout.write, with links/ among the find-links."""
    config = buildout.write(part_options, extra=extra)
    buildout.path("buildout.cfg").write_text(config.replace(
        f"find-links = {buildout.dist_dir}",
        f"find-links = {buildout.dist_dir} {buildout.path('links')}"))


def test_rerun_follows_a_changed_pin(buildout):
    """A [versions] pin changes the scripts' eggs without changing the
    part's options: a rerun must still write them (the README's
    zc.lockfile pin for zc.buildout 4 is added to a buildout that failed)."""
    for version in ("1.0", "2.0"):
        wheel(buildout, "zeotestpinned", version)
    write_with_links(buildout, "eggs = zeotestpinned",
                     "[versions]\nzeotestpinned = 1.0\n")
    buildout.run()
    assert "zeotestpinned-1.0-" in buildout.path("bin", "zeo").read_text()
    record = buildout.path("parts", "zeo", "working-set.txt")
    assert "\nzeotestpinned 1.0 " in record.read_text()

    write_with_links(buildout, "eggs = zeotestpinned",
                     "[versions]\nzeotestpinned = 2.0\n")
    result = buildout.run()
    assert "Installing zeo." not in result.stdout
    assert "\nzeotestpinned 2.0 " in record.read_text()
    for script in ("bin/zeo", "parts/zeo/bin/runzeo", "bin/zeopack"):
        text = buildout.path(*script.split("/")).read_text()
        assert "zeotestpinned-2.0-" in text, script
        assert "zeotestpinned-1.0-" not in text, script


def test_rerun_with_a_pin_that_cannot_be_met_changes_nothing(buildout):
    """buildout deletes a part's files when its update fails: a pin of
    a release that does not exist must stop buildout before that."""
    wheel(buildout, "zeotestpinned", "1.0")
    write_with_links(buildout, "eggs = zeotestpinned")
    buildout.run()
    before = {path: path.read_bytes() for path in (
        buildout.path("bin", "zeo"), buildout.path("parts", "zeo", "etc",
                                                    "zeo.conf"))}
    write_with_links(buildout, "eggs = zeotestpinned",
                     "[versions]\nzeotestpinned = 3.0\n")
    result = buildout.run(check=False)
    assert result.returncode != 0
    assert "zeotestpinned" in output(result)
    assert "Traceback" not in output(result)
    assert {path: path.read_bytes() for path in before} == before


def test_rerun_looks_for_no_newer_release(buildout):
    """With newest, a rerun does not ask the index about every egg (with
    setuptools 65 that took 46 s): the scripts keep what is installed."""
    wheel(buildout, "zeotestunpinned", "1.0")
    write_with_links(buildout, "eggs = zeotestunpinned")
    buildout.run()
    wheel(buildout, "zeotestunpinned", "2.0")
    result = buildout.run("-n")
    assert "Updating zeo." in result.stdout
    assert "zeotestunpinned-1.0-" in buildout.path("bin", "zeo").read_text()


SERVER_CODE = {"ZConfig", "ZEO", "ZODB", "zdaemon", "cryptography"}
# Build-time modules a rerun that changes nothing has no use for.
INSTALL_CODE = {"plone.recipe.zope2zeoserver.systemd",
                "plone.recipe.zope2zeoserver.scripts",
                "plone.recipe.zope2zeoserver.tls"}


def imported_by_rerun(buildout):
    """The modules a bin/buildout rerun of BUILDOUT imports."""
    script = buildout_command(buildout.dist_dir)
    result, errors, modules = importtime(
        script.parent / "python", script, ["-c", "buildout.cfg"],
        buildout.dir, 300)
    assert result.returncode == 0, result.stdout + errors
    return modules


def test_rerun_loads_no_server_code(buildout):
    """Buildout loads ZEO, ZConfig and cryptography only for a part that
    needs them checked: a rerun that changes nothing stays cheap."""
    buildout.install()
    imported = imported_by_rerun(buildout)
    assert "plone.recipe.zope2zeoserver.recipe" in imported
    assert not imported & SERVER_CODE
    assert not imported & INSTALL_CODE

    buildout.install("tls-generate = true")
    assert "cryptography" in imported_by_rerun(buildout)


def test_rerun_recreates_missing_data_directories(buildout):
    buildout.install("blob-storage = var/blobstorage")
    for directory in ("filestorage", "log", "blobstorage"):
        buildout.path("var", directory).rmdir()
    result = buildout.run()
    assert "Updating zeo." in result.stdout
    for directory in ("filestorage", "log", "blobstorage"):
        assert buildout.path("var", directory).is_dir(), directory
    assert oct(buildout.path("var", "blobstorage").stat().st_mode & 0o777) \
        == oct(0o700)


def test_part_var_directory_for_zeo_client_caches(buildout):
    """Zope instances of 1.x deployments keep their ZEO client cache in
    parts/<zeo part>/var (zope.conf: var $ZEOINSTANCE/var)."""
    buildout.install()
    part_var = buildout.path("parts", "zeo", "var")
    assert part_var.is_dir()
    assert list(part_var.iterdir()) == []
    # A rerun keeps what the clients put there, and makes it again.
    cache = part_var / "zeo1-1.zec"
    cache.write_bytes(b"ZEC4 cache")
    result = buildout.run()
    assert "Updating zeo." in result.stdout
    assert cache.read_bytes() == b"ZEC4 cache"
    cache.unlink()
    part_var.rmdir()
    buildout.run()
    assert part_var.is_dir()


def test_removing_the_part_keeps_the_data(buildout):
    buildout.install("blob-storage = var/blobstorage")
    files = write_data(buildout)
    buildout.write("blob-storage = var/blobstorage", parts=" ")
    result = buildout.run()
    assert "Uninstalling zeo." in result.stdout
    assert not buildout.path("parts", "zeo").exists()
    for script in ("zeo", "zeopack", "repozo"):
        assert not buildout.path("bin", script).exists(), script
    assert_data_intact(files)


# -- scripts --------------------------------------------------------------

def test_empty_zeopack_and_repozo_mean_no_scripts(buildout):
    buildout.install("""
        zeopack =
        repozo =
        """)
    assert buildout.path("bin", "zeo").exists()
    assert not buildout.path("bin", "zeopack").exists()
    assert not buildout.path("bin", "repozo").exists()
    recorded = {os.path.basename(path) for path in
                installed(buildout)["__buildout_installed__"].split()}
    assert "zeo" in recorded
    assert "zeopack" not in recorded and "repozo" not in recorded


def test_script_names(buildout):
    buildout.install()
    assert buildout.path("bin", "zeopack").exists()
    buildout.install("""
        zeopack-script-name = pack-main
        repozo-script-name = backup-main
        """)
    assert not buildout.path("bin", "zeopack").exists()
    assert not buildout.path("bin", "repozo").exists()
    result = buildout.script("pack-main", "--help")
    assert result.returncode == 0, output(result)
    assert "pack-main" in result.stdout  # argparse's prog
    result = buildout.script("backup-main", "--help")
    assert result.returncode == 0, output(result)
    assert "repozo" in result.stdout.lower()


FAKE_SCRIPT = """\
import json, sys
print(json.dumps({"name": %r, "argv": sys.argv, "path": sys.path,
                  "main": __name__ == "__main__"}))
"""


def fake_zope2(buildout):
    """A Zope 2 tree the way 1.5 used it: lib/python and ZODBTools."""
    zope2 = buildout.path("zope2")
    (zope2 / "lib" / "python").mkdir(parents=True)
    tools = zope2 / "utilities" / "ZODBTools"
    tools.mkdir(parents=True)
    for name in ("zeopack", "repozo"):
        (tools / f"{name}.py").write_text(FAKE_SCRIPT % name)
    return zope2


def run_json(buildout, name, *args):
    result = buildout.script(name, *args)
    assert result.returncode == 0, output(result)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_zope2_location_scripts_and_path(buildout):
    zope2 = fake_zope2(buildout)
    blobs = buildout.path("var", "blobstorage")
    buildout.install("""
        zope2-location = zope2
        storage-number = main
        pack-days = 3
        blob-storage = var/blobstorage
        """)
    lib = str(zope2 / "lib" / "python")
    for script in ("zeo", "zeopack", "repozo"):
        assert repr(lib) in buildout.path("bin", script).read_text(), script
    assert repr(lib) in buildout.path(
        "parts", "zeo", "bin", "runzeo").read_text()

    packed = run_json(buildout, "zeopack", "-d", "7")
    assert packed["name"] == "zeopack" and packed["main"]
    assert packed["argv"][0] == str(
        zope2 / "utilities" / "ZODBTools" / "zeopack.py")
    # The 1.5 defaults, then the user's arguments (which win).
    assert packed["argv"][1:] == [
        "-h", "127.0.0.1", "-p", str(buildout.port), "-S", "main",
        "-d", "3", "-B", str(blobs), "-d", "7"]
    assert lib in packed["path"]

    backup = run_json(buildout, "repozo", "-B")
    assert backup["name"] == "repozo"
    assert backup["argv"][1:] == ["-B"]
    assert lib in backup["path"]


@pytest.mark.parametrize("address", ["unix", "tcp"])
def test_zeopack_option_wraps_a_script(buildout, address):
    tools = fake_zope2(buildout) / "utilities" / "ZODBTools"
    if address == "unix":
        buildout.install(f"""
            zeo-address = var/zeo.sock
            zeopack = {tools}/
            repozo = {tools}/repozo.py
            """)
        where = ["-U", str(buildout.path("var", "zeo.sock"))]
    else:
        buildout.install(f"zeopack = {tools}/zeopack.py")
        where = ["-h", "127.0.0.1", "-p", str(buildout.port)]
    packed = run_json(buildout, "zeopack")
    assert packed["argv"] == [str(tools / "zeopack.py")] + where + [
        "-S", "1", "-d", "1"]
    if address == "unix":
        assert run_json(buildout, "repozo")["name"] == "repozo"


DEMO_SETUP = """\
from setuptools import setup
setup(name="demo-resolver", version="1.0", py_modules=["demo_resolver"])
"""


def test_eggs_extra_paths_and_initialization(buildout, tmp_path):
    demo = buildout.path("src", "demo")
    demo.mkdir(parents=True)
    (demo / "setup.py").write_text(DEMO_SETUP)
    (demo / "demo_resolver.py").write_text("MARK = 'resolver-ok'\n")
    outside = tmp_path / "outside-lib"
    outside.mkdir()
    (outside / "outside_module.py").write_text("MARK = 'outside-ok'\n")
    extra = buildout.path("extra")
    extra.mkdir()
    (extra / "extra_module.py").write_text("MARK = 'extra-ok'\n")
    buildout.install(f"""
        eggs = demo-resolver
        extra-paths =
            extra
            {outside}
        initialization =
            import demo_resolver, extra_module, outside_module
            print("INIT", demo_resolver.MARK, extra_module.MARK,
                  outside_module.MARK)
        """, buildout_options="develop = src/demo")
    for script in ("bin/zeo", "bin/zeopack", "bin/repozo",
                   "parts/zeo/bin/runzeo"):
        text = buildout.path(script).read_text()
        assert repr(str(extra)) in text, script
        assert repr(str(outside)) in text, script
        assert "import demo_resolver, extra_module" in text, script
    # The code really runs with the egg and the paths importable.
    result = buildout.script("zeopack", "--help")
    assert result.returncode == 0, output(result)
    assert result.stdout.startswith(
        "INIT resolver-ok extra-ok outside-ok\n"), result.stdout
    result = buildout.script("parts/zeo/bin/runzeo", "--help")
    assert result.stdout.startswith(
        "INIT resolver-ok extra-ok outside-ok\n"), output(result)
