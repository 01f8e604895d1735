"""A site's own certificate authority: the CA, the broker's server certificate and optional
client certificates, made with the cryptography package.

Keys are ECDSA P-256 (small, fast on a Raspberry Pi, supported by Mosquitto's OpenSSL) and
are written readable by their owner only. The CA key is needed only to issue certificates:
keep it off the brokers.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from anmin.security.credentials import SecurityError

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
CA_DAYS = 3650
LEAF_DAYS = 825  # the longest validity clients such as Apple's accept for a server certificate
DEFAULT_HOSTS = ("localhost", "127.0.0.1")


@dataclass(frozen=True, slots=True)
class CertFiles:
    cert: Path
    key: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str, site: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Anmin"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, site),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(site: str, out: Path, *, days: int = CA_DAYS, replace: bool = False) -> CertFiles:
    """Make the site's CA in ``out`` (``ca.pem``, ``ca.key``); an existing one is kept."""
    files = CertFiles(out / CA_CERT, out / CA_KEY)
    if files.cert.exists() and not replace:
        return files
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"Anmin {site} CA", site)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(files.key, key)
    _write_cert(files.cert, cert)
    return files


def load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise SecurityError(f"no usable CA in {ca_dir}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SecurityError(f"the CA key in {ca_dir} is not an EC key")
    return cert, key


def _leaf(
    ca_dir: Path,
    out: Path,
    stem: str,
    common_name: str,
    usage: x509.ObjectIdentifier,
    sans: Sequence[x509.GeneralName],
    days: int,
) -> CertFiles:
    ca_cert, ca_key = load_ca(ca_dir)
    site = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, str(site[0].value) if site else ""))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    files = CertFiles(out / f"{stem}.pem", out / f"{stem}.key")
    _write_key(files.key, key)
    _write_cert(files.cert, cert)
    return files


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue_server(
    ca_dir: Path,
    out: Path,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    *,
    name: str = "server",
    days: int = LEAF_DAYS,
) -> CertFiles:
    """The broker's certificate, naming every host name and IP address clients connect to."""
    if not hosts:
        raise SecurityError("a server certificate needs at least one host name or IP address")
    return _leaf(
        ca_dir,
        out,
        name,
        hosts[0],
        ExtendedKeyUsageOID.SERVER_AUTH,
        [_general_name(h) for h in hosts],
        days,
    )


def issue_client(ca_dir: Path, out: Path, username: str, *, days: int = LEAF_DAYS) -> CertFiles:
    """A client certificate whose CN is the broker username (``use_identity_as_username``)."""
    stem = "client-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in username)
    # RFC 5280 verifiers want a subjectAltName; a URN names the user the way SPIFFE ids do.
    san = x509.UniformResourceIdentifier(f"urn:anmin:user:{username}")
    return _leaf(ca_dir, out, stem, username, ExtendedKeyUsageOID.CLIENT_AUTH, [san], days)
