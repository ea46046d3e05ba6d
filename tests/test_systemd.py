"""systemd-unit = true: the generated unit is valid and does what it says."""

import configparser
import os
import shlex
import shutil
import signal
import subprocess

import pytest

from conftest import accepts, commit, processes_using, read, wait_for


def unit(buildout, part="zeo"):
    """The unit file's [Service] and [Unit] sections, as systemd reads
    them (one value per key; the keys used here are not repeated)."""
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str
    parser.read(buildout.path("parts", part, "etc", f"{part}.service"))
    return parser


def test_systemd_unit(buildout):
    buildout.install("""
        systemd-unit = true
        stop-timeout = 20
        """)
    path = buildout.path("parts", "zeo", "etc", "zeo.service")
    config = unit(buildout)
    service = config["Service"]
    assert service["ExecStart"] == f"{buildout.path('bin', 'zeo')} fg"
    assert service["ExecReload"] == "/bin/kill -USR2 $MAINPID"
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"
    assert service["WorkingDirectory"] == str(buildout.path("parts", "zeo"))
    assert service["TimeoutStopSec"] == "20"
    assert "User" not in service
    assert config["Install"]["WantedBy"] == "multi-user.target"

    analyze = shutil.which("systemd-analyze")
    if analyze:
        result = subprocess.run([analyze, "verify", str(path)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        # Warnings (unknown keys, bad values) leave the status at 0.
        assert result.stderr.strip() == "", result.stderr

    # What systemd would do: run ExecStart, reload with ExecReload on its
    # MAINPID, stop with SIGTERM (KillSignal's default).
    main = subprocess.Popen(shlex.split(service["ExecStart"]),
                            cwd=service["WorkingDirectory"],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: accepts(("127.0.0.1", buildout.port))
                        or main.poll() is not None, 15)
        assert main.poll() is None
        assert processes_using(buildout.dir) == [main.pid]  # no fork
        commit(("127.0.0.1", buildout.port), via="systemd")
        log = buildout.path("var", "log", "zeo.log")
        os.rename(log, log.with_suffix(".log.1"))
        reload = shlex.split(service["ExecReload"].replace(
            "$MAINPID", str(main.pid)))
        assert subprocess.run(reload, timeout=10).returncode == 0
        assert wait_for(lambda: log.exists()
                        and "Log files reopened" in log.read_text(), 10)
        assert read(("127.0.0.1", buildout.port), "via") == "systemd"
        main.send_signal(signal.SIGTERM)
        # 0: a clean stop, which Restart=on-failure does not restart.
        assert main.wait(20) == 0
    finally:
        if main.poll() is None:
            main.kill()
            main.wait(10)

    # A server that cannot start exits with the status the unit names
    # in RestartPreventExitStatus: systemd does not loop restarting it.
    data_fs = buildout.path("var", "filestorage", "Data.fs")
    data_fs.write_bytes(b"garbage" + data_fs.read_bytes()[7:])
    result = subprocess.run(shlex.split(service["ExecStart"]),
                            cwd=service["WorkingDirectory"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is not a FileStorage file" in result.stderr


def test_systemd_unit_with_effective_user(buildout):
    buildout.install()
    assert not list(buildout.path("parts", "zeo", "etc").glob("*.service"))
    buildout.install("""
        systemd-unit = true
        effective-user = nobody
        """)
    text = buildout.path("parts", "zeo", "etc", "zeo.service").read_text()
    # Started as root, bin/zeo hands var/ to the user and drops to it.
    assert "runs as nobody" in text
    assert "User=" not in text
    assert unit(buildout)["Service"]["ExecStart"].endswith("/bin/zeo fg")


@pytest.mark.parametrize("value", ["yes please"])
def test_bad_systemd_unit_value(buildout, value):
    buildout.write(f"systemd-unit = {value}")
    result = buildout.run(check=False)
    assert result.returncode != 0
    assert f"[zeo] systemd-unit = '{value}': expected true or false" in (
        result.stdout + result.stderr)
