"""Certificates for mutual TLS: made for the user, checked before ZEO
reads them.

ZEO 6 authenticates clients only by TLS client certificates.  `generate`
makes a private CA, the server's certificate and one certificate per
client, with the X.509 v3 extensions OpenSSL's strict mode insists on
(ZEO verifies with VERIFY_X509_STRICT: a CA without keyUsage makes the
server refuse every client, even a correctly signed one).  The check
functions raise `Problem` with a sentence that `options` puts after the
option's name, so a wrong file stops buildout instead of the server.

Build time only: the run-time modules use the standard library's `ssl`.
"""

import datetime
import ipaddress
import os
import re
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.oid import NameOID


CA_DAYS = 3650
LEAF_DAYS = 1825
EXPIRY_WARNING_DAYS = 30
DATABASE = "clients.pem"  # the generated authentication-database
RESERVED_NAMES = ("ca", "server", "clients")


class Problem(Exception):
    """A file the user must fix; WHICH names the file's role
    ("certificate", "key" or "database"), the text says what is wrong."""

    def __init__(self, which, why):
        super().__init__(why)
        self.which = which


def pair(directory, name):
    """(certificate path, key path) of NAME's pair in DIRECTORY."""
    return (os.path.join(directory, f"{name}.pem"),
            os.path.join(directory, f"{name}-key.pem"))


# -- generation ----------------------------------------------------------

def generate(directory, part, server_names, clients, owner=None):
    """Make in DIRECTORY whatever is missing of: a private CA, the server's
    certificate (for SERVER_NAMES), one certificate per name in CLIENTS
    and the database listing those client certificates.

    Existing files are never changed: a certificate made earlier stays
    valid, and a user's replacement stays in place.  Newly made client
    certificates are appended to the database.  Returns the paths made.
    OWNER (uid, gid) receives every file, for a server that runs as
    another user (effective-user)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    leaves = [("server", server_profile(server_names))] + [
        (name, client_profile(name)) for name in clients]
    missing = [(name, profile) for name, profile in leaves
               if not has_pair(directory, name)]
    made = []
    if missing:
        ca_cert, ca_key = certificate_authority(directory, part, leaves,
                                                missing, made)
        for name, profile in missing:
            key = new_key()
            cert = sign(profile, key, ca_cert, ca_key, LEAF_DAYS)
            made += write_pair(directory, name, cert, key)
    database = os.path.join(directory, DATABASE)
    new_clients = [name for name, _ in missing if name in clients]
    if not os.path.exists(database):
        new_clients = clients
    if new_clients:
        with open(database, "ab") as f:
            for name in new_clients:
                f.write(database_entry(pair(directory, name)[0]))
        made.append(database)
    if owner:
        for path in [directory] + made:
            os.chown(path, *owner)
    return made


def certificate_authority(directory, part, leaves, missing, made):
    """The CA's (certificate, key), made when the directory has none."""
    cert_path, key_path = pair(directory, "ca")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return load_certificate(cert_path), load_key(key_path)
    if os.path.exists(cert_path):
        raise Problem("certificate", (
            f"cannot sign new certificates for "
            f"{', '.join(name for name, _ in missing)}: the CA key "
            f"{key_path} is missing; put it back while buildout runs"))
    if os.path.exists(key_path) or len(missing) < len(leaves):
        raise Problem("certificate", (
            f"{cert_path} is missing but other files of this CA are "
            f"present; restore it, or empty {directory} to start over "
            "(clients then need the new certificates)"))
    key = new_key()
    subject = x509.Name([x509.NameAttribute(
        NameOID.COMMON_NAME, f"ZEO CA of buildout part {part}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0),
                       critical=True)
        .add_extension(key_usage(key_cert_sign=True, crl_sign=True),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(
            key.public_key()), critical=False)
        .sign(key, hashes.SHA256()))
    made += write_pair(directory, "ca", cert, key)
    return cert, key


def server_profile(names):
    """(common name, extensions) of the server's certificate."""
    alt_names = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    return ("ZEO server", [
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
        x509.SubjectAlternativeName(alt_names)])


def client_profile(name):
    return (name, [x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])])


def sign(profile, key, ca_cert, ca_key, days):
    """A certificate for KEY with PROFILE's name and extensions, signed
    by the CA; CA:FALSE and digitalSignature as strict mode expects."""
    common_name, extensions = profile
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                       critical=True)
        .add_extension(key_usage(digital_signature=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(
            key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), critical=False))
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def key_usage(digital_signature=False, key_cert_sign=False, crl_sign=False):
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False,
        key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=key_cert_sign, crl_sign=crl_sign,
        encipher_only=False, decipher_only=False)


def new_key():
    # P-256: made in a millisecond (RSA takes a noticeable fraction of a
    # second per key) and accepted by every TLS stack ZEO runs on.
    return ec.generate_private_key(ec.SECP256R1())


def has_pair(directory, name):
    """True if NAME's certificate and key both exist, False if neither;
    half a pair is an error, not something to paper over."""
    cert_path, key_path = pair(directory, name)
    exists = os.path.exists(cert_path), os.path.exists(key_path)
    if exists[0] != exists[1]:
        present, absent = ((cert_path, key_path) if exists[0]
                           else (key_path, cert_path))
        raise Problem("certificate", (
            f"{present} exists but {absent} does not; restore it, or "
            f"delete {present} to have a new pair made"))
    return exists[0]


def write_pair(directory, name, cert, key):
    cert_path, key_path = pair(directory, name)
    write_new(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), 0o600)
    write_new(cert_path, cert.public_bytes(serialization.Encoding.PEM),
              0o644)
    return [key_path, cert_path]


