"""bin/<part> convert-py3: the part's storages that Python 2 wrote,
converted with zodbupdate --convert-py3, safely.

zodbupdate works on a copy, with the part's sys.path (so the rules of the
application's eggs apply); the copy is checked with ZODB and fstest
before it takes the file's place, and the original stays beside it.
Until then the file is untouched.  Only convert-py3 imports this
module, and ZODB only once a copy is to be checked.
"""

import argparse
import codecs
import contextlib
import os
import shutil
import subprocess
import sys
import time

from plone.recipe.zope2zeoserver.arguments import ArgumentParser
from plone.recipe.zope2zeoserver.arguments import parse_command
from plone.recipe.zope2zeoserver.files import lock_holder
from plone.recipe.zope2zeoserver.files import os_error_text
from plone.recipe.zope2zeoserver.progress import size_text
from plone.recipe.zope2zeoserver.python2 import ORIGINAL_SUFFIX
from plone.recipe.zope2zeoserver.python2 import PYTHON2_HEADER
from plone.recipe.zope2zeoserver.python2 import PYTHON3_HEADER
from plone.recipe.zope2zeoserver.python2 import header

# Beside Data.fs while it is converted: the copy zodbupdate works on.
WORK_SUFFIX = ".converting"
# Files FileStorage keeps beside a data file, and those a pack leaves.
COMPANIONS = (".index", ".lock", ".tmp", ".old", ".pack")
DEFAULT_ENCODING = "utf-8"
DEFAULT_FALLBACK = "latin-1"
# Room needed beside the file, in multiples of its size: the copy; the
# new record of every object zodbupdate writes, first to FileStorage's
# .tmp file, then appended to the copy; the packed file.  Plus the
# indexes and the lock, and what the file system rounds up.
SPACE_FACTOR = 4
SPACE_MARGIN = 1 << 20


class ConversionError(Exception):
    """A storage was not converted; the text says why."""


def parser():
    parser = ArgumentParser(
        prog=f"{os.path.basename(sys.argv[0])} convert-py3",
        description="Convert the storages that Python 2 wrote (FileStorage "
                    "header FS21) with zodbupdate --convert-py3, keeping "
                    "each original as FILE.py2.  The server must be "
                    "stopped.  Storages in Python 3 format are left alone.")
    parser.add_argument(
        "--encoding", default=DEFAULT_ENCODING, type=encoding_name,
        help="encoding of Python 2 strings (default: %(default)s, what "
             "Plone and Zope stored)")
    parser.add_argument(
        "--encoding-fallback", dest="fallbacks", action="append",
        type=encoding_name, metavar="ENCODING",
        help="encoding tried where a rule of the application's eggs "
             "decodes a string that is not valid in --encoding (default: "
             f"{DEFAULT_FALLBACK}; give it more than once to try several)")
    parser.add_argument(
        "--no-fallback", action="store_const", const=[], dest="fallbacks",
        help="no fallback: such a string stops the conversion")
    parser.set_defaults(fallbacks=None)
    return parser


def parse_arguments(arg):
    """(options, None), or (None, exit status) after a usage error or
    help; options.fallbacks is the list of fallback encodings."""
    options, status = parse_command(parser(), arg)
    if options is not None and options.fallbacks is None:
        options.fallbacks = [DEFAULT_FALLBACK]
    return options, status


def encoding_name(name):
    """NAME if Python knows that codec (an argparse type)."""
    try:
        codecs.lookup(name)
    except LookupError:
        raise argparse.ArgumentTypeError(f"unknown encoding {name!r}")
    return name


