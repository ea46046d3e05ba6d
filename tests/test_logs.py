"""The server's log: rotation by size, and reopening after logrotate."""

import re
import shutil
import socket
import subprocess
import textwrap
from pathlib import Path

from helpers import commit, output, ROOT, wait_for



def connect_and_leave(port, count):
    """COUNT connections that the server logs (about 150 bytes each)."""
    for _ in range(count):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_rotation_by_size(buildout):
    buildout.install("""
        zeo-log-max-size = 2KB
        zeo-log-old-files = 2
        """)
    result = buildout.ctl("start")
    assert result.returncode == 0, output(result)
    log = buildout.path("var", "log", "zeo.log")
    connect_and_leave(buildout.port, 60)  # about 9 kB of log
    old = [log.with_name("zeo.log.1"), log.with_name("zeo.log.2")]
    assert wait_for(lambda: all(p.exists() for p in old), 10), list(
        log.parent.iterdir())
    # Only old-files old files are kept, none bigger than max-size (and
    # a line).
    assert not log.with_name("zeo.log.3").exists()
    for path in [log] + old:
        assert path.stat().st_size < 2048 + 500, path
    # The current file gets the new lines.
    commit(("127.0.0.1", buildout.port), answer=42)
    assert wait_for(lambda: "disconnected" in log.read_text(), 5)


def readme_logrotate_config(buildout_dir):
    """The logrotate example of README.rst, for BUILDOUT_DIR."""
    readme = (ROOT / "README.rst").read_text()
    match = re.search(r"\n( +)/srv/site/var/log/zeo\.log .*?\{\n.*?\n\1\}\n",
                      readme, re.DOTALL)
    assert match, "no logrotate example in README.rst"
    config = textwrap.dedent(match.group(0).strip("\n"))
    return config.replace("/srv/site", str(buildout_dir)) + "\n"


def logrotate(config, state):
    """Rotate as logrotate does with CONFIG, forced.  Without logrotate,
    do its steps: rename each file, then run the postrotate script once
    (sharedscripts)."""
    path = state.with_name("logrotate.conf")
    path.write_text(config)
    if shutil.which("logrotate"):
        result = subprocess.run(["logrotate", "-f", "-s", str(state),
                                 str(path)], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, output(result)
        return
    files = config.split("{")[0].split()
    for name in files:
        Path(name).rename(name + ".1")
    script = re.search(r"postrotate\n(.*?)\n\s*endscript", config,
                       re.DOTALL).group(1)
    subprocess.run(["/bin/sh", "-c", script], check=True, timeout=60)


def test_logrotate_example(server, tmp_path):
    log = server.path("var", "log", "zeo.log")
    transcript = server.path("var", "log", "zeo-transcript.log")
    transcript.write_text("printed before logging started\n")
    commit(("127.0.0.1", server.port), before=True)
    config = readme_logrotate_config(server.dir)
    logrotate(config, tmp_path / "logrotate.state")

    rotated = log.with_name("zeo.log.1")
    assert rotated.exists() and "Connected" in rotated.read_text()
    assert transcript.with_name("zeo-transcript.log.1").exists()
    # The server writes to the new file, not to the moved one.
    assert wait_for(lambda: log.exists()
                    and "Log files reopened" in log.read_text(), 10)
    size = rotated.stat().st_size
    commit(("127.0.0.1", server.port), after=True)
    assert wait_for(lambda: "disconnected" in log.read_text(), 5)
    assert rotated.stat().st_size == size
    # The manager reopened the transcript (under its old name).
    assert transcript.exists()

    # A stopped server has nothing to reopen: not an error for logrotate.
    assert server.ctl("stop").returncode == 0
    result = server.ctl("logreopen")
    assert result.returncode == 0, output(result)
    assert "not running" in result.stdout
