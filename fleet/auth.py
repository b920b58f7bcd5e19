"""API tokens and roles: pure rules, no I/O.

A token is ``eft_`` followed by 256 random bits (URL-safe base64). The server keeps only its
sha256: a database leak does not leak usable tokens, and because the token itself is random and
long, a single unsalted hash is enough (there is nothing to brute-force). Lookups go by hash, so
no comparison of secrets happens in Python at all.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

API_TOKEN_PREFIX: Final = "eft_"
ENROLLMENT_TOKEN_PREFIX: Final = "efe_"
_RANDOM_BYTES: Final = 32
DISPLAY_PREFIX_LENGTH: Final = 10


class Role(StrEnum):
    """Ordered from least to most: each role can do everything the ones below it can."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, required: Role) -> bool:
        return self.rank >= required.rank


_RANKS: Final = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}

ROLE_DUTIES: Final = {
    Role.VIEWER: "read devices, models, bundles, rollouts, drift and the audit log",
    Role.OPERATOR: "everything a viewer can, plus push models, add and tag devices, run rollouts",
    Role.ADMIN: "everything an operator can, plus manage API tokens and MQTT credentials",
}


def generate_token(prefix: str = API_TOKEN_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(_RANDOM_BYTES)


def hash_token(token: str) -> str:
    """The sha256 (hex) stored in place of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def display_prefix(token: str) -> str:
    """The first characters of a token: enough to recognise it in a list, useless to an attacker."""
    return token[:DISPLAY_PREFIX_LENGTH]


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API token's name and role, or a device (for bundle downloads)."""

    name: str
    role: Role | None
    token_id: int | None = None
    device_id: str | None = None

    @property
    def actor(self) -> str:
        return f"device:{self.device_id}" if self.device_id else f"token:{self.name}"

    def can(self, required: Role) -> bool:
        return self.role is not None and self.role.allows(required)