def convert_storages(storages, part, encoding, fallbacks, log_path,
                     secondaries=(), out=print):
    """Convert those of STORAGES ((name, path, blob dir) of zeo.conf's
    file storages) that Python 2 wrote; report each to OUT.  SECONDARIES:
    the names of ZRS secondaries, which must copy their converted primary
    instead.  Returns the exit status: 0 when nothing is left to
    convert."""
    started = time.monotonic()
    todo = []
    for name, path, blob_dir in storages:
        # A symbolic link (Data.fs on a bigger disk): convert its target.
        path = os.path.realpath(path)
        found = header(path)
        if found == PYTHON2_HEADER and name in secondaries:
            out(f"convert-py3: storage {name} ({path}) is a ZRS secondary: "
                "converted on its own, its history would differ from its "
                "primary's; convert the primary, then give this secondary "
                "an empty file (it copies the primary)", file=sys.stderr)
            return 1
        if found is None:
            out(f"storage {name}: {path} does not exist yet; nothing to "
                "convert")
        elif found == PYTHON3_HEADER:
            out(f"storage {name}: {path} is in Python 3 format already; "
                "unchanged")
        elif found != PYTHON2_HEADER:
            out(f"storage {name}: {path} is not a FileStorage file (it "
                f"starts with {found!r}); left alone")
        else:
            todo.append((name, path, blob_dir))
    if not todo:
        out("nothing to convert")
        return 0
    claimed = {}  # file system -> room the storages before need there
    with contextlib.ExitStack() as locks:
        for name, path, blob_dir in todo:
            try:
                locks.enter_context(locked(path))
                check_can_convert(path, claimed)
            except ConversionError as e:
                out(f"convert-py3: storage {name} ({path}): {e}",
                    file=sys.stderr)
                return 1
            except OSError as e:
                out(f"convert-py3: storage {name} ({path}): "
                    f"{os_error_text(e)}", file=sys.stderr)
                return 1
        try:
            return convert_all(todo, part, encoding, fallbacks, log_path,
                               out, started)
        except KeyboardInterrupt:
            out("convert-py3: interrupted; the storage being converted is "
                "as it was", file=sys.stderr)
            return 130


def convert_all(todo, part, encoding, fallbacks, log_path, out, started):
    failed = 0
    for name, path, blob_dir in todo:
        out(f"storage {name}: converting {path} (written by Python 2) with "
            f"zodbupdate --convert-py3, text as {encoding}, else "
            f"{' or '.join(fallbacks) or 'kept as bytes'}")
        try:
            report = convert_storage(path, encoding, fallbacks, log_path)
        except ConversionError as e:
            out(f"convert-py3: storage {name} was not converted: {e}; "
                f"{path} is as it was; zodbupdate's output is in {log_path}",
                file=sys.stderr)
            failed += 1
            continue
        out(f"  the original is kept as {path}{ORIGINAL_SUFFIX}")
        out(f"  converted in {report['seconds']:.1f} s: {report['objects']}"
            f" objects; {size_text(report['before'])} -> "
            f"{size_text(report['after'])}; ZODB on Python 3 opens it and "
            "fstest finds no error")
        for warning in report["warnings"]:
            out(f"  warning: {warning}")
        if blob_dir:
            out(f"  the blobs in {blob_dir} need no conversion")
    if failed:
        return 1
    out(f"converted {len(todo)} storage(s) in "
        f"{time.monotonic() - started:.1f} s; zodbupdate's output is in "
        f"{log_path}")
    out(f"next: bin/{part} start.  Clients must run ZEO 5 or newer (Plone "
        "5.2 or newer on Python 3).  The converted files start their "
        "history at the conversion (Python 3 cannot read the older "
        f"revisions); the {ORIGINAL_SUFFIX} copies keep it: remove them "
        "when you no longer need them.")
    return 0


@contextlib.contextmanager
def locked(path):
    """Hold PATH's FileStorage lock: no server opens the file meanwhile,
    and one that has it open (an old Python 2 server, a server of
    another buildout) is found."""
    import zc.lockfile
    try:
        lock = zc.lockfile.LockFile(path + ".lock")
        # Made by root, it must still be the server's to open.
        same_owner_and_mode(path + ".lock", path)
    except zc.lockfile.LockError:
        raise ConversionError(
            f"the file is in use by {lock_holder(path + '.lock')}; stop "
            "that server (an old Python 2 one too), then run convert-py3 "
            "again")
    except OSError as e:
        raise ConversionError(
            f"cannot take the file's lock: {os_error_text(e)}; run "
            "convert-py3 as a user who may write there")
    try:
        yield
    finally:
        lock.close()


