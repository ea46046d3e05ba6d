"""Load figures: N clients committing and reading for S seconds against a
server of this checkout's recipe, conflicts resolved on the server.

    .venv/bin/python bench/load.py [--clients 16] [--seconds 30]

Runs the load of tests/test_load.py (the test keeps it short and checks
correctness; this runs it longer and prints speed): builds the wheel of
the checkout, makes an offline buildout in a temporary directory with the
conflict-resolving egg, starts the server on a free 127.0.0.1 port, runs
the load, checks that no commit was lost or doubled, prints commits/s,
reads/s and commit latencies, and stops the server whatever happens.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from helpers import Buildout, client  # noqa: E402
from test_load import counter_egg, run_load, server_rss_kb  # noqa: E402


def percentile(ordered, p):
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="zeo-load-"))
    buildout = None
    try:
        dist = tmp / "dist"
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
             "--no-build-isolation", "--wheel-dir", str(dist), str(ROOT)],
            check=True, capture_output=True)
        (tmp / "eggs").mkdir()
        (tmp / "buildout").mkdir()
        buildout = Buildout(tmp / "buildout", dist, tmp / "eggs")
        module, egg = counter_egg(buildout)
        buildout.install(f"eggs = {module}",
                         buildout_options="develop = src/counter")
        result = buildout.ctl("start")
        if result.returncode:
            sys.exit(result.stdout + result.stderr)
        pid = int(buildout.path("var", "zeo.pid").read_text())
        sys.path.insert(0, str(egg))
        counter = __import__(module)
        address = ("127.0.0.1", buildout.port)

        rss_before = server_rss_kb(pid)
        workers, watcher = run_load(address, counter.Counter, args.clients,
                                    args.seconds)
        rss_after = server_rss_kb(pid)
        total = sum(len(w.committed) for w in workers)
        with client(address) as db:
            with db.transaction() as conn:
                value = conn.root()["counter"].value
                resolutions = conn.root()["counter"].resolutions
        latencies = sorted(t for w in workers for t in w.latencies)
        reads = sum(w.reads for w in workers)
        errors = sum(len(w.errors) for w in workers)
        print(f"clients               {args.clients}")
        print(f"seconds               {args.seconds:g}")
        print(f"commits confirmed     {total} ({total / args.seconds:.0f}/s)")
        print(f"counter on the server {value} "
              f"({'OK' if value == total else 'LOST OR DOUBLED COMMITS'})")
        print(f"conflicts resolved    at least {resolutions}")
        print(f"unresolved conflicts  {errors}")
        print(f"reads                 {reads} ({reads / args.seconds:.0f}/s)")
        if latencies:
            print(f"commit latency        p50 "
                  f"{percentile(latencies, 0.5) * 1000:.1f} ms, p99 "
                  f"{percentile(latencies, 0.99) * 1000:.1f} ms, max "
                  f"{latencies[-1] * 1000:.1f} ms")
        print(f"invalidations seen    {len(set(watcher.seen))} counter "
              "values by a client that never reconnected")
        print(f"server memory (RSS)   {rss_before // 1024} MB before, "
              f"{rss_after // 1024} MB after")
        return 0 if value == total and not errors else 1
    finally:
        if buildout is not None:
            buildout.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
