"""Buildout time: what each option puts into parts/<part>/etc/zeo.conf.

Every test runs a real bin/buildout and then loads the generated zeo.conf
with ZConfig against ZEO's zeoctl.xml schema, the way the control script
and the server read it, so the assertions are on the values ZEO will use.
"""

import os
import shutil
import stat

import pytest
import ZConfig
import ZEO

from helpers import free_port, resolved_conf


ENV = "ZOPE2ZEOSERVER_BUILDOUT"
SCHEMA = ZConfig.loadSchema(
    os.path.join(os.path.dirname(ZEO.__file__), "zeoctl.xml"))


def load(buildout, part="zeo", directory=None):
    """The parsed zeo.conf of PART; $(ZOPE2ZEOSERVER_BUILDOUT) expands to
    DIRECTORY (default: the buildout directory)."""
    path = buildout.path("parts", part, "etc", "zeo.conf")
    previous = os.environ.get(ENV)
    os.environ[ENV] = str(directory or buildout.dir)
    try:
        config, _ = ZConfig.loadConfig(SCHEMA, str(path))
    finally:
        if previous is None:
            del os.environ[ENV]
        else:
            os.environ[ENV] = previous
    return config


def logfile(config):
    """The section of the one handler of the eventlog."""
    handlers = config.eventlog.handler_factories
    assert len(handlers) == 1, handlers
    return handlers[0].section


def storage(config, name="1"):
    [found] = [s for s in config.storages if s.name == name]
    return found.config


def test_defaults(buildout):
    buildout.install()
    d = str(buildout.dir)
    text = buildout.zeo_conf()
    config = load(buildout)

    assert f"address 127.0.0.1:{buildout.port}\n" in text
    assert config.zeo.address.address == ("127.0.0.1", buildout.port)
    assert config.zeo.read_only is False
    assert config.zeo.invalidation_queue_size == 100
    assert config.zeo.pid_filename == f"{d}/var/zeo.pid"
    assert config.zeo.client_conflict_resolution is False
    # Options left unset stay out of zeo.conf: ZEO's defaults apply.
    for key in ("invalidation-age", "transaction-timeout", "msgpack",
                "blob-dir", "max-size", "old-files", "user "):
        assert key not in text

    assert [s.name for s in config.storages] == ["1"]
    fs = storage(config)
    assert fs.path == f"{d}/var/filestorage/Data.fs"
    assert fs.blob_dir is None
    assert fs.pack_gc is True
    assert fs.pack_keep_old is True

    assert config.eventlog.level == 20  # info
    log = logfile(config)
    assert log.path == f"{d}/var/log/zeo.log"
    assert log.format == "%(asctime)s %(message)s"

    runner = config.runner
    assert runner.program == [f"{d}/parts/zeo/bin/runzeo"]
    assert runner.socket_name == f"{d}/var/zeo.zdsock"
    assert runner.logfile == f"{d}/var/log/zeo.log"
    assert runner.transcript == f"{d}/var/log/zeo-transcript.log"
    assert runner.directory == f"{d}/parts/zeo"
    assert runner.user is None
    assert runner.start_timeout == 30
    assert runner.stop_timeout == 30
    assert runner.daemon is True

    # The directories the server writes to exist; the data does not yet.
    assert buildout.path("var", "filestorage").is_dir()
    assert buildout.path("var", "log").is_dir()
    assert not buildout.path("var", "filestorage", "Data.fs").exists()
    assert not buildout.path("var", "blobstorage").exists()
    assert buildout.path("parts", "zeo", "bin", "runzeo").is_file()
    for script in ("zeo", "zeopack", "repozo"):
        assert os.access(buildout.path("bin", script), os.X_OK), script


def test_default_address_is_8100(buildout):
    # Any mention of zeo-address stops the fixture from adding a port.
    buildout.install("# no zeo-address: the 1.5 default applies")
    assert "  address 127.0.0.1:8100\n" in buildout.zeo_conf()
    assert load(buildout).zeo.address.address == ("127.0.0.1", 8100)


@pytest.mark.parametrize("value, text, address", [
    ("{port}", "127.0.0.1:{port}", ("127.0.0.1", "{port}")),
    ("localhost:{port}", "localhost:{port}", ("localhost", "{port}")),
    ("0.0.0.0:{port}", "0.0.0.0:{port}", ("0.0.0.0", "{port}")),
    ("[::1]:{port}", "[::1]:{port}", ("::1", "{port}")),
    ("var/zeo.sock", "{dir}/var/zeo.sock", "{dir}/var/zeo.sock"),
    ("sockets/zeo.sock", "{dir}/sockets/zeo.sock", "{dir}/sockets/zeo.sock"),
    ("{dir}/abs/zeo.sock", "{dir}/abs/zeo.sock", "{dir}/abs/zeo.sock"),
], ids=["port", "host-port", "any-port", "ipv6", "unix-relative",
        "unix-new-dir", "unix-absolute"])
