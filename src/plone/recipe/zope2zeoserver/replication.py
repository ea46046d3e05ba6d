"""Scale-out: the <zrs> storage section of zeo.conf, and the role of a
server as the control script reports it.

zeo.conf is read at buildout time, by the control script and by the
server: this module is imported each time and imports nothing of
zc.zrs.  Only opening a <zrs> section, in the server, does (through
`zrscompat`).
"""

import time

from plone.recipe.zope2zeoserver.addresses import describe


class ReplicationError(Exception):
    """A replicated storage cannot open; the message says why."""


class ZRS:
    """The opener of a <zrs> section (component.xml): the storage inside
    it, as a ZRS primary, a secondary, or both (a secondary that other
    secondaries replicate from)."""

    def __init__(self, config):
        self.config = config
        self.name = config.getSectionName()

    def open(self):
        try:
            from plone.recipe.zope2zeoserver import zrscompat
        except ImportError as e:
            raise ReplicationError(
                f"replication needs zc.zrs, which cannot be imported ({e}); "
                "rerun bin/buildout, which installs it for a part with "
                "replicate-to or replicate-from")
        try:
            return zrscompat.open_storage(self.config)
        except zrscompat.CannotListen as e:
            raise ReplicationError(str(e))


def base_config(opener):
    """The configuration of the storage OPENER (a storage section of
    zeo.conf) opens: for a <zrs> section, that of the section inside."""
    config = opener.config
    while getattr(config, "base", None) is not None:
        config = config.base.config
    return config


def storages(openers):
    """(name, path, blob dir) of each storage among OPENERS (the storage
    sections of zeo.conf), inside <zrs> sections too; path and blob dir
    are None where the storage has none (e.g. a <zeoclient>)."""
    found = []
    for opener in openers:
        config = base_config(opener)
        found.append((opener.name, getattr(config, "path", None),
                      getattr(config, "blob_dir", None)))
    return found


def file_storages(openers):
    """`storages` that have a file."""
    return [storage for storage in storages(openers) if storage[1]]


def role(opener):
    """What the storage of OPENER (a storage section of zeo.conf) does
    beyond serving a file: {"role": "primary" | "secondary" | "fan-out",
    and the addresses} or None.  zc.zrs's own <zrs> sections count too."""
    config = opener.config
    replicate_to = getattr(config, "replicate_to", None)
    replicate_from = getattr(config, "replicate_from", None)
    servers = getattr(config, "server", None)
    if replicate_from is not None:
        found = {"role": "secondary",
                 "replicate_from": describe(replicate_from.address)}
        if replicate_to is not None:
            found["replicate_to"] = describe(replicate_to.address)
        return found
    if replicate_to is not None:
        return {"role": "primary",
                "replicate_to": describe(replicate_to.address)}
    if servers:
        return {"role": "fan-out", "upstream": ", ".join(
            describe(server.address) for server in servers)}
    return None


def role_text(found, state=None, now=None):
    """One line for people: FOUND (`role`) and the replication STATE the
    server reports, if asked (`zrscompat`: a secondary's connection and
    lag, a primary's count of secondaries)."""
    state = state or {}
    if found["role"] == "fan-out":
        return f"fan-out (read-only) of the ZEO server at {found['upstream']}"
    if found["role"] == "primary":
        text = f"primary; secondaries connect to {found['replicate_to']}"
    else:
        text = ("secondary (read-only) of the primary at "
                f"{found['replicate_from']}")
        if "replicate_to" in found:
            text += f"; its secondaries connect to {found['replicate_to']}"
        if "connected" in state:
            text += "; " + replication_text(state, now)
    if "secondaries" in state:
        text += f"; {state['secondaries']} connected now"
    return text


def role_lines(roles):
    """`status`'s line per storage of ROLES ({name: `role`})."""
    return [f"storage {name}: {role_text(role)}"
            for name, role in roles.items()]


def replication_text(state, now=None):
    """'connected, lag 0.003 s' or 'NOT connected for 12 s'."""
    now = time.time() if now is None else now
    if not state["connected"]:
        return (f"NOT connected for {max(0, now - state['since']):.0f} s, "
                "retrying")
    if state["lag"] is None:
        return "connected, nothing replicated since"
    return (f"connected, lag {state['lag']:.3f} s (the last transaction "
            f"arrived {max(0, now - state['replicated_at']):.0f} s ago)")
