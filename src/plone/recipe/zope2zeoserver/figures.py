"""The figures of a live ZEO server, and their forms: 1.5's monitor
text, the text of `stats`, Prometheus text.

The live `StorageServer` keeps them (`server_status`, per storage); the
server's listeners (monitor.py) and `stats`/`check` (stats.py, asking a
running server) turn them into words.  Kept light, as `check` runs
every minute from a monitoring system: no asyncio, no ZODB.
"""

import datetime
import io
import struct
import time

import ZEO.monitor

NO_TRANSACTION = "0" * 16  # last-transaction of an empty storage


# Prometheus name, type, help, and the key of `figures()` (or of
# `size_figures()`, `replication_figures()`) it shows.  The Grafana
# dashboard (grafana-dashboard.json) queries these names: renaming one
# breaks it (test_dashboard checks).
METRICS = (
    ("zeo_commits_total", "counter", "Transactions committed.", "commits"),
    ("zeo_aborts_total", "counter", "Transactions aborted.", "aborts"),
    ("zeo_loads_total", "counter", "Object loads served.", "loads"),
    ("zeo_stores_total", "counter", "Object revisions stored.", "stores"),
    ("zeo_conflicts_total", "counter", "Write conflicts.", "conflicts"),
    ("zeo_conflicts_resolved_total", "counter",
     "Write conflicts resolved by the server.", "conflicts_resolved"),
    ("zeo_clients", "gauge", "Connected clients.", "clients"),
    ("zeo_active_transactions", "gauge", "Transactions in progress.",
     "active_transactions"),
    ("zeo_waiting_transactions", "gauge",
     "Transactions waiting for the commit lock.", "waiting_transactions"),
    ("zeo_commit_lock_held_seconds", "gauge",
     "Seconds the commit lock has been held; 0 when it is free.",
     "commit_lock_seconds"),
    ("zeo_seconds_since_last_transaction", "gauge",
     "Seconds since the last committed transaction; absent for an empty "
     "storage.", "seconds_since_last_transaction"),
    ("zeo_storage_size_bytes", "gauge",
     "Size of the storage in bytes as it reports it (a FileStorage: its "
     "Data.fs; blobs are not counted).", "storage_size_bytes"),
    ("zeo_replication_secondaries", "gauge",
     "ZRS secondaries connected to this primary; absent on other servers.",
     "replication_secondaries"),
    ("zeo_replication_connected", "gauge",
     "1 while this ZRS secondary is connected to its primary, else 0; "
     "absent on other servers.", "replication_connected"),
    ("zeo_replication_lag_seconds", "gauge",
     "Seconds from the commit on the primary to the arrival here of the "
     "last transaction replicated; absent before the first one and on "
     "other servers.", "replication_lag_seconds"),
)


def figures(status, now=None):
    """One storage's `server_status` dict as named plain values: the
    schema of `stats --json`, and what the metrics and checks read."""
    now = time.time() if now is None else now
    lock_time = status.get("lock_time")
    tid = status.get("last-transaction") or NO_TRANSACTION
    last = None if tid == NO_TRANSACTION else tid_time(bytes.fromhex(tid))
    return {
        "started": status["start"],
        "clients": status["connections"],
        # ZEO 5+ clients verify their caches themselves.
        "clients_verifying": status.get("verifying_clients", 0),
        "active_transactions": status["active_txns"],
        "waiting_transactions": status.get("waiting", 0),
        "commit_lock_seconds": round(max(0.0, now - lock_time), 3)
        if lock_time else 0.0,
        "commits": status["commits"],
        "aborts": status["aborts"],
        "loads": status["loads"],
        "stores": status["stores"],
        "conflicts": status["conflicts"],
        "conflicts_resolved": status["conflicts_resolved"],
        "last_transaction": None if last is None else tid,
        "last_transaction_time": last,
        "seconds_since_last_transaction":
            None if last is None else round(max(0.0, now - last), 3),
    }


