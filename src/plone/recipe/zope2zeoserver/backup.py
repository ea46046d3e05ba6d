"""bin/repozo: ZODB's repozo with the part's path and its FileStorage,
and a mistake reported in one line.

A module of its own, importing nothing repozo does not need: a backup
run from cron pays for every import.
"""

import contextlib
import io
import os
import re
import sys

from ZODB.scripts import repozo

from plone.recipe.zope2zeoserver import resolved


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
    if options.mode == repozo.BACKUP:
        # The first backup of a part goes where -r says (1.x users wrote
        # `bin/repozo -B -r var/backups ...` without making it first).
        os.makedirs(options.repository, exist_ok=True)
    try:
        repozo.main(list(args))
    except SystemExit as e:
        if isinstance(e.code, str):  # repozo's sys.exit(str(error))
            message = re.sub(r"^\[Errno \d+\] ", "", e.code)
            print(f"{prog}: {message}", file=sys.stderr)
            return 1
        raise
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
