"""What the tools say and ask about a server's files: where zeo.conf's
paths start, an OS error in one line, who holds a FileStorage lock,
blobs a new FileStorage would delete, the user who is to own them.
Shared by build time and run time; standard library only.
"""

import os

# With relative-paths, zeo.conf names paths inside the buildout through
# this environment variable; the generated scripts set it from their own
# location, so the buildout directory can move.
BUILDOUT_ENV = "ZOPE2ZEOSERVER_BUILDOUT"


def os_error_text(e):
    """'Permission denied: /path', without the errno in brackets."""
    if e.filename is None:
        return e.strerror or str(e)
    return f"{e.strerror}: {e.filename}"


def lock_holder(lock_path):
    """'process 1234 (its command line)', from the pid zc.lockfile wrote
    into LOCK_PATH; what can be known when that cannot be read."""
    try:
        with open(lock_path) as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return "another process"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return f"process {pid}"
    return f"process {pid} ({command.strip()})"


def file_size(path):
    """The size of the file at PATH, or None where there is none (or no
    PATH)."""
    try:
        return os.path.getsize(path)
    except (OSError, TypeError):
        return None


def blob_loss(path, blob_dir, create=False):
    """Why opening the FileStorage PATH with BLOB_DIR would delete blobs,
    or None.  ZODB empties the blob directory whenever it creates the
    file: when it is missing (a Data.fs not restored yet, a changed
    file-storage), or when its section says `create true`."""
    exists = os.path.exists(path)
    if (not blob_dir or (exists and not create)
            or not any(name.endswith(".blob")
                       for _, _, names in os.walk(blob_dir)
                       for name in names)):
        return None
    if exists:
        return (f"{blob_dir} holds blobs, and the section of {path} in "
                "zeo.conf says create true: ZODB would empty the file and "
                "delete them; remove create from that section")
    return (f"{blob_dir} holds blobs but {path} does not exist: ZODB would "
            "delete them when it creates a new, empty file; put back the "
            f"file that goes with them (bin/repozo -R -o {path}), or move "
            f"{blob_dir} away to start with an empty database")


def user_entry(user):
    """The password database entry of USER, a name or a uid (KeyError if
    there is none).  POSIX only, as effective-user is."""
    import pwd
    return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
