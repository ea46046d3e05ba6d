"""Files written by Python 2: recognised, and refused with the way out.

ZODB on Python 3 refuses a FileStorage whose header is FS21 (Python 2's
format).  Such a file is intact, and so is every backup of it: it needs
converting (`bin/<part> convert-py3`, see convert.py), not restoring.
bin/buildout warns about it, and the control script and the server
refuse to start on it.  Every one of them imports this module, so it
imports only os.
"""

import os

PYTHON2_HEADER = b"FS21"
PYTHON3_HEADER = b"FS30"
# Beside Data.fs: the original, kept by convert-py3.
ORIGINAL_SUFFIX = ".py2"


def header(path):
    """The first four bytes of PATH, or None if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(4)
    except OSError:
        return None


def wrote(path):
    """True if Python 2 wrote the FileStorage PATH."""
    return header(path) == PYTHON2_HEADER


def command(part):
    return f"bin/{part} convert-py3"


def refusal(path, part):
    """Why the server does not start on PATH, and the way out."""
    return (f"{path} was written by Python 2 and must be converted before "
            f"ZODB on Python 3 can serve it: run {command(part)} (it keeps "
            f"the original as {path}{ORIGINAL_SUFFIX}); the file is not "
            "damaged, do not restore a backup")


def refusal_of(paths, part):
    """The refusal of the first of PATHS that Python 2 wrote, or None:
    what the control script says and the server exits with."""
    for path in paths:
        if wrote(path):
            return refusal(path, part)
    return None


def wrote_index(path):
    """True if the FileStorage index PATH was pickled by Python 2.

    The index is two pickles: the file position, then the index data,
    whose first item is an oid prefix; Python 2 pickles it as a string,
    Python 3 as bytes.  Deciding from the first opcodes costs nothing,
    where loading the index (what ZODB does, logging a traceback when it
    fails) costs seconds for a large database."""
    import io
    import pickletools
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    stream = io.BytesIO(head)
    try:
        for _ in pickletools.genops(stream):  # the position
            pass
        for opcode, _, _ in pickletools.genops(stream):
            if opcode.name != "PROTO":
                return opcode.name in ("SHORT_BINSTRING", "BINSTRING",
                                       "STRING")
    except ValueError:  # not a pickle, or cut off inside an opcode
        pass
    return False


def set_aside_index(path, log):
    """A Python 3 file beside a Python 2 index (copied, or converted in
    place by hand): move the index aside, so ZODB rebuilds it from the
    data instead of logging a traceback.  LOG(message) reports it."""
    index = path + ".index"
    if header(path) == PYTHON3_HEADER and wrote_index(index):
        os.replace(index, index + ORIGINAL_SUFFIX)
        log(f"{index} was written by Python 2; moved it to "
            f"{index}{ORIGINAL_SUFFIX}: ZODB rebuilds the index from "
            f"{path}, which takes a while for a large file")
