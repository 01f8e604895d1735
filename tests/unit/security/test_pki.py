"""The site CA and its certificates, checked with cryptography's own path validation."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from anmin.security.credentials import SecurityError
from anmin.security.pki import issue_client, issue_server, load_ca, make_ca


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_the_server_certificate_verifies_for_its_hosts_only(tmp_path: Path) -> None:
    ca = make_ca("s1", tmp_path)
    server = issue_server(tmp_path, tmp_path, ["broker.s1.example", "10.0.0.2"])
    store = Store([load(ca.cert)])
    leaf = load(server.cert)
    for name in (
        x509.DNSName("broker.s1.example"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.2")),
    ):
        PolicyBuilder().store(store).build_server_verifier(name).verify(leaf, [])
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_server_verifier(x509.DNSName("other.example")).verify(
            leaf, []
        )
    for key in (ca.key, server.key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_a_client_certificate_names_the_broker_user(tmp_path: Path) -> None:
    ca = make_ca("s1", tmp_path)
    client = issue_client(tmp_path, tmp_path / "clients", "gw-1@s1")
    leaf = load(client.cert)
    [cn] = leaf.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    assert cn.value == "gw-1@s1"
    verifier = PolicyBuilder().store(Store([load(ca.cert)])).build_client_verifier()
    verifier.verify(leaf, [])


def test_the_ca_is_made_once_and_a_foreign_ca_does_not_verify(tmp_path: Path) -> None:
    first = make_ca("s1", tmp_path / "a")
    before = first.cert.read_bytes()
    assert make_ca("s1", tmp_path / "a").cert.read_bytes() == before, "kept, not replaced"
    assert make_ca("s1", tmp_path / "a", replace=True).cert.read_bytes() != before
    other = make_ca("s2", tmp_path / "b")
    server = issue_server(tmp_path / "a", tmp_path / "a", ["localhost"])
    verifier = PolicyBuilder().store(Store([load(other.cert)]))
    with pytest.raises(VerificationError):
        verifier.build_server_verifier(x509.DNSName("localhost")).verify(load(server.cert), [])


def test_issuing_without_a_ca_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SecurityError, match="no usable CA"):
        load_ca(tmp_path)
    make_ca("s1", tmp_path)
    with pytest.raises(SecurityError):
        issue_server(tmp_path, tmp_path, [])
