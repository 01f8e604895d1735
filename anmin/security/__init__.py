"""Broker security for a site: credentials, the Mosquitto password and ACL files, and the
site's TLS certificates (docs/security.md).

``credentials`` and ``mosquitto`` need only the standard library and ``wire``; ``pki`` needs the
cryptography package and is imported only by the ``anmin broker ca`` command.
"""

from anmin.security.credentials import (
    HUB_USER,
    Credentials,
    Inventory,
    Principal,
    Role,
    issue,
)
from anmin.security.mosquitto import acl_file, hash_password, password_file, verify_password

__all__ = [
    "HUB_USER",
    "Credentials",
    "Inventory",
    "Principal",
    "Role",
    "acl_file",
    "hash_password",
    "issue",
    "password_file",
    "verify_password",
]
