"""The control script on Windows, played on this machine.

zdaemon does not run on Windows, and Windows Python has no `pwd` module,
no unix sockets and no exec.  The control script is run here by a Python
made to look like that (the one mock of the suite: a real Windows is not
available), against a real buildout and a real server.
"""

import os
import signal
import subprocess
import sys
import textwrap
import zipfile

from helpers import accepts, commit, read, wait_for


WINDOWS = textwrap.dedent("""\
    import os, socket, sys
    sys.modules["pwd"] = None  # as on Windows: no pwd module,
    del socket.AF_UNIX         # no unix sockets,
    from plone.recipe.zope2zeoserver import ctl
    ctl.WINDOWS = True         # and os.name is "nt".
    sys.exit(ctl.main({zeo_conf!r}, {buildout_dir!r}, sys.argv[1:]))
    """)


def windows_ctl(buildout, tmp_path, dist_dir):
    """A command running bin/zeo as on Windows, with the recipe from the
    checkout's wheel."""
    site = tmp_path / "site"
    wheel, = dist_dir.glob("*.whl")
    zipfile.ZipFile(wheel).extractall(site)
    script = tmp_path / "zeo-windows.py"
    script.write_text(WINDOWS.format(
        zeo_conf=str(buildout.path("parts", "zeo", "etc", "zeo.conf")),
        buildout_dir=str(buildout.dir)))
    env = dict(os.environ, PYTHONPATH=str(site))
    return [sys.executable, str(script)], env


def test_windows(buildout, tmp_path, dist_dir):
    buildout.install()
    command, env = windows_ctl(buildout, tmp_path, dist_dir)

    # Commands that need zdaemon explain, in one line.
    for args in (["start"], ["status"], ["stop"]):
        result = subprocess.run(command + args, env=env, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stderr.startswith("on Windows only 'fg' is available")
        assert "Traceback" not in result.stderr

    # fg runs the server, found under the name buildout gives it there.
    runzeo = buildout.path("parts", "zeo", "bin", "runzeo")
    runzeo.rename(runzeo.with_name("runzeo.exe"))
    # Its own process group stands for the console: Ctrl-C reaches both
    # the control script and the server.
    fg = subprocess.Popen(command + ["fg"], env=env, start_new_session=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: accepts(("127.0.0.1", buildout.port))
                        or fg.poll() is not None, 20)
        assert fg.poll() is None, fg.stdout.read()
        commit(("127.0.0.1", buildout.port), answer=42)
        os.killpg(fg.pid, signal.SIGINT)
        # The control script waited for the server's clean stop (exit 0)
        # instead of killing it.
        assert fg.wait(20) == 0, fg.stdout.read()
        out = fg.stdout.read()
        # Python 3.10's asyncio may report a loop closed at interpreter
        # exit ("Exception ignored in ...__del__"): noise, not a crash.
        assert out.count(b"Traceback") == out.count(b"Exception ignored in"), \
            out
        assert not accepts(("127.0.0.1", buildout.port))
    finally:
        if fg.poll() is None:
            os.killpg(fg.pid, signal.SIGKILL)
            fg.wait(10)
        fg.stdout.close()
    runzeo.with_name("runzeo.exe").rename(runzeo)
    result = buildout.ctl("start")
    assert result.returncode == 0, result.stdout + result.stderr
    assert read(("127.0.0.1", buildout.port), "answer") == 42
