"""Benchmark this recipe against plone.recipe.zeoserver and plain ZEO.

    make bench          # medians of 5 interleaved runs, 100 MB database
    make bench-smoke    # --quick: one run each, 5 MB; checks that the
                        # benchmark still works, asserts nothing about time

Everything happens in a temporary directory, servers on free ports of
127.0.0.1 (see setups.py for how each side is set up).  Wheels, venvs and
test databases are made once and kept in the cache directory
(bench/.cache).  Prints one Markdown table: medians, ratios and the
targets they are held against (not judged in --quick mode).
"""

import argparse
import datetime
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import setups
import workload
from setups import Buildout, PlainZEO, timed


HERE = Path(__file__).resolve().parent
RECIPE = "plone.recipe.zope2zeoserver"
DATABASE_VERSION = 1  # bump when workload.make_database changes


class Context:
    """The setups of one benchmark run, and the files they share."""

    def __init__(self, work, cache, args):
        self.work, self.cache, self.args = work, cache, args
        self.setups = []

    def prepare(self):
        """Get wheels and venvs, install three buildouts, set up plain ZEO."""
        work, cache = self.work, self.cache
        wheel = setups.build_wheel(work / "dist", self.args.checkout)
        wheels = setups.dependency_wheels(cache, wheel)
        ref_wheels, version = setups.reference_wheels(cache)
        buildout = setups.buildout_venv(cache) / "buildout"
        eggs = work / "eggs"
        self.ours = self.buildout(Buildout(
            "this recipe", work / "ours", buildout, RECIPE,
            [wheel.parent, wheels], eggs))
        self.ref = self.buildout(Buildout(
            f"{setups.REFERENCE} {version}", work / "reference",
            buildout, setups.REFERENCE, [ref_wheels], eggs))
        self.empty = self.buildout(Buildout(
            "empty buildout", work / "empty", buildout, None,
            [wheel.parent, wheels], eggs))
        self.plain = PlainZEO("plain ZEO", work / "plain",
                              setups.zeo_venv(cache, wheels))
        self.setups.append(self.plain)

    def buildout(self, setup):
        self.setups.append(setup)
        setup.run_buildout()  # installs; fills the eggs directory
        return setup

    def database(self):
        """A Data.fs (and index) of --db-mb megabytes, half garbage; made
        once and kept in the cache directory."""
        def make(directory):
            directory.mkdir(parents=True)
            workload.make_database(directory / "Data.fs", self.args.db_mb)
        return setups.cached(self.cache, f"db-{self.args.db_mb:g}mb",
                             f"v{DATABASE_VERSION}", make) / "Data.fs"

    def cleanup(self):
        """Stop every server this run started."""
        for setup in self.setups:
            setup.cleanup()


def rounds(ctx, setups_, measure):
    """Medians of MEASURE(setup) -> {metric: value} over --repeat rounds.

    Each round runs every setup once, in an order rotated from round to
    round, so that load from elsewhere on the machine hits all alike.  In
    full mode an unmeasured round warms caches first.
    """
    samples = {}
    count = ctx.args.repeat + (0 if ctx.args.quick else 1)
    for n in range(count):
        k = n % len(setups_)
        for setup in setups_[k:] + setups_[:k]:
            values = measure(setup)
            if n or ctx.args.quick:
                for metric, value in values.items():
                    samples.setdefault((setup.name, metric), []).append(value)
    return {key: statistics.median(values)
            for key, values in samples.items()}


def restore(template, data_fs):
    """Put a copy of TEMPLATE (and its index) at DATA_FS, nothing else."""
    data_fs.parent.mkdir(parents=True, exist_ok=True)
    for old in data_fs.parent.glob(data_fs.name + "*"):
        old.unlink()
    for suffix in ("", ".index"):
        shutil.copyfile(f"{template}{suffix}", f"{data_fs}{suffix}")


def clear(data_fs):
    for old in data_fs.parent.glob(data_fs.name + "*"):
        old.unlink()


# -- the benchmarks: each returns rows for the table ----------------------