def write_new(path, data, mode):
    """Create PATH with MODE from the start (a key is never readable by
    others, not even for a moment); refuse to replace an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def database_entry(cert_path):
    """A certificate as the database lists it: a comment line naming it
    (OpenSSL skips text outside PEM blocks), so an administrator can find
    the block to delete when revoking it."""
    with open(cert_path, "rb") as f:
        data = f.read()
    cert = x509.load_pem_x509_certificate(data)
    return (f"# {describe(cert)}, from {cert_path}\n").encode() + data


def describe(cert):
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = names[0].value if names else cert.subject.rfc4514_string()
    return (f"{name}, serial {cert.serial_number:x}, valid until "
            f"{cert.not_valid_after_utc:%Y-%m-%d}")


# -- checks --------------------------------------------------------------

def check_identity(cert_path, key_path):
    """Check a certificate and its private key the way ZEO will load
    them.  Returns warnings (texts); raises Problem."""
    cert = load_certificate(cert_path)
    key = load_key(key_path)
    if (cert.public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo)
            != key.public_key().public_bytes(
                serialization.Encoding.DER,
                serialization.PublicFormat.SubjectPublicKeyInfo)):
        raise Problem("key", f"this key does not belong to the certificate "
                      f"{cert_path}; give the key the certificate was made "
                      "for")
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
    except ssl.SSLError as e:
        raise Problem("certificate", f"OpenSSL refuses this certificate "
                      f"and key: {e.reason or e}")
    warnings = expiry_warnings(cert)
    if os.stat(key_path).st_mode & 0o004:
        warnings.append(("key", "other users can read this private key; "
                         f"chmod 600 {key_path}"))
    return warnings


def expiry_warnings(cert):
    now = datetime.datetime.now(datetime.timezone.utc)
    if cert.not_valid_after_utc < now:
        raise Problem("certificate", f"the certificate expired on "
                      f"{cert.not_valid_after_utc:%Y-%m-%d}; renew it "
                      "(a generated one: delete it and its key, rerun "
                      "bin/buildout)")
    if cert.not_valid_before_utc > now:
        raise Problem("certificate", "the certificate is not valid before "
                      f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; "
                      "check this machine's clock")
    left = cert.not_valid_after_utc - now
    if left < datetime.timedelta(days=EXPIRY_WARNING_DAYS):
        return [("certificate", f"the certificate expires on "
                 f"{cert.not_valid_after_utc:%Y-%m-%d}; renew it soon")]
    return []


def check_database(path):
    """Check an authentication-database: a PEM file of trusted client
    certificates or CAs, or an OpenSSL hashed directory of them."""
    if os.path.isdir(path):
        if not any(re.fullmatch(r"[0-9a-f]{8}\.r?\d+", name)
                   for name in os.listdir(path)):
            raise Problem("database", (
                "OpenSSL finds certificates in a directory only through "
                "hash links, and this one has none, so no client would "
                f"be trusted; run 'openssl rehash {path}' after every "
                "change, or give one PEM file listing the certificates"))
        return []
    data = read(path, "database")
    first = data.lstrip().split(b"\n", 1)[0]
    if re.match(rb"realm\s", first):
        raise Problem("database", (
            f"{path} is a password database of ZEO 4 and earlier (first "
            f"line {first.decode(errors='replace').strip()!r}); ZEO 6 has "
            "no password authentication and trusts TLS client "
            "certificates instead: make one certificate per account it "
            "lists (tls-generate = true with tls-clients = NAMES makes "
            "them) and name a PEM file listing them here"))
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise Problem("database", "holds no PEM certificate (-----BEGIN "
                      "CERTIFICATE-----); list the trusted client "
                      "certificates or their CA in it")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=path)
    except ssl.SSLError as e:
        raise Problem("database", f"OpenSSL cannot load it: {e.reason or e}")
    now = datetime.datetime.now(datetime.timezone.utc)
    return [("database", f"lists an expired certificate ({describe(c)}); "
             "remove it") for c in certs if c.not_valid_after_utc < now]


def read(path, which):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise Problem(which, f"{path} does not exist; fix the path")
    except OSError as e:
        raise Problem(which, f"cannot read {path}: {e.strerror or e}")


def load_certificate(path):
    data = read(path, "certificate")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise Problem("certificate", f"{path} is not a PEM certificate "
                      "(-----BEGIN CERTIFICATE-----)")


def load_key(path):
    data = read(path, "key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise Problem("key", (
            "the key is protected by a passphrase, which a server starting "
            f"unattended cannot type; remove it (openssl pkey -in {path} "
            "-out NEW.pem) and keep the file mode 600"))
    except ValueError:
        raise Problem("key", f"{path} is not a PEM private key "
                      "(-----BEGIN PRIVATE KEY-----)")


# -- what the user is told -----------------------------------------------

def client_instructions(part, address, storage, directory, clients,
                        server_names):
    """The message printed after material was made: where the client
    certificates are and how a Zope client uses one."""
    name = next((c for c in clients if c != "zeopack"), "zeopack")
    cert, key = pair(directory, name)
    ca = pair(directory, "ca")[0]
    return "\n".join([
        f"[{part}] TLS: certificates are in {directory}; "
        f"{DATABASE} there lists the client certificates made: "
        f"{', '.join(clients)}.",
        f"  Server names in its certificate: {', '.join(server_names)}.",
        f"  A Zope client ({name}) connects with, in zope.conf:",
        "    <zeoclient>",
        f"      server {address}",
        f"      storage {storage}",
        "      <ssl>",
        f"        certificate {cert}",
        f"        key {key}",
        f"        authenticate {ca}",
        "      </ssl>",
        "    </zeoclient>",
    ])
