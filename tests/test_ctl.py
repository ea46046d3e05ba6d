"""bin/<part>, the control script, driving real servers."""

import os
import re
import select
import signal
import socket
import subprocess
import time


from helpers import (accepts, alive, commit, imports, output,
                      processes_using, read, start, wait_for)


def address(buildout):
    return ("127.0.0.1", buildout.port)


def status_pid(buildout):
    """The server's pid as `status` reports it, or None."""
    result = buildout.ctl("status")
    match = re.search(r"pid=(\d+)", result.stdout)
    return int(match.group(1)) if result.returncode == 0 and match else None



def no_traceback(text):
    """The control script itself did not crash (the server's own
    transcript, quoted in a failure report, may contain one)."""
    assert "zope2zeoserver/ctl.py" not in text, text
    assert "zdaemon/zdctl.py" not in text, text
    assert not text.lstrip().startswith("Traceback"), text


def nothing_left(buildout, timeout=5):
    """No process of this buildout (server or daemon manager) survives."""
    return wait_for(lambda: not processes_using(buildout.dir), timeout)


def popen(buildout, *args, env=None):
    return subprocess.Popen(
        [str(buildout.path("bin", "zeo")), *args], cwd=buildout.dir,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, env=env)


def finish(process):
    """Kill PROCESS if a failed check left it running."""
    if process.poll() is None:
        process.kill()
        process.wait(10)
    process.stdout.close()


def read_until(process, marker, timeout=10):
    """What PROCESS printed until MARKER appeared (bounded by TIMEOUT)."""
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            data += chunk
    return data


def test_start_status_stop_restart(buildout):
    buildout.install()
    addr = address(buildout)

    # status on a stopped server: LSB 3, and it starts nothing.
    result = buildout.ctl("status")
    assert result.returncode == 3, output(result)
    assert not accepts(addr)
    assert processes_using(buildout.dir) == []

    # start returns only once the port accepts connections.
    result = buildout.ctl("start")
    assert result.returncode == 0, output(result)
    assert accepts(addr)
    pid = status_pid(buildout)
    assert pid and alive(pid)
    commit(addr, answer=42)

    # start again: says so, changes nothing.
    result = buildout.ctl("start")
    assert result.returncode == 0, output(result)
    assert "already running" in result.stdout
    assert status_pid(buildout) == pid

    # fg refuses to run a second server.
    result = buildout.ctl("fg", timeout=15)
    assert result.returncode == 1, output(result)
    assert str(pid) in output(result)
    no_traceback(output(result))
    assert status_pid(buildout) == pid

    # restart: a new server process that serves the data.
    result = buildout.ctl("restart")
    assert result.returncode == 0, output(result)
    assert accepts(addr)
    new_pid = status_pid(buildout)
    assert new_pid and new_pid != pid
    assert not alive(pid)
    assert read(addr, "answer") == 42

    # stop returns once the server process is gone.
    result = buildout.ctl("stop")
    assert result.returncode == 0, output(result)
    assert not alive(new_pid)
    assert not accepts(addr)
    assert nothing_left(buildout), processes_using(buildout.dir)
    result = buildout.ctl("status")
    assert result.returncode == 3, output(result)

    # stop when stopped is fine; status still starts nothing.
    result = buildout.ctl("stop")
    assert result.returncode == 0, output(result)
    assert "not running" in result.stdout
    assert buildout.ctl("status").returncode == 3
    assert processes_using(buildout.dir) == []
    assert not accepts(addr)