def bench_buildout(ctx):
    ours, ref, empty = ctx.ours, ctx.ref, ctx.empty
    m = rounds(ctx, [ours, ref, empty], lambda s: {"": s.run_buildout()})
    rerun = "`bin/buildout` no-op rerun"
    rows = [overhead_row(rerun, m[ours.name, ""], empty.name,
                         m[empty.name, ""], limit=0.050),
            ratio_row(rerun, m[ours.name, ""], ref.name, m[ref.name, ""],
                      0.7),
            # No recipe can do better than no part at all.
            context_row("`bin/buildout` rerun without parts (the floor)",
                        m[empty.name, ""], ref.name, m[ref.name, ""])]

    def cold(setup):
        directory = Path(tempfile.mkdtemp(dir=ctx.work))
        try:
            return {"": setup.clone(directory).run_buildout()}
        finally:
            shutil.rmtree(directory)

    m = rounds(ctx, [ours, ref], cold)
    rows.append(ratio_row("cold `bin/buildout` (eggs cached)",
                          m[ours.name, ""], ref.name, m[ref.name, ""], 1.0))
    return rows


def bench_control(ctx):
    ours, ref, plain = ctx.ours, ctx.ref, ctx.plain

    def cycle(setup):
        values = {"start": setup.start()}
        try:
            if setup is not plain:  # runzeo alone has no commands
                values["status"] = setup.status()
            if setup is ours:  # the reference has no check command
                values["check"] = setup.check()
        finally:
            values["stop"] = setup.stop()
        return values

    m = rounds(ctx, [ours, ref, plain], cycle)
    # The floor of every command: Python starting and stopping.
    python = statistics.median(
        timed([sys.executable, "-c", "pass"]) for _ in range(5))
    return [
        # Issue 13's targets.
        ratio_row("`start` until the port accepts and the command returned",
                  m[ours.name, "start"], ref.name, m[ref.name, "start"], 0.4),
        context_row("plain runzeo until the port accepts (the floor of "
                    "`start`)", m[plain.name, "start"], ref.name,
                    m[ref.name, "start"]),
        ratio_row("`stop` until the process is gone", m[ours.name, "stop"],
                  ref.name, m[ref.name, "stop"], 0.2),
        Row("`status`", fmt(m[ours.name, "status"]), ref.name,
            fmt(m[ref.name, "status"]), fmt(m[ours.name, "status"]),
            "<= 0.05 s", m[ours.name, "status"] <= 0.05),
        Row("`check` (monitoring plugin)", fmt(m[ours.name, "check"]),
            "python -c pass (the floor)", fmt(python),
            fmt(m[ours.name, "check"]), "<= 0.1 s",
            m[ours.name, "check"] <= 0.1),
    ]


def bench_pack(ctx):
    template = ctx.database()

    def pack(setup):
        restore(template, setup.data_fs)
        setup.start()
        try:
            seconds = timed(setup.pack_command())
        finally:
            setup.stop()
        if setup.data_fs.stat().st_size > 0.75 * template.stat().st_size:
            raise RuntimeError(f"{setup.name}: pack removed no garbage")
        return {"": seconds}

    m = rounds(ctx, [ctx.ours, ctx.plain], pack)
    what = f"zeopack of a {ctx.args.db_mb:g} MB database with 50% garbage"
    return [ratio_row(what, m[ctx.ours.name, ""],
                      "ClientStorage.pack on plain ZEO",
                      m[ctx.plain.name, ""], 1.05)]


def bench_repozo(ctx):
    template = ctx.database()

    def backup(setup):
        backups = Path(tempfile.mkdtemp(dir=ctx.work))
        try:
            seconds = timed(setup.repozo_command(template, backups))
            if not list(backups.glob("*.fs")):
                raise RuntimeError(f"{setup.name}: repozo made no backup")
        finally:
            shutil.rmtree(backups)
        return {"": seconds}

    m = rounds(ctx, [ctx.ours, ctx.plain], backup)
    what = f"repozo full backup of the {ctx.args.db_mb:g} MB database"
    return [ratio_row(what, m[ctx.ours.name, ""], "plain repozo",
                      m[ctx.plain.name, ""], 1.05)]