def check_can_convert(path, claimed):
    """Refuse before anything is written: the original's name is taken,
    or there is not enough room for the converted copy besides what
    CLAIMED ({file system: bytes}) holds for other storages.  A copy left
    by an interrupted run is removed first: it is ours, and takes room."""
    remove_with_companions(path + WORK_SUFFIX)
    original = path + ORIGINAL_SUFFIX
    if os.path.lexists(original) and os.path.samefile(path, original):
        # A second name of the file itself, from a conversion that was
        # interrupted before the converted copy took its place.
        os.unlink(original)
    if os.path.lexists(original):
        raise ConversionError(
            f"{original} exists already (an earlier conversion?); move it "
            "elsewhere, then run convert-py3 again")
    device = os.stat(path).st_dev
    needed = (SPACE_FACTOR * os.path.getsize(path) + SPACE_MARGIN
              + claimed.get(device, 0))
    claimed[device] = needed
    free = shutil.disk_usage(os.path.dirname(path)).free
    if free < needed:
        raise ConversionError(
            f"converting needs {size_text(needed)} free beside it, there "
            f"are {size_text(free)}; make room and run convert-py3 again")


def convert_storage(path, encoding, fallbacks, log_path):
    """Convert the Python 2 file PATH in a copy, check the copy, then put
    it in PATH's place, keeping the original as PATH.py2.  Until the
    last step PATH is untouched; on failure the copy is removed.
    Returns what the report needs."""
    started = time.monotonic()
    work = path + WORK_SUFFIX
    remove_with_companions(work)
    before = os.path.getsize(path)
    try:
        shutil.copyfile(path, work)
        fsync(work)
        run_zodbupdate(work, encoding, fallbacks, log_path)
        objects = check_converted(work)
        # The server may run as another user than this command.
        for made in (work, work + ".index"):
            same_owner_and_mode(made, path)
        replace_original(path, work)
    except BaseException as e:  # Ctrl-C too: the copy is not left behind
        remove_with_companions(work)
        if isinstance(e, OSError):
            raise ConversionError(os_error_text(e))
        raise
    return {"seconds": time.monotonic() - started, "objects": objects,
            "before": before, "after": os.path.getsize(path),
            "warnings": zodbupdate_warnings(log_path)}


def run_zodbupdate(path, encoding, fallbacks, log_path):
    """zodbupdate --convert-py3 on PATH, in a process of its own (it
    configures logging and exits) on this script's sys.path: the part's
    working set, whose eggs may bring rules (entry points zodbupdate
    and zodbupdate.decode).  Its output goes to LOG_PATH.

    --pack: the revisions before the conversion are Python 2 pickles,
    which ZODB on Python 3 cannot read back (a pack keeping a day of
    history fails on them, and so would undo); they stay in the original.
    """
    args = [sys.executable, "-c",
            "import sys; from zodbupdate.main import main; sys.exit(main())",
            "--convert-py3", "--pack", "--file", path, "--encoding",
            encoding]
    if fallbacks:
        args += ["--encoding-fallback", *fallbacks]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} zodbupdate "
                  f"{' '.join(args[3:])}\n")
        log.flush()
        mark = log.tell()
        result = subprocess.run(args, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
    if result.returncode:
        raise ConversionError(
            "zodbupdate failed: " + zodbupdate_reason(log_path, mark))


def zodbupdate_reason(log_path, mark):
    """The line of zodbupdate's output (after MARK) that says why it
    stopped: its own "Stopped processing" line, else the last one."""
    with open(log_path, encoding="utf-8", errors="replace") as f:
        f.seek(mark)
        lines = [line.strip() for line in f if line.strip()]
    for line in lines:
        if line.startswith("Stopped processing"):
            return line
    return lines[-1] if lines else "no output"


def zodbupdate_warnings(log_path):
    """What zodbupdate's last run warned about, worth an operator's
    attention: classes it could not import (their package's rules did
    not apply) and strings decoded by a fallback encoding."""
    with open(log_path, encoding="utf-8", errors="replace") as f:
        run = f.read().rpartition("\n--- ")[2]
    missing = sorted({line.split("Missing factory for ", 1)[1].strip()
                      for line in run.splitlines()
                      if "Missing factory for " in line})
    warnings = []
    if missing:
        warnings.append(
            f"{len(missing)} class(es) cannot be imported here ("
            f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}"
            "): their objects were converted with the generic rules only. "
            "If the packages defining them bring zodbupdate rules (Plone's "
            "do), add them to the part's eggs option, rerun bin/buildout, "
            "put the original back (move FILE.py2 to FILE and FILE.py2.index "
            "to FILE.index) and convert again")
    fallbacks = sum("Encoding fallback to" in line
                    for line in run.splitlines())
    if fallbacks:
        warnings.append(f"{fallbacks} string(s) were not valid in the "
                        "main encoding and were decoded with the fallback")
    return warnings