def size_figures(status):
    """The storage's size, when the metrics listener added it to its
    `server_status` (`monitor.statuses`): ZEO's status does not have it."""
    size = status.get("size")
    return {} if size is None else {"storage_size_bytes": size}


def replication_figures(status):
    """The replication state of a ZRS primary or secondary (zrscompat, in
    its `server_status`) as metric values; none on other servers."""
    state = status.get("replication") or {}
    figures = {}
    if "secondaries" in state:
        figures["replication_secondaries"] = state["secondaries"]
    if "connected" in state:
        figures["replication_connected"] = int(state["connected"])
        figures["replication_lag_seconds"] = state["lag"]
    return figures


def storage_block(name, status):
    """`Storage: NAME` and ZEO's own `StorageStats.dump` lines: written by
    the class that parses them, the 1.5 format cannot drift."""
    stats = ZEO.monitor.StorageStats(connections=range(status["connections"]))
    for attribute in ("start", "loads", "stores", "commits", "aborts",
                      "active_txns", "lock_time", "conflicts",
                      "conflicts_resolved"):
        setattr(stats, attribute, status[attribute])
    stats.verifying_clients = status.get("verifying_clients", 0)
    out = io.StringIO()
    print("Storage:", name, file=out)
    stats.dump(out)
    return out.getvalue()


def monitor_text(statuses):
    """What 1.5's monitor server sent: version, time, a blank line, then
    each storage's block followed by a blank line."""
    import importlib.metadata  # ~50 ms, for 1.5's monitor text only
    version = importlib.metadata.version("ZEO")
    lines = [f"ZEO monitor server version {version}\n", time.ctime() + "\n",
             "\n"]
    for name in sorted(statuses):
        lines += [storage_block(name, statuses[name]), "\n"]
    return "".join(lines)


def stats_text(statuses, now=None):
    """The monitor blocks, plus what only ZEO 5+ knows, for people."""
    now = time.time() if now is None else now
    blocks = []
    for name in sorted(statuses):
        values = figures(statuses[name], now)
        block = storage_block(name, statuses[name])
        block += f"Waiting transactions: {values['waiting_transactions']}\n"
        if values["last_transaction_time"] is None:
            block += "Last transaction: none (empty storage)\n"
        else:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(
                values["last_transaction_time"]))
            block += (f"Last transaction: {when} "
                      f"({values['seconds_since_last_transaction']:.0f} s "
                      "ago)\n")
        blocks.append(block)
    return "\n".join(blocks)


def metrics_text(statuses, now=None):
    """The Prometheus text exposition (format 0.0.4) of every storage."""
    now = time.time() if now is None else now
    values = {name: {**figures(status, now), **size_figures(status),
                     **replication_figures(status)}
              for name, status in statuses.items()}
    lines = []
    for metric, kind, text, key in METRICS:
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}"]
        for name in sorted(values):
            value = values[name].get(key)
            if value is not None:
                lines.append(f'{metric}{{storage="{label(name)}"}} {value}')
    return "\n".join(lines) + "\n"


def label(value):
    """VALUE escaped for a Prometheus label."""
    return (str(value).replace("\\", "\\\\").replace('"', '\\"')
            .replace("\n", "\\n"))


def tid_time(tid):
    """Seconds since the epoch of the transaction id TID (8 bytes), as
    ZODB's TimeStamp.timeTime() tells them: the first four bytes count
    minutes from 1900 in months of 31 days, the last four the fraction
    of the minute."""
    minutes, fraction = struct.unpack(">II", tid)
    days, minute = divmod(minutes, 24 * 60)
    months, day = divmod(days, 31)
    year, month = divmod(months, 12)
    start = datetime.datetime(1900 + year, month + 1, day + 1,
                              tzinfo=datetime.timezone.utc)
    return start.timestamp() + minute * 60 + fraction * 60 / 2 ** 32
