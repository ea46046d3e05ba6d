"""bin/repozo: ZODB's repozo with the part's path and its FileStorage,
and a mistake reported in one line.  A backup (-B) shows how far it got
on the terminal (stderr) and ends with a line on stdout saying what it
wrote.

A module of its own, importing nothing repozo does not need: a backup
run from cron pays for every import.
"""

import contextlib
import io
import os
import re
import sys
import time

from ZODB.scripts import repozo

from plone.recipe.zope2zeoserver import resolved
from plone.recipe.zope2zeoserver.files import file_size


FILE_REQUIRED = "--file is required in backup mode"  # repozo's complaint


def repozo_main(zeo_conf, buildout_dir, args=None, script=None):
    """bin/repozo: -B without -f backs up the part's first FileStorage
    (from its resolved.conf).  SCRIPT: a 1.x-style repozo (the repozo
    option) to run instead."""
    if args is None:
        args = sys.argv[1:]
    if script:
        from plone.recipe.zope2zeoserver.pack import run_script
        return run_script(script, (), args)
    prog = os.path.basename(sys.argv[0])
    options, complaint = parse(args)
    if complaint == FILE_REQUIRED:
        try:
            files = resolved.load(zeo_conf, buildout_dir).files
        except resolved.Unusable as e:
            print(f"{prog}: {e}", file=sys.stderr)
            return 1
        if files:
            args = [*args, "-f", next(iter(files.values()))]
            options, complaint = parse(args)
    if complaint:
        print(f"{prog}: {complaint} (see {prog} -h)", file=sys.stderr)
        return 1
    if options is None:  # -h: the manual went to stdout
        return 0
    watch = None
    if options.mode == repozo.BACKUP:
        # The first backup of a part goes where -r says (1.x users wrote
        # `bin/repozo -B -r var/backups ...` without making it first).
        os.makedirs(options.repository, exist_ok=True)
        watch = BackupWatch(options)
    try:
        with watch.watching() if watch else contextlib.nullcontext():
            repozo.main(list(args))
    except SystemExit as e:
        if isinstance(e.code, str):  # repozo's sys.exit(str(error))
            message = re.sub(r"^\[Errno \d+\] ", "", e.code)
            print(f"{prog}: {message}", file=sys.stderr)
            return 1
        raise
    if watch:
        print(watch.summary())
    return 0


def parse(args):
    """(repozo's options, None), (None, its complaint), or (None, None)
    after -h.  repozo prints its whole manual before saying what was
    wrong with the arguments: only the last line is kept."""
    manual = io.StringIO()
    try:
        with contextlib.redirect_stderr(manual):
            return repozo.parseargs(list(args)), None
    except SystemExit as e:
        if not e.code:
            return None, None
        lines = manual.getvalue().strip().splitlines()
        return None, lines[-1] if lines else "wrong arguments"


class BackupWatch:
    """What repozo -B with OPTIONS (repozo's) does: which backup it
    decides on, how much of it is written (repozo copies into tmp.tmp in
    the repository, then renames that), the file it leaves."""

    def __init__(self, options):
        from plone.recipe.zope2zeoserver import progress

        self.options = options
        self.started = time.monotonic()
        self.name = os.path.basename(options.file)
        self.before = set(data_files(options.repository))
        self.copy = progress.NewFile(
            os.path.join(options.repository, "tmp.tmp"))
        self.kind = None  # "full" or "incremental", once repozo decided
        self.total = None

    def decided(self, kind, start):
        """Repozo copies the file from START on, as a KIND backup."""
        self.kind = kind
        self.total = backup_total(file_size(self.options.file),
                                  start, self.options.gzip)

    def state(self):
        """(label, bytes copied, bytes to copy) for the progress line."""
        if self.kind is None:
            if self.before and not self.options.full:
                return (f"backing up {self.name} (comparing with the last "
                        "backup)", None, None)
            return f"backing up {self.name}", None, None
        label = f"{self.kind} backup of {self.name}"
        if self.options.gzip:  # the bytes written are not the file's
            label += " (compressed)"
        return label, self.copy.size(), self.total

    @contextlib.contextmanager
    def watching(self):
        """Meanwhile, learn repozo's decision (from the functions it calls
        for it) and draw the progress line on a terminal (below what
        repozo -v writes there)."""
        from plone.recipe.zope2zeoserver import progress

        full, incremental = repozo.do_full_backup, repozo.do_incremental_backup

        def do_full_backup(options):
            self.decided("full", 0)
            return full(options)

        def do_incremental_backup(options, reposz, repofiles):
            self.decided("incremental", reposz)
            return incremental(options, reposz, repofiles)

        repozo.do_full_backup = do_full_backup
        repozo.do_incremental_backup = do_incremental_backup
        try:
            with progress.Ticker(sys.stderr, self.state):
                yield
        finally:
            repozo.do_full_backup = full
            repozo.do_incremental_backup = incremental

    def summary(self):
        """What the backup did, from its start until now."""
        from plone.recipe.zope2zeoserver.progress import elapsed_text
        from plone.recipe.zope2zeoserver.progress import size_text

        elapsed = elapsed_text(time.monotonic() - self.started)
        written = sorted(set(data_files(self.options.repository))
                         - self.before)
        if self.kind is None or not written:
            return (f"no backup of {self.options.file} written: it has not "
                    f"changed since the last backup, {elapsed}")
        path = os.path.join(self.options.repository, written[-1])
        return (f"{self.kind} backup of {self.options.file}: {path}, "
                f"{size_text(os.path.getsize(path))}, {elapsed}")


def data_files(repository):
    """The names of the backups in REPOSITORY (repozo's .fs, .deltafs,
    and their gzipped .fsz, .deltafsz)."""
    try:
        return [name for name in os.listdir(repository)
                if repozo.is_data_file(name)]
    except OSError:
        return []


def backup_total(size, start, gzip):
    """How many bytes a backup of a file of SIZE from START on writes;
    None when that is not known: no file, or compressed (-z)."""
    if size is None or gzip:
        return None
    return max(0, size - start)