def test_everyday_commands_import_only_what_they_need(buildout):
    """status, start and stop leave the statistics client (json, and
    asyncio through the monitor) unimported: each run of the control
    script pays for every module it imports."""
    buildout.install()
    unwanted = {"plone.recipe.zope2zeoserver.stats",
                "plone.recipe.zope2zeoserver.monitor", "asyncio", "json",
                # convert-py3's alone.
                "plone.recipe.zope2zeoserver.convert", "subprocess",
                # Build time's: the scripts work where buildout is gone.
                "plone.recipe.zope2zeoserver.zeoconf",
                "plone.recipe.zope2zeoserver.options",
                "plone.recipe.zope2zeoserver.recipe", "zc.buildout"}
    # status, and stop of a server zdaemon runs, answer from
    # parts/zeo/etc/resolved.conf: without zdaemon, ZConfig or ZEO, at
    # about the cost of starting Python.  stop of nothing asks ctl.
    heavy = {"plone.recipe.zope2zeoserver.ctl", "zdaemon", "ZConfig", "ZEO"}
    for command, status, quick in (
            ("status", 3, True), ("stop", 0, False), ("start", 0, False),
            ("status", 0, True), ("stop", 0, True)):
        result, errors, modules = imports(buildout, "zeo", command)
        assert result.returncode == status, result.stdout + errors
        if quick:
            assert not modules & heavy, (command, modules & heavy)
        else:
            assert "plone.recipe.zope2zeoserver.ctl" in modules
        # start's fork runs zdaemon's manager, which needs subprocess.
        allowed = {"subprocess"} if command == "start" else set()
        found = modules & (unwanted - allowed)
        assert not found, (command, found)
    # stats does import them.
    result, errors, modules = imports(buildout, "zeo", "stats")
    assert result.returncode == 3, result.stdout + errors
    assert "plone.recipe.zope2zeoserver.stats" in modules
    # check too, but asks the address from resolved.conf, not zeo.conf.
    result, errors, modules = imports(buildout, "zeo", "check")
    assert result.returncode == 2, result.stdout + errors  # CRITICAL
    assert "not running" in result.stdout
    # (The figures' judgement needs ZEO.monitor, so ZEO, but not ZODB.)
    assert not modules & (heavy - {"ZEO"}), modules & heavy
    assert not modules & {"ZODB", "asyncio", "importlib.metadata"}


def test_unknown_and_missing_command(buildout):
    buildout.install()

    result = buildout.ctl("frobnicate")
    assert result.returncode != 0
    text = output(result)
    assert "frobnicate" in text
    for command in ("start", "stop", "restart", "status", "fg", "logtail"):
        assert command in text
    assert "Traceback" not in text

    # No command and stdin is not a terminal: usage, not an interactive
    # shell waiting for input.
    result = buildout.ctl(input="")
    assert result.returncode != 0
    text = output(result)
    assert "usage" in text.lower()
    assert "start" in text and "stop" in text
    assert "Traceback" not in text
    assert processes_using(buildout.dir) == []


def test_show_and_logtail(server):
    result = server.ctl("show")
    assert result.returncode == 0, output(result)
    assert str(server.path("parts", "zeo", "etc", "zeo.conf")) in result.stdout
    assert str(server.path("var", "log", "zeo.log")) in result.stdout

    log = server.path("var", "log", "zeo.log")
    last_line = log.read_bytes().splitlines()[-1]
    tail = popen(server, "logtail")
    try:
        seen = read_until(tail, last_line)
        assert last_line in seen, seen
        # It follows the file: a line written afterwards shows up too.
        with open(log, "ab") as f:
            f.write(b"marker written by test_show_and_logtail\n")
        seen = read_until(tail, b"marker written by test_show_and_logtail")
        assert b"marker written by test_show_and_logtail" in seen, seen
        assert tail.poll() is None  # still following
    finally:
        finish(tail)


def test_fg_runs_in_the_foreground(buildout):
    buildout.install()
    addr = address(buildout)
    for sig in (signal.SIGINT, signal.SIGTERM):
        fg = popen(buildout, "fg")
        try:
            assert wait_for(lambda: accepts(addr) or fg.poll() is not None,
                            15)
            assert fg.poll() is None, read_until(fg, b"\0", 1)
            commit(addr, **{sig.name: True})
            # The foreground process is the server: no daemon manager.
            assert processes_using(buildout.dir) == [fg.pid]
            fg.send_signal(sig)
            assert fg.wait(10) == 0, sig.name
            assert not accepts(addr)
            assert processes_using(buildout.dir) == []
        finally:
            finish(fg)
    # The server shut down cleanly both times: the data is there.
    result = buildout.ctl("start")
    assert result.returncode == 0, output(result)
    assert read(addr, "SIGINT") is True
    assert read(addr, "SIGTERM") is True


def test_start_fails_when_the_port_is_in_use(buildout):
    buildout.install()
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", buildout.port))
        occupant.listen()
        started = time.monotonic()
        result = buildout.ctl("start", timeout=30)
        elapsed = time.monotonic() - started
    text = output(result)
    assert result.returncode == 1, text
    assert elapsed < 5, elapsed
    assert "already in use" in text
    assert f"127.0.0.1:{buildout.port}" in text
    no_traceback(text)
    assert nothing_left(buildout), processes_using(buildout.dir)


