"""The server's log and zdaemon's transcript as the control script
reads them: what was written since a mark, why a start failed, and
`logtail`'s following.  Standard library only."""

import os
import re
import sys
import time

from plone.recipe.zope2zeoserver.files import file_size


def new_lines(path, mark):
    """The lines of PATH after byte MARK (the last 10 lines if MARK is
    None, or the file was replaced since), or [] if it cannot be read."""
    size = file_size(path)
    if size is None:
        return []
    if mark is None or mark > size:
        return tail(path, 10)
    with open(path, "rb") as f:
        f.seek(mark)
        data = f.read(1 << 20).decode("utf-8", "replace")
    return [line + "\n" for line in data.splitlines()]


# The last line of a traceback ("ZODB...FileStorageFormatError: path").
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(Error|Exception)\b.*")


def failure_reason(lines):
    """Why the server stopped, from what it printed: its last "Error: ..."
    line (ours and ZEO's refusals), else the last line of a traceback."""
    for line in reversed(lines):
        line = line.strip()
        if line.startswith("Error: "):
            return line[len("Error: "):]
        if EXCEPTION_LINE.match(line):
            return line
    return None


def tail(path, count):
    """The last COUNT lines of PATH, or [] if it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            data = f.read().decode("utf-8", "replace")
    except (OSError, TypeError):
        return []
    return [line + "\n" for line in data.splitlines()[-count:]]


def follow(path, count=10, interval=0.2):
    """Print the last COUNT lines of PATH, then whatever is appended to
    it, until interrupted (tail -f)."""
    out = sys.stdout.buffer
    with open(path, "rb") as f:
        # The last lines up to where following starts, read in one go: a
        # line written meanwhile is printed once, after them.
        end = f.seek(0, os.SEEK_END)
        f.seek(max(0, end - 8192))
        out.writelines(f.read(end - f.tell()).splitlines(True)[-count:])
        out.flush()
        while True:
            time.sleep(interval)
            if os.fstat(f.fileno()).st_size < f.tell():
                out.write(b"==> file truncated <==\n")
                f.seek(0)
            data = f.read()
            if data:
                out.write(data)
                out.flush()
