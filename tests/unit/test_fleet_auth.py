"""API tokens and roles: hashing, shapes, and who may do what."""

from __future__ import annotations

import hashlib

import pytest

from fleet.auth import (
    API_TOKEN_PREFIX,
    DISPLAY_PREFIX_LENGTH,
    ENROLLMENT_TOKEN_PREFIX,
    Principal,
    Role,
    display_prefix,
    generate_token,
    hash_token,
)


def test_token_hash_is_the_sha256_of_the_token() -> None:
    token = generate_token()
    assert hash_token(token) == hashlib.sha256(token.encode()).hexdigest()
    assert hash_token(token) != hash_token(token + "x")


def test_tokens_are_random_prefixed_and_long() -> None:
    tokens = {generate_token() for _ in range(200)}
    assert len(tokens) == 200
    assert all(t.startswith(API_TOKEN_PREFIX) and len(t) >= len(API_TOKEN_PREFIX) + 43 for t in tokens)
    assert generate_token(ENROLLMENT_TOKEN_PREFIX).startswith(ENROLLMENT_TOKEN_PREFIX)
    assert all(c.isalnum() or c in "-_" for c in next(iter(tokens)))


def test_display_prefix_is_short() -> None:
    token = generate_token()
    assert display_prefix(token) == token[:DISPLAY_PREFIX_LENGTH]
    assert len(display_prefix(token)) < len(token) // 4


@pytest.mark.parametrize(
    ("role", "required", "allowed"),
    [
        (Role.VIEWER, Role.VIEWER, True),
        (Role.VIEWER, Role.OPERATOR, False),
        (Role.VIEWER, Role.ADMIN, False),
        (Role.OPERATOR, Role.VIEWER, True),
        (Role.OPERATOR, Role.OPERATOR, True),
        (Role.OPERATOR, Role.ADMIN, False),
        (Role.ADMIN, Role.VIEWER, True),
        (Role.ADMIN, Role.OPERATOR, True),
        (Role.ADMIN, Role.ADMIN, True),
    ],
)
def test_roles_are_ordered(role: Role, required: Role, allowed: bool) -> None:
    assert role.allows(required) is allowed
    assert Principal(name="t", role=role).can(required) is allowed


def test_a_device_principal_has_no_api_role() -> None:
    device = Principal(name="cam-1", role=None, device_id="cam-1")
    assert device.actor == "device:cam-1"
    assert not any(device.can(role) for role in Role)
    assert Principal(name="ci", role=Role.VIEWER, token_id=3).actor == "token:ci"