def check_converted(path):
    """Fail unless ZODB on Python 3 opens PATH, reads its root, and
    fstest finds its transactions sound.  Returns its number of
    objects."""
    import ZODB
    import ZODB.blob
    from ZODB.FileStorage import FileStorage
    from ZODB.scripts import fstest
    if header(path) != PYTHON3_HEADER:
        raise ConversionError(f"the converted copy still starts with "
                              f"{header(path)!r}")
    try:
        fstest.check(path)
    except fstest.FormatError as e:
        raise ConversionError(f"fstest finds the converted copy damaged: {e}")
    try:
        storage = FileStorage(path, read_only=True)
        db = ZODB.DB(storage)
        try:
            connection = db.open()
            for value in connection.root().values():
                # Blobs stay where they are: not opened with the copy.
                if not isinstance(value, ZODB.blob.Blob):
                    getattr(value, "_p_activate", lambda: None)()
            connection.close()
            return len(storage)
        finally:
            db.close()
    except Exception as e:  # what ZODB raises on a bad record varies
        raise ConversionError(f"ZODB cannot read the converted copy: "
                              f"{type(e).__name__}: {e}")


def replace_original(path, work):
    """Put the converted WORK in PATH's place.  PATH's bytes stay as
    PATH.py2 (a second name of the same file, so no copy): at every
    moment PATH is either the original or the converted file, and a
    server never finds it missing.  Should a step fail, the steps
    before it are undone, leaving PATH as it was."""
    original = path + ORIGINAL_SUFFIX
    index = path + ".index"
    try:
        os.link(path, original)
    except FileExistsError:
        raise  # never overwritten (check_can_convert made sure)
    except OSError:  # a file system without hard links: a copy
        copy_original(path, original)
    try:
        if os.path.exists(index):
            os.replace(index, original + ".index")
        os.replace(work, path)
    except OSError:
        if os.path.exists(original + ".index"):
            os.replace(original + ".index", index)
        os.unlink(original)
        raise
    # The data is converted.  Without its new index (should this fail),
    # ZODB builds one at start.
    with contextlib.suppress(OSError):
        os.replace(work + ".index", index)
    remove_with_companions(work)
    fsync(os.path.dirname(path))


def copy_original(path, original):
    """Copy PATH to ORIGINAL where it cannot be linked; a copy cut short
    (the disk filled up meanwhile) is removed, never left to pass for the
    original."""
    size = os.path.getsize(path)
    free = shutil.disk_usage(os.path.dirname(path)).free
    if free < size:
        raise ConversionError(
            f"this file system cannot link {original} to the file, and "
            f"copying it needs {size_text(size)}, there are "
            f"{size_text(free)}; make room and run convert-py3 again")
    try:
        with open(path, "rb") as source, open(original, "xb") as copy:
            shutil.copyfileobj(source, copy)
        shutil.copystat(path, original)
        fsync(original)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(original)
        raise


def same_owner_and_mode(path, reference):
    """Give PATH (if it exists) REFERENCE's mode and, when running as
    root, its owner: this command may run as root for a server that runs
    as effective-user."""
    if not os.path.exists(path):
        return
    shutil.copymode(reference, path)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        info = os.stat(reference)
        os.chown(path, info.st_uid, info.st_gid)


def remove_with_companions(path):
    for name in (path, *(path + suffix for suffix in COMPANIONS)):
        if os.path.lexists(name):
            os.remove(name)


def fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


