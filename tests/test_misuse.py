"""Command-line mistakes at run time: bin/<part>, bin/zeopack, bin/repozo.

(Mistakes in buildout.cfg are in test_options.py.)  Each mistake gets one
line on stderr naming the culprit, a non-zero exit status, no traceback.
"""

import concurrent.futures

import pytest

from helpers import Buildout


# (script, arguments, exit status, text the line must contain)
MISUSES = [
    # The control script; a stopped server.
    ("zeo", ["frobnicate"], 2, "'frobnicate'"),
    ("zeo", ["--bogus"], 2, "--bogus"),
    ("zeo", ["kill", "BOGUS"], 2, "'BOGUS'"),
    ("zeo", ["kill", "99999"], 2, "'99999'"),
    ("zeo", ["kill"], 1, "not running"),
    ("zeo", ["status", "-x"], 4, "'-x'"),
    ("zeo", ["status", "-l", "extra"], 4, "'-l extra'"),
    ("zeo", ["stats", "--bogus"], 2, "--bogus"),
    ("zeo", ["stats", "--timeout", "soon"], 2, "'soon'"),
    ("zeo", ["stats", "--timeout"], 2, "--timeout"),
    ("zeo", ["check", "--lock-warning", "abc"], 3, "'abc'"),
    ("zeo", ["check", "--lock-critical", "-1"], 3, "'-1'"),
    ("zeo", ["show", "bogus"], 2, "'bogus'"),
    ("zeo", ["help", "bogus"], 2, "'bogus'"),
    ("zeo", ["logtail", "/nonexistent/zeo.log"], 1, "/nonexistent/zeo.log"),
    # zeopack
    ("zeopack", ["-d", "abc"], 2, "'abc'"),
    ("zeopack", ["-d", "-1"], 2, "'-1'"),
    ("zeopack", ["--frobnicate"], 2, "--frobnicate"),
    ("zeopack", ["-S"], 2, "-S"),
    ("zeopack", ["extra"], 2, "extra"),
    ("zeopack", ["--timeout", "x"], 2, "'x'"),
    ("zeopack", [], 1, "is it running?"),
    # repozo
    ("repozo", [], 1, "--backup, --recover or --verify"),
    ("repozo", ["--bogus"], 1, "--bogus"),
    ("repozo", ["-B"], 1, "--repository"),
    ("repozo", ["-B", "-R", "-r", "var"], 1, "mutually exclusive"),
    ("repozo", ["-B", "-r", "var", "-f", "/nonexistent/Data.fs"], 1,
     "/nonexistent/Data.fs"),
    ("repozo", ["-R", "-r", "var", "-D", "notadate", "-o", "x.fs"], 1,
     "notadate"),
]


@pytest.fixture(scope="module")
def installed(tmp_path_factory, dist_dir, eggs_dir):
    """One buildout for every case: none of them starts a server."""
    directory = tmp_path_factory.mktemp("misuse")
    buildout = Buildout(directory, dist_dir, eggs_dir)
    buildout.install()
    yield buildout
    buildout.stop_all()


def test_misuses_get_one_line_naming_the_culprit(installed):
    def run(case):
        script, args, _, _ = case
        return installed.script(script, *args, timeout=60, input="")

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, MISUSES))
    failures = []
    for (script, args, status, culprit), result in zip(MISUSES, results):
        lines = result.stderr.strip().splitlines()
        problems = []
        if result.returncode != status:
            problems.append(f"exit status {result.returncode}, not {status}")
        if len(lines) != 1:
            problems.append(f"{len(lines)} lines on stderr")
        elif culprit not in lines[0]:
            problems.append(f"{culprit!r} not named")
        if "Traceback" in result.stdout + result.stderr:
            problems.append("a traceback")
        if problems:
            failures.append(f"{script} {' '.join(args)}: "
                            f"{', '.join(problems)}:\n{result.stderr}")
    assert not failures, "\n".join(failures)
    assert installed.ctl("status").returncode == 3
