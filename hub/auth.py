"""Who is asking: argon2 password hashes, signed expiring tokens, roles, login rate limits.

Tokens are JWTs signed with HS256, and only HS256 is accepted when reading one (never the
algorithm the token claims). Expiry is checked against the hub's injected clock.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from hub.directory import ACCOUNT_ROLES, ADMIN, COMMITTEE, FAMILY, GATEWAY, INSTALLER, ROLES, STAFF
from hub.errors import HubError
from hub.incidents import Scope

ALGORITHM = "HS256"
ISSUER = "anmin-hub"

__all__ = [
    "ADMIN",
    "ALGORITHM",
    "COMMITTEE",
    "FAMILY",
    "GATEWAY",
    "INSTALLER",
    "ROLES",
    "STAFF",
    "AuthError",
    "LoginLimiter",
    "Principal",
    "TokenError",
    "hash_password",
    "issue_token",
    "read_token",
    "verify_password",
]

_hasher = PasswordHasher()
# Verified against when a username does not exist, so that a wrong name costs the same time
# as a wrong password and names cannot be probed by timing.
_DUMMY_HASH = _hasher.hash("not a password anyone has")


class AuthError(HubError):
    """Authentication failed."""


class TokenError(AuthError):
    """The token is missing, forged, of another algorithm, or expired."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The person behind a request, their role, and what they may read."""

    person_id: int
    username: str
    role: str
    scope: Scope = field(default_factory=Scope)

    @property
    def actor(self) -> str:
        return self.username


ANONYMOUS_ADMIN = Principal(person_id=0, username="anonymous", role=ADMIN)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    if password_hash is None:
        _verify(_DUMMY_HASH, password)
        return False
    return _verify(password_hash, password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def issue_token(
    person_id: int, username: str, role: str, *, secret: str, now: datetime, ttl: timedelta
) -> str:
    claims = {
        "sub": str(person_id),
        "usr": username,
        "role": role,
        "iss": ISSUER,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def read_token(token: str, *, secret: str, now: datetime) -> tuple[int, str, str]:
    """(person id, username, role) from a token this hub signed and that has not expired."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            # Expiry is checked below against the injected clock, not the machine's.
            options={"require": ["sub", "exp", "iat", "iss"], "verify_exp": False},
        )
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {exc}") from exc
    if not isinstance(claims.get("exp"), int) or claims["exp"] <= now.timestamp():
        raise TokenError("the token has expired")
    role = claims.get("role")
    username = claims.get("usr")
    if role not in ACCOUNT_ROLES or not isinstance(username, str):
        raise TokenError("the token names no known role")
    try:
        person_id = int(claims["sub"])
    except ValueError as exc:
        raise TokenError("the token names no person") from exc
    return person_id, username, role


class LoginLimiter:
    """At most ``max_failures`` failed logins per username, and per client address, in
    ``window``; past that, logins are refused until the oldest failure leaves the window.

    In memory, per hub process: with N hubs an attacker gets N times the budget, which still
    makes guessing an argon2-hashed password hopeless.
    """

    def __init__(self, max_failures: int = 5, window: timedelta = timedelta(minutes=5)) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: defaultdict[str, deque[datetime]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: str, now: datetime) -> deque[datetime]:
        failures = self._failures[key]
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def retry_after(self, keys: tuple[str, ...], now: datetime) -> float:
        """Seconds until a login may be tried for these keys (0: now)."""
        with self._lock:
            wait = 0.0
            for key in keys:
                failures = self._recent(key, now)
                if len(failures) >= self.max_failures:
                    wait = max(wait, (failures[0] + self.window - now).total_seconds())
            return wait

    def failed(self, keys: tuple[str, ...], now: datetime) -> None:
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)

    def succeeded(self, keys: tuple[str, ...]) -> None:
        with self._lock:
            for key in keys[:1]:  # the username's failures; the address keeps its record
                self._failures.pop(key, None)
