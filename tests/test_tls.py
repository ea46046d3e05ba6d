"""Authentication as mutual TLS: a real buildout with tls-generate, a real
server on 127.0.0.1, real ZEO clients with and without certificates.

One server (the module fixture `secured`) serves the tests that need it,
so the certificates are made and the server started once.  The
certificates the server must refuse (self-signed, expired) are made here
with `cryptography`, independently of the recipe's own code.
"""

import datetime
import os
import socket
import ssl
import stat
import time

import pytest
import ZEO
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.oid import NameOID
from ZEO.Exceptions import ClientDisconnected

from helpers import Buildout, output, wait_for


LOG_FORMAT = "%(levelname)s %(name)s %(message)s"



# -- certificates made by the test itself ---------------------------------

def write_pair(prefix, cert, key):
    """PREFIX.pem and PREFIX-key.pem; returns their paths."""
    cert_path, key_path = f"{prefix}.pem", f"{prefix}-key.pem"
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def client_certificate(prefix, name, issuer=None, expired=False):
    """A client certificate for NAME with the extensions a real one has,
    signed by ISSUER (certificate, key) or by itself."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    if expired:
        start, end = now - datetime.timedelta(days=30), now - \
            datetime.timedelta(days=1)
    else:
        start, end = now - datetime.timedelta(minutes=5), now + \
            datetime.timedelta(days=30)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_cert, issuer_key = issuer or (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(
            key.public_key()), critical=False))
    if issuer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer_key.public_key()), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    return write_pair(prefix, cert, key)


def load_ca(tls_dir):
    with open(tls_dir / "ca.pem", "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(tls_dir / "ca-key.pem", "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    return cert, key


def context(tls_dir, pair=None):
    """A ZEO client's TLS context: trusts the generated CA, presents PAIR
    (certificate, key) if given."""
    ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
    if pair:
        ctx.load_cert_chain(*pair)
    return ctx


# -- the shared server ----------------------------------------------------

@pytest.fixture(scope="module")
def secured(tmp_path_factory, dist_dir, eggs_dir):
    """A buildout whose part has tls-generate = true, and its running
    server.  Its database also lists an expired client certificate (so
    expiry is the only reason to refuse it)."""
    directory = tmp_path_factory.mktemp("tls") / "buildout"
    directory.mkdir()
    b = Buildout(directory, dist_dir, eggs_dir)
    try:
        b.write(f"""
            tls-generate = true
            tls-clients = zope
            relative-paths = true
            zeo-log-format = {LOG_FORMAT}
            authentication-realm = ZEO
            pack-user = admin
            """)
        result = b.run()
        b.install_output = output(result)
        b.tls = b.path("var", "tls")
        b.expired = client_certificate(str(b.path("expired")), "expired",
                                       issuer=load_ca(b.tls), expired=True)
        with open(b.tls / "clients.pem", "ab") as f:
            f.write(b.path("expired.pem").read_bytes())
        result = b.ctl("start")
        assert result.returncode == 0, output(result)
        b.log = b.path("var", "log", "zeo.log")
        b.log_after_start = b.log.read_text()
        b.address = ("127.0.0.1", b.port)
        yield b
    finally:
        b.stop_all()


def log_lines(b, text):
    return [line for line in b.log.read_text().splitlines() if text in line]


def refused(b, ctx):
    """Try a real ZEO client with CTX (None: no TLS); True if it failed to
    connect within its wait timeout."""
    kw = {"ssl": ctx} if ctx else {}
    try:
        db = ZEO.DB(b.address, wait_timeout=1, **kw)
    except ClientDisconnected:
        return True
    db.close()
    return False


def test_generated_files_and_instructions(secured):
    tls_dir = secured.tls
    made = sorted(p.name for p in tls_dir.iterdir())
    assert made == sorted([
        "ca.pem", "ca-key.pem", "server.pem", "server-key.pem",
        "zeopack.pem", "zeopack-key.pem", "zope.pem", "zope-key.pem",
        "clients.pem"]), made
    for path in tls_dir.glob("*-key.pem"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
    # The user is told where the client material is and what Zope needs.
    out = secured.install_output
    assert f"certificate {tls_dir}/zope.pem" in out, out
    assert f"key {tls_dir}/zope-key.pem" in out, out
    assert f"authenticate {tls_dir}/ca.pem" in out, out
    assert f"server 127.0.0.1:{secured.port}" in out, out
    # pack-user is not an error with a client certificate, but said unused.
    assert "pack-user = 'admin' is not used" in out, out
    assert "Traceback" not in out
    # With relative-paths, zeo.conf names them relative to the buildout.
    conf = secured.zeo_conf()
    env = "$(ZOPE2ZEOSERVER_BUILDOUT)"
    assert f"certificate {env}/var/tls/server.pem" in conf, conf
    assert f"key {env}/var/tls/server-key.pem" in conf, conf
    assert f"authenticate {env}/var/tls/clients.pem" in conf, conf
    # The server certificate names what clients connect to.
    cert = x509.load_pem_x509_certificate(
        (tls_dir / "server.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} \
        >= {"127.0.0.1", "::1"}


def test_trusted_client_commits_and_reads(secured):
    tls_dir = secured.tls
    zope = context(tls_dir, (tls_dir / "zope.pem", tls_dir / "zope-key.pem"))
    db = ZEO.DB(secured.address, ssl=zope, wait_timeout=10)
    try:
        with db.transaction() as conn:
            conn.root()["secret"] = "only for listed clients"
    finally:
        db.close()
    zeopack = context(tls_dir, (tls_dir / "zeopack.pem",
                                tls_dir / "zeopack-key.pem"))
    db = ZEO.DB(secured.address, ssl=zeopack, wait_timeout=10)
    try:
        with db.transaction() as conn:
            assert conn.root()["secret"] == "only for listed clients"
    finally:
        db.close()
    assert log_lines(secured, "INFO ZEO.tls TLS client 127.0.0.1:")
    assert log_lines(secured, ": CN=zope")


def test_readiness_checks_leave_no_warning(secured):
    """`bin/zeo start` waits by connecting without TLS: not a refusal."""
    assert "WARNING" not in secured.log_after_start, secured.log_after_start
    assert secured.ctl("status").returncode == 0


@pytest.mark.parametrize("kind, reason", [
    ("none", "the client sent no certificate"),
    ("self-signed", "client certificate not accepted: self-signed "
                    "certificate"),
    ("expired", "client certificate not accepted: certificate has expired"),
    ("other-ca", "client certificate not accepted: unable to get local "
                 "issuer certificate"),
])
def test_refused_clients_are_logged(secured, tmp_path, kind, reason):
    if kind == "none":
        pair = None
    elif kind == "self-signed":
        pair = client_certificate(str(tmp_path / "self"), "zope")
    elif kind == "expired":
        pair = secured.expired
    else:
        # Signed by a CA of its own, which the server does not list.
        other_dir = tmp_path / "other"
        other_dir.mkdir()
        ca = client_certificate(str(other_dir / "ca"), "other CA")
        pair = client_certificate(str(other_dir / "client"), "zope",
                                  issuer=(x509.load_pem_x509_certificate(
                                      open(ca[0], "rb").read()),
                                      serialization.load_pem_private_key(
                                          open(ca[1], "rb").read(), None)))
    started = time.monotonic()
    assert refused(secured, context(secured.tls, pair))
    assert time.monotonic() - started < 5
    lines = wait_for(lambda: log_lines(
        secured, "WARNING ZEO.tls refused TLS connection from 127.0.0.1:")
        and log_lines(secured, reason), timeout=5)
    assert lines, secured.log.read_text()[-3000:]
    # A client retrying several times a second is reported once a minute.
    assert len(log_lines(secured, reason)) <= 2, log_lines(secured, reason)


def test_client_without_tls_fails_fast(secured):
    started = time.monotonic()
    assert refused(secured, None)
    assert time.monotonic() - started < 5
    # Bytes that are not TLS make the server hang up at once, saying why.
    with socket.create_connection(secured.address, timeout=5) as s:
        s.sendall(b"\x00\x00\x00\x02Z5")
        assert s.recv(100) == b""
    assert wait_for(lambda: log_lines(secured, "does not speak TLS"),
                    timeout=5), secured.log.read_text()[-3000:]


def test_zeopack_packs_tls_server(secured):
    tls_dir = secured.tls
    zope = context(tls_dir, (tls_dir / "zope.pem", tls_dir / "zope-key.pem"))
    db = ZEO.DB(secured.address, ssl=zope, wait_timeout=10)
    try:
        for i in range(30):
            with db.transaction() as conn:
                conn.root()["doc"] = f"{i} " + "garbage " * 500
    finally:
        db.close()
    data_fs = secured.path("var", "filestorage", "Data.fs")
    size = data_fs.stat().st_size
    result = secured.script("zeopack", "-d", "0", timeout=60)
    assert result.returncode == 0, output(result)
    assert "packed storage '1'" in result.stdout
    assert data_fs.stat().st_size < size / 3
    assert "ERROR" not in secured.log.read_text()
    # A storage the server does not have: refused at once over TLS too.
    started = time.monotonic()
    result = secured.script("zeopack", "-S", "nosuch", timeout=60)
    assert result.returncode == 1, output(result)
    assert time.monotonic() - started < 5
    assert "storage 'nosuch'" in result.stderr.strip(), result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr


def test_zeopack_refused_in_one_line(secured, tmp_path):
    """A client certificate the server does not list: one line, at once."""
    cert, key = secured.tls / "zeopack.pem", secured.tls / "zeopack-key.pem"
    saved = cert.read_bytes(), key.read_bytes()
    stranger = client_certificate(str(tmp_path / "stranger"), "zeopack")
    try:
        cert.write_bytes(open(stranger[0], "rb").read())
        key.write_bytes(open(stranger[1], "rb").read())
        started = time.monotonic()
        result = secured.script("zeopack", "-d", "0", timeout=60)
        elapsed = time.monotonic() - started
        stats = secured.ctl("stats", timeout=60)
    finally:
        cert.write_bytes(saved[0])
        key.write_bytes(saved[1])
    assert result.returncode == 1, output(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "refused the client certificate" in lines[0]
    assert "authentication-database" in lines[0]
    assert "Traceback" not in output(result)
    assert elapsed < 5, elapsed
    # The control script's stats use the same certificate, and say so.
    assert stats.returncode == 1, output(stats)
    assert stats.stderr.strip().count("\n") == 0, stats.stderr
    assert "refused the client certificate" in stats.stderr
    assert "Traceback" not in output(stats)


def test_stats_over_tls(secured):
    result = secured.ctl("stats", timeout=60)
    assert result.returncode == 0, output(result)
    assert f"ZEO server at 127.0.0.1:{secured.port}" in result.stdout
    assert "Traceback" not in output(result)


def test_rerun_keeps_every_file(secured):
    before = {p.name: p.read_bytes() for p in secured.tls.iterdir()}
    result = secured.run()
    after = {p.name: p.read_bytes() for p in secured.tls.iterdir()}
    assert after == before
    assert "certificates are in" not in output(result)
    # Removing one client's pair makes a new one, listed in the database;
    # the others stay as they are.
    (secured.tls / "zope.pem").unlink()
    (secured.tls / "zope-key.pem").unlink()
    result = secured.run()
    assert "certificates are in" in output(result)
    new = (secured.tls / "zope.pem").read_bytes()
    assert new != before["zope.pem"]
    database = (secured.tls / "clients.pem").read_bytes()
    assert database.startswith(before["clients.pem"])
    added = database[len(before["clients.pem"]):]
    assert added.startswith(b"# zope, serial") and added.endswith(new)
    for name in ("ca.pem", "ca-key.pem", "server.pem", "server-key.pem",
                 "zeopack.pem", "zeopack-key.pem"):
        assert (secured.tls / name).read_bytes() == before[name], name
    assert stat.S_IMODE(
        (secured.tls / "zope-key.pem").stat().st_mode) == 0o600


# -- mistakes: one line at buildout time ----------------------------------

@pytest.fixture(scope="module")
def material(tmp_path_factory):
    """Certificates and keys for the error cases, made by the test."""
    d = tmp_path_factory.mktemp("material")
    ca = client_certificate(str(d / "ca"), "a CA")
    ca_loaded = (x509.load_pem_x509_certificate(open(ca[0], "rb").read()),
                 serialization.load_pem_private_key(open(ca[1], "rb").read(),
                                                    None))
    client_certificate(str(d / "server"), "server", issuer=ca_loaded)
    client_certificate(str(d / "other"), "other", issuer=ca_loaded)
    client_certificate(str(d / "old"), "old", issuer=ca_loaded, expired=True)
    (d / "digest.db").write_text(
        "realm ZEO\nadmin: 2a7a2ad3a6e7e8f8f9c0a1b2c3d4e5f6\n")
    (d / "notpem.txt").write_text("this is not a certificate\n")
    (d / "plaindir").mkdir()
    (d / "plaindir" / "alice.pem").write_bytes(
        (d / "other.pem").read_bytes())
    key = serialization.load_pem_private_key(
        (d / "server-key.pem").read_bytes(), None)
    (d / "locked-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    (d / "ssl.conf").write_text(
        "<zeo>\n  address 8100\n</zeo>\n<filestorage 1>\n  path "
        f"{d}/Data.fs\n</filestorage>\n")
    return d


SERVER = ("ssl-certificate = {m}/server.pem\n"
          "ssl-key = {m}/server-key.pem\n")
DATABASE = "authentication-database = {m}/ca.pem\n"
PACK = ("pack-ssl-certificate = {m}/other.pem\n"
        "pack-ssl-key = {m}/other-key.pem\n")

BAD_INPUT = [
    # (options, option named in the error, value shown, reason)
    (SERVER + PACK + "authentication-database = {m}/digest.db",
     "authentication-database", "digest.db",
     "password database of ZEO 4 and earlier"),
    ("ssl-certificate = {m}/server.pem\nssl-key = {m}/other-key.pem\n"
     + DATABASE + PACK,
     "ssl-key", "other-key.pem", "does not belong to the certificate"),
    ("ssl-certificate = {m}/nosuch.pem\nssl-key = {m}/server-key.pem\n"
     + DATABASE + PACK,
     "ssl-certificate", "nosuch.pem", "does not exist; fix the path"),
    ("ssl-certificate = {m}/server.pem\nssl-key = {m}\n" + DATABASE + PACK,
     "ssl-key", "material", "cannot read"),
    ("ssl-certificate = {m}/server.pem\nssl-key = {m}/notpem.txt\n"
     + DATABASE + PACK,
     "ssl-key", "notpem.txt", "not a PEM private key"),
    ("ssl-certificate = {m}/server.pem\nssl-key = {m}/locked-key.pem\n"
     + DATABASE + PACK,
     "ssl-key", "locked-key.pem", "passphrase"),
    ("ssl-certificate = {m}/old.pem\nssl-key = {m}/old-key.pem\n"
     + DATABASE + PACK,
     "ssl-certificate", "old.pem", "expired"),
    (SERVER + PACK + "authentication-database = {m}/notpem.txt",
     "authentication-database", "notpem.txt", "holds no PEM certificate"),
    (SERVER + PACK + "authentication-database = {m}/plaindir",
     "authentication-database", "plaindir", "openssl rehash"),
    (SERVER + PACK, "ssl-certificate", "server.pem",
     "add authentication-database"),
    ("ssl-certificate = {m}/server.pem\n" + DATABASE + PACK,
     "ssl-certificate", "server.pem", "set ssl-key too"),
    (DATABASE, "authentication-database", "ca.pem", "add ssl-certificate"),
    (SERVER + DATABASE, "pack-ssl-certificate", "",
     "bin/zeopack needs a client certificate"),
    (PACK, "pack-ssl-certificate", "other.pem",
     "the server does not speak TLS"),
    # A server that requires certificates, and no bin/zeopack to have one
    # (without authentication they are ignored: see test_options.py).
    (SERVER + DATABASE + "zeopack =\npack-user = admin", "pack-user",
     "admin", "ZEO 6 has no password authentication"),
    # The value of pack-password is a secret: it is not shown.
    (SERVER + DATABASE + "zeopack =\npack-password = s3cret",
     "pack-password", "***", "ZEO 6 has no password authentication"),
    ("tls-generate = true\nzeo-address = var/zeo.sock", "zeo-address",
     "var/zeo.sock", "unix socket"),
    ("tls-generate = true\ntls-clients = ../evil", "tls-clients", "../evil",
     "cannot name a certificate"),
    ("tls-generate = true\ntls-clients = ca", "tls-clients", "ca",
     "cannot name a certificate"),
    ("zeo-conf = {m}/ssl.conf\n" + SERVER, "ssl-certificate", "server.pem",
     "configure TLS in that file"),
]


@pytest.mark.parametrize(
    "options, option, value, reason", BAD_INPUT,
    ids=[f"{case[1]}-{case[3].split()[0]}-{i}"
         for i, case in enumerate(BAD_INPUT)])
def test_mistakes_stop_buildout_with_one_line(buildout, material, options,
                                              option, value, reason):
    buildout.write(options.format(m=material))
    result = buildout.run(check=False)
    out = output(result)
    assert result.returncode != 0, out
    assert "Traceback" not in out
    lines = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, out
    [line] = lines
    assert line.startswith(f"Error: [zeo] {option} = "), line
    assert value in line, line
    assert reason in line, line
    assert "s3cret" not in out
    assert not buildout.path("bin", "zeo").exists()


def test_generation_never_replaces_half_a_pair(buildout):
    """A lost key is not silently replaced by a new pair: that would
    change the server's identity behind the user's back."""
    buildout.install("tls-generate = true")
    (buildout.path("var", "tls", "server-key.pem")).unlink()
    result = buildout.run(check=False)
    out = output(result)
    assert result.returncode != 0, out
    assert "Traceback" not in out
    [line] = [line for line in out.splitlines() if line.startswith("Error:")]
    assert "[zeo] tls-directory = " in line
    assert "server.pem exists but" in line and "server-key.pem" in line
    assert buildout.path("var", "tls", "server.pem").exists()