def test_zeo_address(buildout, value, text, address):
    def fill(s):
        return s.format(port=buildout.port, dir=buildout.dir)

    buildout.install(f"zeo-address = {fill(value)}")
    assert f"  address {fill(text)}\n" in buildout.zeo_conf()
    parsed = load(buildout).zeo.address.address
    if isinstance(address, str):
        assert parsed == fill(address)
        # The socket's directory exists; the server creates the socket.
        assert os.path.isdir(os.path.dirname(parsed))
        assert not os.path.exists(parsed)
    else:
        host, port = address
        assert parsed == (host, buildout.port)
    # bin/zeopack, stats and check ask the same server.
    assert resolved_conf(buildout).address == parsed


def test_every_zeo_conf_option(buildout):
    """One buildout with every option that changes zeo.conf set to a
    value other than its default."""
    buildout.install("""
        effective-user = nobody
        invalidation-queue-size = 500
        invalidation-age = 3600
        transaction-timeout = 300
        read-only = true
        client-conflict-resolution = yes
        msgpack = on
        zeo-log = logs/server.log
        zeo-log-format = %(levelname)s %(message)s
        zeo-log-level = WARN
        zeo-log-max-size = 10MB
        zeo-log-old-files = 5
        storage-number = main
        file-storage = data/main.fs
        blob-storage = data/blobs
        socket-name = run/control.zdsock
        pid-file = run/server.pid
        pack-gc = false
        pack-keep-old = no
        start-timeout = 12
        stop-timeout = 7
        """)
    d = str(buildout.dir)
    text = buildout.zeo_conf()
    config = load(buildout)

    assert "  user nobody\n" in text
    assert config.runner.user == "nobody"
    assert config.zeo.invalidation_queue_size == 500
    assert config.zeo.invalidation_age == 3600
    assert config.zeo.transaction_timeout == 300
    assert config.zeo.read_only is True
    assert config.zeo.client_conflict_resolution is True
    assert config.zeo.msgpack is True
    assert config.zeo.pid_filename == f"{d}/run/server.pid"

    log = logfile(config)
    assert log.path == f"{d}/logs/server.log"
    assert log.format == "%(levelname)s %(message)s"
    assert log.max_size == 10 * 1024 * 1024
    assert log.old_files == 5
    assert config.eventlog.level == 30  # warn
    assert config.runner.logfile == f"{d}/logs/server.log"
    assert config.runner.transcript == f"{d}/logs/zeo-transcript.log"

    assert [s.name for s in config.storages] == ["main"]
    fs = storage(config, "main")
    assert fs.path == f"{d}/data/main.fs"
    assert fs.blob_dir == f"{d}/data/blobs"
    assert fs.pack_gc is False
    assert fs.pack_keep_old is False

    assert config.runner.socket_name == f"{d}/run/control.zdsock"
    assert config.runner.start_timeout == 12
    assert config.runner.stop_timeout == 7

    # Directories for everything the server writes exist; the blob
    # directory is private, as ZODB wants it.
    for directory in ("logs", "data", "run"):
        assert buildout.path(directory).is_dir(), directory
    blobs = buildout.path("data", "blobs")
    assert stat.S_IMODE(blobs.stat().st_mode) == 0o700
    # Nothing went to the default places.
    assert not buildout.path("var").exists()

    # bin/zeopack packs storage 'main'.
    assert resolved_conf(buildout).storages[0] == "main"


def test_blob_storage_mode_is_reset_on_existing_directory(buildout):
    blobs = buildout.path("blobs")
    blobs.mkdir(mode=0o755)
    (blobs / "keep").write_text("blob data")
    buildout.install("blob-storage = blobs")
    assert stat.S_IMODE(blobs.stat().st_mode) == 0o700
    assert (blobs / "keep").read_text() == "blob data"
    assert storage(load(buildout)).blob_dir == str(blobs)


@pytest.mark.parametrize("level, number", [
    ("debug", 10), ("info", 20), ("ERROR", 40), ("critical", 50),
    ("trace", 5), ("15", 15)])
def test_zeo_log_level(buildout, level, number):
    buildout.install(f"zeo-log-level = {level}")
    assert f"  level {level.lower()}\n" in buildout.zeo_conf()
    assert load(buildout).eventlog.level == number