def bench_commits(ctx):
    args = ctx.args

    def commits(setup):
        clear(setup.data_fs)
        setup.start()
        try:
            rate = workload.throughput(setup.port, args.workers, args.seconds)
        finally:
            setup.stop()
        return {"": rate}

    m = rounds(ctx, [ctx.ours, ctx.plain], commits)
    ours, plain = m[ctx.ours.name, ""], m[ctx.plain.name, ""]
    return [Row(f"commits/s, {args.workers} client processes, small objects",
                f"{ours:.0f}/s", "plain runzeo", f"{plain:.0f}/s",
                f"{ours / plain:.2f}x", ">= 0.98x", ours / plain >= 0.98)]


BENCHES = {"buildout": bench_buildout, "control": bench_control,
           "pack": bench_pack, "repozo": bench_repozo,
           "commits": bench_commits}


# -- the table ------------------------------------------------------------

class Row:
    def __init__(self, what, ours, other_name, other, result, target, met):
        self.cells = [what, ours, other_name, other, result, target,
                      "-" if met is None else "yes" if met else "**no**"]


def fmt(seconds):
    return f"{seconds:.3f} s"


def ratio_row(what, ours, other_name, other, limit):
    ratio = ours / other
    return Row(what, fmt(ours), other_name, fmt(other), f"{ratio:.2f}x",
               f"<= {limit}x", ratio <= limit)


def context_row(what, value, other_name, other):
    """A row that judges nothing: what the rows around it are up against."""
    return Row(what, fmt(value), other_name, fmt(other),
               f"{value / other:.2f}x", "-", None)


def overhead_row(what, ours, other_name, other, limit):
    extra = ours - other
    return Row(what, fmt(ours), other_name, fmt(other),
               f"{extra * 1000:+.0f} ms", f"<= +{limit * 1000:.0f} ms",
               extra <= limit)


def table(rows, judge):
    header = ["what", "this recipe", "compared with", "its result",
              "ratio or difference", "target", "met"]
    cells = [row.cells[:-1] + [row.cells[-1] if judge else "-"]
             for row in rows]
    lines = [header, ["---"] * len(header)] + cells
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def machine(args, load_before):
    load = ", ".join(f"{x:.2f}" for x in load_before)
    after = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    mode = "quick (one run each)" if args.quick else (
        f"median of {args.repeat} interleaved runs after one warm-up round")
    return (f"{datetime.date.today()}, {platform.platform()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}; "
            f"{mode}; load average {load} before, {after} after")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one run each, small database, short commit "
                             "run: checks the benchmark works (CI)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="runs per measurement (default 5)")
    parser.add_argument("--db-mb", type=float, default=100,
                        help="size of the pack/backup database in MB")
    parser.add_argument("--seconds", type=float, default=10,
                        help="length of one commit-throughput run")
    parser.add_argument("--workers", type=int, default=8,
                        help="client processes of the commit-throughput run")
    parser.add_argument("--only", default=",".join(BENCHES),
                        help="comma-separated subset of: "
                             + ", ".join(BENCHES))
    parser.add_argument("--cache", type=Path, default=HERE / ".cache",
                        help="where the reference venv and databases are "
                             "kept (default: bench/.cache)")
    parser.add_argument("--checkout", type=Path, default=setups.ROOT,
                        help="benchmark the recipe of another checkout "
                             "(default: this one)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat, args.db_mb, args.seconds = 1, 5, 1
    unknown = set(args.only.split(",")) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    return args


def main(argv=None):
    args = parse_args(argv)
    # Measure what users get: Python caching compiled modules (__pycache__)
    # after the warm-up round.  Some environments (this one's CI, some
    # containers) turn that off, which makes every run compile every
    # module of every recipe again.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    load_before = os.getloadavg()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="zeo-bench-"))
    ctx = Context(work, args.cache, args)
    try:
        ctx.prepare()
        rows = []
        for name in args.only.split(","):
            print(f"running {name} ...", file=sys.stderr, flush=True)
            rows += BENCHES[name](ctx)
    finally:
        ctx.cleanup()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(table(rows, judge=not args.quick))
    print()
    print(machine(args, load_before))
    print(f"benchmark took {time.monotonic() - started:.0f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
