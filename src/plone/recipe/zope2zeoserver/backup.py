"""bin/repozo: ZODB's repozo with the part's path, and a mistake
reported in one line.

A module of its own, importing nothing repozo does not need: a backup
run from cron pays for every import.
"""

import contextlib
import io
import os
import re
import sys

from ZODB.scripts import repozo


def repozo_main(args=None):
    """repozo prints its whole manual before saying what was wrong with the
    arguments, and its errors with the errno in brackets."""
    if args is None:
        args = sys.argv[1:]
    prog = os.path.basename(sys.argv[0])
    manual = io.StringIO()
    try:
        with contextlib.redirect_stderr(manual):
            options = repozo.parseargs(list(args))
    except SystemExit as e:
        if not e.code:  # -h: the manual went to stdout
            return 0
        lines = manual.getvalue().strip().splitlines()
        complaint = lines[-1] if lines else "wrong arguments"
        print(f"{prog}: {complaint} (see {prog} -h)", file=sys.stderr)
        return e.code
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