@pytest.mark.parametrize("part", ["zeo", "zeoserver"])
def test_var_moves_every_default(buildout, part):
    buildout.install("var = data", part=part)
    d = str(buildout.dir)
    config = load(buildout, part)
    assert storage(config).path == f"{d}/data/filestorage/Data.fs"
    assert logfile(config).path == f"{d}/data/log/{part}.log"
    assert config.zeo.pid_filename == f"{d}/data/{part}.pid"
    assert config.runner.socket_name == f"{d}/data/zeo.zdsock"
    assert config.runner.logfile == f"{d}/data/log/{part}.log"
    assert config.runner.transcript == f"{d}/data/log/{part}-transcript.log"
    assert config.runner.program == [f"{d}/parts/{part}/bin/runzeo"]
    assert buildout.path("data", "filestorage").is_dir()
    assert not buildout.path("var").exists()
    assert buildout.path("bin", part).is_file()


def test_var_absolute_and_explicit_paths_win(buildout, tmp_path):
    var = tmp_path / "elsewhere"
    buildout.install(f"""
        var = {var}
        file-storage = db/Data.fs
        """)
    config = load(buildout)
    assert storage(config).path == f"{buildout.dir}/db/Data.fs"
    assert logfile(config).path == f"{var}/log/zeo.log"
    assert config.zeo.pid_filename == f"{var}/zeo.pid"
    assert (var / "log").is_dir()


def test_zeo_log_custom_replaces_logfile(buildout):
    buildout.install("""
        zeo-log = logs/zeo.log
        zeo-log-format = %(message)s UNUSED
        zeo-log-custom =
            <logfile>
              path ${buildout:directory}/logs/custom.log
              format CUSTOM %(message)s
            </logfile>
        """)
    d = str(buildout.dir)
    text = buildout.zeo_conf()
    config = load(buildout)
    log = logfile(config)
    assert log.path == f"{d}/logs/custom.log"
    assert log.format == "CUSTOM %(message)s"
    assert "UNUSED" not in text
    assert text.count("<logfile>") == 1
    # zeo-log still feeds the runner's logfile (bin/zeo logtail).
    assert config.runner.logfile == f"{d}/logs/zeo.log"


def test_zeo_conf_additional(buildout):
    buildout.install("""
        zeo-conf-additional =
            <filestorage 2>
              path ${buildout:directory}/var/filestorage/Two.fs
            </filestorage>
        """)
    config = load(buildout)
    assert [s.name for s in config.storages] == ["1", "2"]
    assert storage(config, "2").path == f"{buildout.dir}/var/filestorage/Two.fs"
    assert "<filestorage 2>\n" in buildout.zeo_conf()


def write_user_conf(buildout, runner="", base=None):
    """A zeo.conf of the user's; BASE spells the buildout directory."""
    base = base or buildout.dir
    path = buildout.path("my-zeo.conf")
    path.write_text(f"""\
<zeo>
  address 127.0.0.1:{buildout.port}
  pid-filename $INSTANCE/user.pid
</zeo>
<filestorage users>
  path {base}/var/filestorage/Users.fs
</filestorage>
<eventlog>
  <logfile>
    path {base}/user.log
  </logfile>
</eventlog>
{runner}""")
    return path


def test_zeo_conf_file_is_included_and_gets_a_runner(buildout):
    user_conf = write_user_conf(buildout)
    # Relative to the buildout directory; generation options are ignored.
    buildout.install("""
        zeo-conf = my-zeo.conf
        invalidation-queue-size = 777
        stop-timeout = 9
        """)
    d = str(buildout.dir)
    text = buildout.zeo_conf()
    assert f"%include {user_conf}\n" in text
    assert "777" not in text
    assert text.count("<runner>") == 1
    config = load(buildout)
    assert [s.name for s in config.storages] == ["users"]
    assert storage(config, "users").path == f"{d}/var/filestorage/Users.fs"
    # $INSTANCE in the user's file is the part directory, as in 1.5.
    assert config.zeo.pid_filename == f"{d}/parts/zeo/user.pid"
    # The runner section the control script needs was added.
    assert config.runner.program == [f"{d}/parts/zeo/bin/runzeo"]
    assert config.runner.stop_timeout == 9
    assert config.runner.socket_name == f"{d}/var/zeo.zdsock"


def test_zeo_conf_file_with_own_runner_is_kept(buildout):
    user_conf = write_user_conf(buildout, runner=f"""\
<runner>
  program {buildout.dir}/parts/zeo/bin/runzeo
  socket-name {buildout.dir}/own.zdsock
</runner>
""")
    buildout.install(f"zeo-conf = {user_conf}")
    text = buildout.zeo_conf()
    assert "<runner>" not in text
    config = load(buildout)
    assert config.runner.socket_name == f"{buildout.dir}/own.zdsock"