def test_start_fails_when_the_server_crashes(buildout):
    buildout.install("start-timeout = 5")
    buildout.path("var", "filestorage", "Data.fs").write_bytes(
        b"this is not a FileStorage" * 100)
    started = time.monotonic()
    result = buildout.ctl("start", timeout=60)
    elapsed = time.monotonic() - started
    text = output(result)
    assert result.returncode == 1, text
    assert elapsed < 5 + 3, elapsed
    no_traceback(text)
    # The reason is shown: the log / transcript tail names the bad file.
    assert "FileStorageFormatError" in text or "Data.fs" in text, text
    assert str(buildout.path("var", "log")) in text
    # A failed start leaves nothing behind that keeps respawning the server.
    assert not accepts(address(buildout))
    assert nothing_left(buildout), processes_using(buildout.dir)
    assert buildout.ctl("status").returncode == 3

    # fg exits with the server's (failure) status.
    fg = popen(buildout, "fg")
    try:
        status = fg.wait(15)
        assert status not in (0, None)
        assert b"Data.fs" in fg.stdout.read()
    finally:
        finish(fg)
    assert processes_using(buildout.dir) == []


def test_supervisor_mode(buildout):
    buildout.install()
    addr = address(buildout)
    env = dict(os.environ, SUPERVISOR_ENABLED="1")
    plain = {name: value for name, value in os.environ.items()
             if name != "SUPERVISOR_ENABLED"}

    # Every command that would start the server (and no command at all)
    # runs it in the foreground; console, zope2instance's verb that 1.x
    # supervisord programs use, is an alias of fg without the variable too.
    runs = [(env, [command]) for command in
            ("start", "fg", "foreground", "console")]
    runs += [(env, []), (plain, ["console"])]
    for run_env, args in runs:
        server = popen(buildout, *args, env=run_env)
        try:
            assert wait_for(
                lambda: accepts(addr) or server.poll() is not None, 15)
            assert server.poll() is None, (args, read_until(server, b"\0", 1))
            commit(addr, mode="supervisor")
            # supervisord manages this very process: nothing forked off.
            assert processes_using(buildout.dir) == [server.pid], args
            server.terminate()
            assert server.wait(10) == 0, args
            assert not accepts(addr)
            assert processes_using(buildout.dir) == []
        finally:
            finish(server)

    # Other commands act as usual.
    result = buildout.ctl("start", env=plain)  # a daemon
    assert result.returncode == 0, output(result)
    pid = status_pid(buildout)
    result = buildout.ctl("status", env=env)
    assert result.returncode == 0, output(result)
    assert str(pid) in result.stdout
    assert read(addr, "mode") == "supervisor"
    result = buildout.ctl("stop", env=env)
    assert result.returncode == 0, output(result)
    assert not alive(pid)
    assert buildout.ctl("status", env=env).returncode == 3

    result = buildout.ctl("help")
    assert result.returncode == 0, output(result)
    assert re.search(r"\bconsole\b", result.stdout), result.stdout


def test_status_follows_an_edited_zeo_conf_file(buildout):
    """resolved.conf counts only while it is newer than the zeo-conf
    file: after an edit status reads zeo.conf again, and the next
    bin/buildout writes resolved.conf anew."""
    conf = buildout.path("my-zeo.conf")
    conf.write_text(f"<zeo>\n  address 127.0.0.1:{buildout.port}\n</zeo>\n"
                    f"<filestorage 1>\n  path {buildout.dir}/var/Data.fs\n"
                    "</filestorage>\n")
    buildout.install("zeo-conf = my-zeo.conf")
    resolved = buildout.path("parts", "zeo", "etc", "resolved.conf")
    assert f"address 127.0.0.1 {buildout.port}" in resolved.read_text()
    start(buildout)
    result, errors, modules = imports(buildout, "zeo", "status")
    assert result.returncode == 0, result.stdout + errors
    assert "plone.recipe.zope2zeoserver.ctl" not in modules
    assert buildout.ctl("stop").returncode == 0

    time.sleep(0.01)
    conf.write_text(conf.read_text().replace(
        "</zeo>", f"  pid-filename {buildout.dir}/var/other.pid\n</zeo>"))
    result, errors, modules = imports(buildout, "zeo", "status")
    assert result.returncode == 3, result.stdout + errors
    assert "ZConfig" in modules  # zeo.conf read
    assert "zeo: note: zeo.conf (or the zeo-conf file) changed since " \
        "bin/buildout ran" in errors
    assert "plone.recipe.zope2zeoserver.ctl" not in modules
    buildout.run()
    assert f"pid-file {buildout.dir}/var/other.pid" in resolved.read_text()
    result, errors, modules = imports(buildout, "zeo", "status")
    assert "plone.recipe.zope2zeoserver.ctl" not in modules
