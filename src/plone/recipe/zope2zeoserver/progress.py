"""What long work by our tools (bin/zeopack, bin/repozo -B) says while it
runs and when it ends: sizes and times as people read them, and a line
on a terminal redrawn in place with a carriage return.

The line is drawn only on a terminal: under cron, CI, systemd or
supervisord nothing of it is written, not even a carriage return.  It
claims no more than it knows: a percentage only against a known total,
and below 100 % until the work has returned.  Standard library only;
the tools import it when they start long work, the server never.
"""

import os
import sys
import threading
import time

INTERVAL = 0.25  # seconds between redraws, and the longest a stop waits


def size_text(size):
    """SIZE in bytes as people read it: '812 bytes', '10.8 KB', '5.0 MB'."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else \
                f"{size:.1f} {unit}"
        size /= 1024


def elapsed_text(seconds):
    """'0.4 s', '12.3 s', '2 min 05 s', '1 h 02 min'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def percent(done, total):
    """How much of TOTAL is DONE, in whole percent below 100, while the
    work runs; None when that is not known: no total, or more done than
    the total said (then the total was wrong)."""
    if not total or done is None or done > total:
        return None
    return min(99, done * 100 // total)


def line_text(label, elapsed, done=None, total=None):
    """The progress line: 'LABEL: 3.2 MB of 45.6 MB (7 %), 4.1 s',
    without a known total 'LABEL: 3.2 MB, 4.1 s', before any byte
    'LABEL: 4.1 s'."""
    parts = []
    if done is not None:
        share = percent(done, total)
        if share is None:
            parts.append(size_text(done))
        else:
            parts.append(f"{size_text(done)} of {size_text(total)} "
                         f"({share} %)")
    parts.append(elapsed_text(elapsed))
    return f"{label}: {', '.join(parts)}"


class NewFile:
    """The file at PATH that the work writes anew (a FileStorage's .pack,
    repozo's tmp.tmp): its size once it was written since we started,
    None before (a file left by an earlier run does not count)."""

    def __init__(self, path):
        self.path = path
        self.left = self.identity()

    def identity(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def size(self):
        now = self.identity()
        if now is None or now == self.left:
            return None
        return now[2]


def is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


class Ticker:
    """A context manager redrawing `line_text(*STATE(), elapsed)` on
    STREAM every INTERVAL seconds from a thread of its own, from when it
    is entered until it is left, then leaving the line blank.  STATE()
    gives (label, done, total).  On anything but a terminal it does
    nothing at all.

    When STREAM is sys.stderr, what else is written there meanwhile
    (warnings of the libraries, repozo -v) replaces sys.stderr's line
    and the line is drawn again below it."""

    def __init__(self, stream, state, interval=INTERVAL):
        self.stream = stream
        self.state = state
        self.interval = interval
        self.active = is_terminal(stream)
        self.width = 0  # of the line drawn last
        self.stopped = threading.Event()
        self.lock = threading.RLock()  # one writer at a time
        self.midline = False  # others wrote a line not ended yet
        self.thread = None
        self.previous_stderr = None

    def __enter__(self):
        if self.active:
            self.started = time.monotonic()
            if self.stream is sys.stderr:
                self.previous_stderr = sys.stderr
                sys.stderr = Above(self)
            self.redraw()  # at once: the user sees the work has begun
            self.thread = threading.Thread(
                target=self.run, name="progress", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc_info):
        if self.thread is not None:
            with self.lock:
                self.stopped.set()
                self.blank()
                if self.previous_stderr is not None:
                    sys.stderr = self.previous_stderr
            self.thread.join(self.interval * 4)

    def run(self):
        while not self.stopped.wait(self.interval):
            self.redraw()

    def redraw(self):
        try:
            self.draw()
        except Exception:  # e.g. the stream was closed: the work goes on
            pass

    def draw(self):
        label, done, total = self.state()
        text = line_text(label, time.monotonic() - self.started, done, total)
        # A line longer than the terminal would wrap, and a carriage
        # return would then redraw only its last row.
        text = text[:self.columns() - 1]
        with self.lock:
            if self.stopped.is_set() or self.midline:
                return
            self.write("\r" + text + " " * (self.width - len(text)))
            self.width = len(text)

    def blank(self):
        if self.width:
            self.write("\r" + " " * self.width + "\r")
            self.width = 0

    def above(self, text):
        """Write TEXT where the line is; the line comes back below."""
        with self.lock:
            self.blank()
            self.write(text)
            if text:
                self.midline = not text.endswith("\n")
                if not self.midline:
                    self.redraw()

    def columns(self):
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            columns = 0
        return columns or 80  # 0: a terminal that does not say

    def write(self, text):
        self.stream.write(text)
        self.stream.flush()


class Above:
    """sys.stderr while a `Ticker` draws there: a text written goes
    above the line."""

    def __init__(self, ticker):
        self.ticker = ticker

    def write(self, text):
        self.ticker.above(text)
        return len(text)

    def __getattr__(self, name):
        return getattr(self.ticker.stream, name)