def test_zeo_conf_file_changes_are_checked_on_rerun(buildout):
    """The included file is outside buildout's change detection, but a
    rerun after an option change validates it again."""
    user_conf = write_user_conf(buildout)
    buildout.install("zeo-conf = my-zeo.conf")
    user_conf.write_text(user_conf.read_text().replace(
        "pid-filename", "pid-filenam"))
    buildout.write("zeo-conf = my-zeo.conf\nstart-timeout = 5")
    result = buildout.run(check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in out
    assert "pid-filenam" in out and "zeo-conf" in out


@pytest.mark.parametrize("where, address", [
    ("part", "tcp"), ("buildout", "unix")])
def test_relative_paths(buildout, tmp_path, where, address):
    outside = tmp_path / "outside-blobs"
    options = f"blob-storage = {outside}\nextra-paths = extra"
    if address == "unix":
        options += "\nzeo-address = var/zeo.sock"
    if where == "part":
        buildout.install(options + "\nrelative-paths = true")
    else:
        buildout.install(options, buildout_options="relative-paths = true")
    old = str(buildout.dir)
    text = buildout.zeo_conf()
    assert old not in text
    assert f"$({ENV})/var/filestorage/Data.fs" in text
    assert f"$({ENV})/parts/zeo/bin/runzeo" in text
    if address == "unix":
        assert f"  address $({ENV})/var/zeo.sock\n" in text
    # Paths outside the buildout stay absolute.
    assert f"blob-dir {outside}\n" in text
    for script in ("bin/zeo", "bin/zeopack", "bin/repozo",
                   "parts/zeo/bin/runzeo"):
        assert old not in buildout.path(script).read_text(), script

    moved = tmp_path / "moved"
    shutil.move(old, moved)
    buildout.dir = moved  # so the fixture cleans up the right place
    config = load(buildout, directory=moved)
    assert storage(config).path == f"{moved}/var/filestorage/Data.fs"
    assert storage(config).blob_dir == str(outside)
    assert config.runner.program == [f"{moved}/parts/zeo/bin/runzeo"]
    assert config.runner.socket_name == f"{moved}/var/zeo.zdsock"
    if address == "unix":
        assert config.zeo.address.address == f"{moved}/var/zeo.sock"
    # The moved control script finds its zeo.conf and reports LSB "not
    # running" instead of failing.
    result = buildout.ctl("status")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_relative_paths_with_zeo_conf_file(buildout, tmp_path):
    # $INSTANCE follows the buildout directory too.
    write_user_conf(buildout, base="$INSTANCE/../..")
    buildout.install("zeo-conf = my-zeo.conf\nrelative-paths = true")
    text = buildout.zeo_conf()
    assert f"%include $({ENV})/my-zeo.conf\n" in text
    assert str(buildout.dir) not in text
    moved = tmp_path / "moved"
    shutil.move(str(buildout.dir), moved)
    buildout.dir = moved
    config = load(buildout, directory=moved)
    # The user's file is found in the new place.
    assert [s.name for s in config.storages] == ["users"]
    assert os.path.normpath(storage(config, "users").path) == \
        f"{moved}/var/filestorage/Users.fs"
    assert config.runner.program == [f"{moved}/parts/zeo/bin/runzeo"]


def test_two_parts_must_not_share_data_or_socket(buildout):
    other_port = free_port()
    other = f"""
        [other]
        recipe = plone.recipe.zope2zeoserver
        zeo-address = {other_port}
        storage-number = 2
        """
    buildout.write("", parts="zeo other", extra=other)
    result = buildout.run(check=False)
    assert result.returncode == 1
    assert "file-storage" in result.stdout + result.stderr
    assert "uses the same file" in result.stdout + result.stderr

    buildout.install("", parts="zeo other", extra=other + """
        file-storage = var/filestorage/Other.fs
        socket-name = var/other.zdsock
        """)
    d = str(buildout.dir)
    zeo, other = load(buildout, "zeo"), load(buildout, "other")
    assert zeo.zeo.address.address == ("127.0.0.1", buildout.port)
    assert other.zeo.address.address == ("127.0.0.1", other_port)
    assert other.zeo.pid_filename == f"{d}/var/other.pid"
    assert logfile(other).path == f"{d}/var/log/other.log"
    assert other.runner.program == [f"{d}/parts/other/bin/runzeo"]
    assert [s.name for s in other.storages] == ["2"]
    assert buildout.path("bin", "other").is_file()


def test_zeo_conf_relative_paths_are_the_servers(buildout):
    """The server runs in the part's directory (the runner's), so that is
    where a zeo-conf's relative paths are; bin/zeopack goes there too.
    (A short name: a socket path has at most 100 characters, and pytest's
    directories take 80 of them.)"""
    buildout.path("my-zeo.conf").write_text(f"""\
<zeo>
  address r/z.sock
</zeo>
<filestorage 1>
  path {buildout.dir}/var/filestorage/Data.fs
</filestorage>
""")
    buildout.install("zeo-conf = my-zeo.conf")
    socket = buildout.path("parts", "zeo", "r", "z.sock")
    assert socket.parent.is_dir()
    assert resolved_conf(buildout).address == str(socket)
