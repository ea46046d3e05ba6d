"""A real supervisord running bin/<part> as its program, the way
deployments written for 1.x do (`bin/zeo console`), and with `fg` and
`start`: supervisord sets SUPERVISOR_ENABLED for its programs, so the
server runs in the foreground as supervisord's own child."""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from helpers import (accepts, commit, output, processes_using, read,
                      server_pid, wait_for)

pytest.importorskip(
    "supervisor.supervisord",
    reason="supervisor is not installed (it is in the test extra: "
           "pip install -e '.[test]'); the supervisord tests need it")

# The scripts of the environment running the tests (not resolved: a venv's
# python is a link to the base interpreter).
SCRIPTS = Path(sys.executable).parent

RPC_INTERFACE = "supervisor.rpcinterface:make_main_rpcinterface"

# supervisord's own log lines about the program (supervisor/process.py).
SPAWNED = "spawned: 'zeo'"


def environment():
    """The test process's environment without supervisord's variables: the
    program must get SUPERVISOR_ENABLED from the supervisord under test."""
    return {name: value for name, value in os.environ.items()
            if not name.startswith("SUPERVISOR_")}


class Supervisord:
    """A supervisord in DIRECTORY with one program, zeo, running COMMAND."""

    def __init__(self, directory, command):
        self.dir = directory
        self.dir.mkdir()
        self.log = directory / "supervisord.log"
        self.program_log = directory / "zeo-program.log"
        self.conf = directory / "supervisord.conf"
        socket = directory / "supervisor.sock"
        self.socket_dir = None
        if len(str(socket)) > 100:  # AF_UNIX paths have 107 bytes at most
            self.socket_dir = tempfile.mkdtemp(prefix="supervisor-")
            socket = Path(self.socket_dir, "supervisor.sock")
        self.conf.write_text(textwrap.dedent(f"""\
            [unix_http_server]
            file = {socket}

            [supervisord]
            nodaemon = true
            logfile = {self.log}
            pidfile = {directory}/supervisord.pid
            childlogdir = {directory}

            [rpcinterface:supervisor]
            supervisor.rpcinterface_factory = {RPC_INTERFACE}

            [supervisorctl]
            serverurl = unix://{socket}

            [program:zeo]
            command = {command}
            autostart = true
            autorestart = true
            startsecs = 1
            stopsignal = TERM
            stopwaitsecs = 30
            redirect_stderr = true
            stdout_logfile = {self.program_log}
            """))
        self.process = None

    def start(self):
        with open(self.dir / "supervisord.out", "wb") as out:
            self.process = subprocess.Popen(
                [str(SCRIPTS / "supervisord"), "-c", str(self.conf)],
                stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, env=environment())

    def ctl(self, *args, timeout=60):
        """supervisorctl ARGS."""
        return subprocess.run(
            [str(SCRIPTS / "supervisorctl"), "-c", str(self.conf), *args],
            capture_output=True, text=True, timeout=timeout,
            env=environment())

    def state(self):
        """The program's state (RUNNING, BACKOFF, FATAL, ...), or None while
        supervisord does not answer."""
        words = self.ctl("status", "zeo").stdout.split()
        return words[1] if len(words) > 1 and words[0] == "zeo" else None

    def settle(self, timeout=30):
        """The program's state once it is RUNNING or FATAL (supervisord
        gave up restarting it), or its state after TIMEOUT seconds."""
        def settled():
            state = self.state()
            return state if state in ("RUNNING", "FATAL") else None
        return wait_for(settled, timeout, interval=0.2) or self.state()

    def logs(self):
        """supervisord's log and the program's output, for failure
        messages."""
        return "\n".join(f"--- {path.name}:\n{path.read_text()}"
                         for path in (self.log, self.program_log)
                         if path.exists())

    def shutdown(self):
        """Stop supervisord (and its program); by force if it does not."""
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.ctl("shutdown", timeout=30)
            try:
                self.process.wait(45)  # the program has stopwaitsecs = 30
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.socket_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)


@contextlib.contextmanager
def supervisord(directory, command):
    """A started Supervisord; always shut down on leaving."""
    daemon = Supervisord(directory, command)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.shutdown()


@pytest.mark.parametrize("command", ["console", "fg", "start"])
def test_supervisord_runs_the_server(buildout, tmp_path, command):
    buildout.install()
    addr = ("127.0.0.1", buildout.port)
    program = f"{buildout.path('bin', 'zeo')} {command}"
    with supervisord(tmp_path / "supervisor", program) as daemon:
        # Up: RUNNING (after startsecs), not BACKOFF then FATAL as for a
        # program that exits at once (e.g. on an unknown command).
        assert daemon.settle() == "RUNNING", daemon.logs()
        assert wait_for(lambda: accepts(addr), 15), daemon.logs()

        commit(addr, supervised=command)
        assert read(addr, "supervised") == command

        # The program supervisord started is the server itself: no
        # zdaemon manager in between, and nothing else of the buildout.
        result = daemon.ctl("pid", "zeo")
        assert result.returncode == 0, output(result)
        pid = int(result.stdout)
        assert server_pid(buildout) == pid
        assert processes_using(buildout.dir) == [pid]
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"SUPERVISOR_ENABLED=1" in environ  # supervisord's own
        result = buildout.ctl("status")
        assert result.returncode == 0, output(result)
        assert "in the foreground, not under zdaemon" in result.stdout
        assert f"pid={pid}" in result.stdout
        # stop, restart and convert-py3 leave the server to supervisord,
        # naming the command that does what was asked.
        for command, advice in (("stop", "supervisorctl stop zeo"),
                                ("restart", "supervisorctl restart zeo"),
                                ("convert-py3", "supervisorctl stop zeo")):
            result = buildout.ctl(command)
            assert result.returncode == 1, output(result)
            assert advice in result.stderr, output(result)
        assert server_pid(buildout) == pid

        # Started once and never exited meanwhile.
        assert daemon.state() == "RUNNING", daemon.logs()
        log = daemon.log.read_text()
        assert log.count(SPAWNED) == 1, daemon.logs()
        assert "exited: zeo" not in log, daemon.logs()

        # supervisorctl stop: SIGTERM to the server, which shuts down
        # cleanly; nothing is left running.
        result = daemon.ctl("stop", "zeo")
        assert result.returncode == 0, output(result)
        assert "zeo: stopped" in result.stdout
        assert daemon.state() == "STOPPED"
        assert "stopped: zeo (exit status 0)" in daemon.log.read_text(), (
            daemon.logs())
        assert not accepts(addr)
        assert wait_for(lambda: not processes_using(buildout.dir), 5), (
            processes_using(buildout.dir))
        result = buildout.ctl("status")
        assert result.returncode == 3, output(result)
