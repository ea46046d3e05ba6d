"""systemd-unit = true and pack-schedule: the generated units are valid
and do what they say."""

import configparser
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from helpers import (ROOT, accepts, another_users_buildout, commit,
                      needs_other_users, new_buildout, output,
                      processes_using, read, start, use_interpreter,
                      wait_for)


def unit(buildout, part="zeo", name=None):
    """A unit file's sections (by default the server's), as systemd reads
    them (one value per key; the keys used here are not repeated)."""
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str
    path = buildout.path("parts", part, "etc", name or f"{part}.service")
    assert path.exists(), path
    parser.read(path)
    return parser


def verify(*paths):
    """systemd-analyze verify PATHS: nothing to say, where it is
    installed."""
    analyze = shutil.which("systemd-analyze")
    if analyze:
        result = subprocess.run([analyze, "verify", *map(str, paths)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        # Warnings (unknown keys, bad values) leave the status at 0.
        assert result.stderr.strip() == "", result.stderr


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

    verify(path)

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


# -- pack-schedule ----------------------------------------------------------

needs_systemd_analyze = pytest.mark.skipif(
    not shutil.which("systemd-analyze"), reason="needs systemd-analyze")


def pack(service, cwd):
    """Run the pack service's ExecStart as systemd would (it has no
    WorkingDirectory: systemd starts it in /)."""
    return subprocess.run(shlex.split(service["ExecStart"]), cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_pack_schedule_without_a_server_unit_packs_the_server(buildout):
    # The server may run under supervisord or bin/zeo start: the timer
    # needs no unit of the server's.
    result = buildout.install("""
        pack-schedule = Sun *-*-* 03:00:00
        pack-days = 0
        """)
    etc = buildout.path("parts", "zeo", "etc")
    assert sorted(path.name for path in etc.glob("zeo*.*")) == [
        "zeo-pack.service", "zeo-pack.timer", "zeo.conf"]
    assert "systemd-analyze" not in output(result)  # nothing to report

    config = unit(buildout, name="zeo-pack.service")
    assert config["Unit"]["Description"] == (
        f"Pack the ZEO server [zeo] of {buildout.dir}")
    assert "After" not in config["Unit"]
    service = config["Service"]
    assert service["Type"] == "oneshot"
    assert service["ExecStart"] == str(buildout.path("bin", "zeopack"))
    assert "User" not in service
    assert "Install" not in config  # the timer starts it
    timer = unit(buildout, name="zeo-pack.timer")
    assert timer["Timer"]["OnCalendar"] == "Sun *-*-* 03:00:00"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["RandomizedDelaySec"] == "5min"
    assert timer["Install"]["WantedBy"] == "timers.target"
    verify(etc / "zeo-pack.service", etc / "zeo-pack.timer")

    start(buildout)
    address = ("127.0.0.1", buildout.port)
    commit(address, answer=1)
    commit(address, answer=2)  # a revision for the pack to remove
    result = pack(service, "/")
    assert result.returncode == 0, output(result)
    # One line, for the journal: what the pack did.
    assert result.stdout.startswith(
        f"packed storage '1' at 127.0.0.1:{buildout.port}, keeping 0 "
        "day(s) of history: ")
    assert result.stdout.count("\n") == 1 and "\r" not in result.stdout
    # pack-keep-old: the file before the pack.
    assert buildout.path("var", "filestorage", "Data.fs.old").exists()
    assert read(address, "answer") == 2


def test_pack_schedule_with_the_server_unit(buildout):
    """Both units of the README, from one part: the server's, and the
    pack timer running a renamed bin/zeopack after it."""
    buildout.install("""
        systemd-unit = true
        pack-schedule = weekly
        zeopack-script-name = pack-zeo
        pack-days = 0
        """)
    etc = buildout.path("parts", "zeo", "etc")
    config = unit(buildout, name="zeo-pack.service")
    assert config["Unit"]["After"] == "zeo.service"
    assert "Wants" not in config["Unit"]  # a stopped server stays stopped
    service = config["Service"]
    assert service["ExecStart"] == str(buildout.path("bin", "pack-zeo"))
    assert not buildout.path("bin", "zeopack").exists()
    assert unit(buildout, name="zeo-pack.timer")["Timer"][
        "OnCalendar"] == "weekly"
    verify(etc / "zeo.service", etc / "zeo-pack.service",
           etc / "zeo-pack.timer")

    # What systemd would do: the server unit's ExecStart, then the timer
    # starting the pack service.
    server = unit(buildout)["Service"]
    main = subprocess.Popen(shlex.split(server["ExecStart"]),
                            cwd=server["WorkingDirectory"],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        address = ("127.0.0.1", buildout.port)
        assert wait_for(lambda: accepts(address) or main.poll() is not None,
                        15)
        commit(address, answer=1)
        commit(address, answer=2)
        result = pack(service, "/")
        assert result.returncode == 0, output(result)
        assert "packed storage '1'" in result.stdout
        assert "keeping 0 day(s) of history" in result.stdout
        assert buildout.path("var", "filestorage", "Data.fs.old").exists()
        assert read(address, "answer") == 2
    finally:
        main.send_signal(signal.SIGTERM)
        main.wait(20)

    # The server down, the pack fails at once, saying why: the service
    # fails, and `systemctl --failed` shows it.
    result = pack(service, "/")
    assert result.returncode == 1
    assert "is it running?" in result.stderr


def readme_block_after(intro):
    """The literal block of README.rst after the line ending in INTRO."""
    text = (ROOT / "README.rst").read_text()
    lines = text[text.index(intro + "::\n"):].splitlines()[2:]
    block = []
    for line in lines:
        if line and not line.startswith("    "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip() + "\n"


def without_comments(text):
    return "".join(line for line in text.splitlines(keepends=True)
                   if not line.startswith("#"))


def test_pack_schedule_with_effective_user_as_the_readme_shows(buildout):
    buildout.install("""
        effective-user = nobody
        systemd-unit = true
        pack-schedule = Sun *-*-* 03:00:00
        """)
    service = unit(buildout, name="zeo-pack.service")["Service"]
    # bin/zeopack is a client: it runs as that user from the start.
    assert service["User"] == "nobody"
    etc = buildout.path("parts", "zeo", "etc")
    for name in ("zeo-pack.service", "zeo-pack.timer"):
        text = without_comments((etc / name).read_text()).replace(
            str(buildout.dir), "/srv/site").replace("User=nobody",
                                                    "User=zeo")
        assert text == readme_block_after(
            f"``parts/zeo/etc/{name}``, without its comments"), name


@needs_other_users
def test_the_pack_service_packs_as_effective_user(dist_dir):
    with another_users_buildout(dist_dir) as (buildout, user, python):
        buildout.install(f"""
            effective-user = {user.pw_name}
            pack-schedule = Sun *-*-* 03:00:00
            pack-days = 0
            """)
        zeopack = buildout.path("bin", "zeopack")
        if python != sys.executable:
            use_interpreter(buildout, python)
            lines = zeopack.read_text().splitlines(keepends=True)
            zeopack.write_text(f"#!{python}\n" + "".join(lines[1:]))
        service = unit(buildout, name="zeo-pack.service")["Service"]
        assert service["User"] == user.pw_name
        start(buildout)
        address = ("127.0.0.1", buildout.port)
        commit(address, answer=1)
        commit(address, answer=2)
        # User=: systemd runs ExecStart as that user.
        result = subprocess.run(
            ["runuser", "-u", user.pw_name, "--",
             *shlex.split(service["ExecStart"])], cwd="/",
            capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, output(result)
        assert "packed storage '1'" in result.stdout
        old = buildout.path("var", "filestorage", "Data.fs.old")
        assert old.stat().st_uid == user.pw_uid  # the server packed


@needs_systemd_analyze
@pytest.mark.parametrize("value", ["Sunday at dawn", "--help"])
def test_bad_pack_schedule_is_refused_before_anything_changes(
        buildout, value):
    buildout.install()
    buildout.write(f"pack-schedule = {value}")
    result = buildout.run(check=False)
    assert result.returncode != 0
    assert (f"[zeo] pack-schedule = {value!r}: systemd does not understand "
            "this calendar expression (Failed to parse calendar "
            f"specification {value!r}: Invalid argument); see "
            "systemd.time(7), e.g. 'Sun *-*-* 03:00:00' or 'weekly'\n"
            ) in output(result)
    assert "Traceback" not in output(result)
    # Refused when the options are read: the installed part stays.
    assert buildout.path("parts", "zeo", "etc", "zeo.conf").exists()
    assert not buildout.path("parts", "zeo", "etc",
                             "zeo-pack.timer").exists()


@pytest.mark.parametrize("options, message", [
    ("pack-schedule = weekly\n  daily",
     "[zeo] pack-schedule = 'weekly\\ndaily': give one calendar "
     "expression, on one line"),
    ("pack-schedule = weekly\nzeopack =",
     "[zeo] pack-schedule = 'weekly': zeopack = (empty) makes no "
     "bin/zeopack for the timer to run: remove that line to get the "
     "recipe's bin/zeopack, or remove pack-schedule"),
])
def test_pack_schedule_mistakes(buildout, options, message):
    buildout.write(options)
    result = buildout.run(check=False)
    assert result.returncode != 0
    assert message in output(result)


def path_without(name, directory):
    """A PATH like this one without command NAME: DIRECTORY with links to
    every other command."""
    directory.mkdir()
    for entry in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(entry):
            continue
        for command in os.listdir(entry):
            link = directory / command
            if command != name and not os.path.lexists(link):
                link.symlink_to(os.path.join(entry, command))
    return str(directory)


def test_pack_schedule_without_systemd_analyze(buildout, tmp_path,
                                               monkeypatch):
    monkeypatch.setenv("PATH", path_without("systemd-analyze",
                                            tmp_path / "bin"))
    result = buildout.install("pack-schedule = Sunday at dawn")
    # Unchecked, the expression is written as it is: systemd will say.
    assert unit(buildout, name="zeo-pack.timer")["Timer"][
        "OnCalendar"] == "Sunday at dawn"
    assert ("[zeo] pack-schedule = 'Sunday at dawn': systemd-analyze is "
            "not installed, so neither the calendar expression nor "
            "zeo-pack.service and zeo-pack.timer were checked"
            ) in output(result)


def fake_systemd_analyze(directory, verify_says, status):
    """A systemd-analyze first on PATH whose verify prints VERIFY_SAYS
    and exits with STATUS (calendar is the real one's, or accepts)."""
    directory.mkdir()
    real = shutil.which("systemd-analyze")
    calendar = f'exec {real} "$@"' if real else "exit 0"
    script = directory / "systemd-analyze"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$1" = calendar ]; then {calendar}; fi
        echo "{verify_says}" >&2
        exit {status}
        """))
    script.chmod(0o755)
    return f"{directory}{os.pathsep}{os.environ['PATH']}"


def test_verify_failing_for_its_own_reasons_is_skipped(buildout, tmp_path,
                                                       monkeypatch):
    # What systemd-analyze verify says in containers without /proc or
    # cgroups: nothing about our units.
    monkeypatch.setenv("PATH", fake_systemd_analyze(
        tmp_path / "bin", "Failed to initialize manager: Operation not "
        "permitted", 1))
    result = buildout.install("pack-schedule = weekly")
    assert ("[zeo] pack-schedule = 'weekly': systemd-analyze verify could "
            "not check zeo-pack.service and zeo-pack.timer: Failed to "
            "initialize manager: Operation not permitted") in output(result)
    assert unit(buildout, name="zeo-pack.timer")["Timer"][
        "OnCalendar"] == "weekly"


def test_verify_refusing_our_units_stops_buildout(buildout, tmp_path,
                                                  monkeypatch):
    etc = buildout.path("parts", "zeo", "etc")
    said = f"{etc}/zeo-pack.timer:13: Unknown key 'Bogus' in section [Timer]"
    monkeypatch.setenv("PATH", fake_systemd_analyze(tmp_path / "bin",
                                                    said, 1))
    buildout.write("pack-schedule = weekly")
    result = buildout.run(check=False)
    assert result.returncode != 0
    assert ("[zeo] pack-schedule = 'weekly': systemd-analyze verify refuses "
            f"the units written: {said}\n") in output(result)


def test_a_percent_sign_in_the_path_is_escaped(tmp_path, dist_dir, eggs_dir):
    """systemd expands %i and the like in unit files, descriptions too:
    a buildout directory with a % in its name is written as %%."""
    with new_buildout(tmp_path / "site%i", dist_dir, eggs_dir) as b:
        b.install("""
            systemd-unit = true
            pack-schedule = weekly
            """)
        for name in ("zeo.service", "zeo-pack.service", "zeo-pack.timer"):
            text = b.path("parts", "zeo", "etc", name).read_text()
            [description] = [line for line in text.splitlines()
                             if line.startswith("Description=")]
            assert "site%%i" in description, (name, description)
            assert "site%i" not in description.replace("%%", ""), name
