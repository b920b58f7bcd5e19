"""Ed25519 key files, key ids and the manifest.sig envelope."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey

from models.bundle import (
    BadSignature,
    KeyFileError,
    UntrustedKey,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    load_trusted_keys,
    parse_signature,
    sign_manifest_bytes,
    verify_manifest_signature,
)
from tests.support.bundles import fixed_private_key


def test_generate_writes_a_0600_private_key_and_a_matching_public_key(tmp_path: Path) -> None:
    private_path, public_path = generate_keypair(tmp_path / "keys", "release")
    assert private_path.name == "release.key" and public_path.name == "release.pub.pem"
    assert "pub" in public_path.name
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private_path.read_bytes() and b"PUBLIC KEY" in public_path.read_bytes()
    private, public = load_private_key(private_path), load_public_key(public_path)
    assert key_id(private.public_key()) == key_id(public)
    assert [p.name for p in (tmp_path / "keys").iterdir() if p.name.startswith(".")] == []


def test_generate_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    private_path, public_path = generate_keypair(tmp_path)
    original = private_path.read_bytes()
    with pytest.raises(KeyFileError, match="refusing to overwrite") as caught:
        generate_keypair(tmp_path)
    assert "--force" in caught.value.hint
    assert private_path.read_bytes() == original
    generate_keypair(tmp_path, overwrite=True)
    assert private_path.read_bytes() != original
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert key_id(load_private_key(private_path).public_key()) == key_id(load_public_key(public_path))


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "x" * 65])
def test_generate_refuses_names_that_are_not_plain_file_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(KeyFileError, match="not usable as a file name"):
        generate_keypair(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_key_id_is_16_hex_of_sha256_over_the_raw_public_key() -> None:
    public = fixed_private_key(1).public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key_id(public) == hashlib.sha256(raw).hexdigest()[:16]
    assert key_id(public) != key_id(fixed_private_key(2).public_key())


def test_swapped_key_files_get_a_clear_message(tmp_path: Path) -> None:
    private_path, public_path = generate_keypair(tmp_path)
    with pytest.raises(KeyFileError, match="is a private key") as caught:
        load_public_key(private_path)
    assert "pub.pem" in caught.value.hint
    with pytest.raises(KeyFileError, match="not a PEM private key") as caught:
        load_private_key(public_path)
    assert "private key" in caught.value.hint


def test_missing_garbage_and_foreign_keys_are_key_file_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        load_public_key(tmp_path / "absent.pub.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public_key(garbage)
    ed448 = Ed448PrivateKey.generate()
    foreign_public = tmp_path / "ed448.pub.pem"
    foreign_public.write_bytes(
        ed448.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(KeyFileError, match="not an Ed25519"):
        load_public_key(foreign_public)
    foreign_private = tmp_path / "ed448.key"
    foreign_private.write_bytes(
        ed448.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(KeyFileError, match="not an Ed25519"):
        load_private_key(foreign_private)


def test_encrypted_private_keys_need_their_passphrase(tmp_path: Path) -> None:
    key = fixed_private_key(5)
    path = tmp_path / "locked.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    with pytest.raises(KeyFileError, match="encrypted"):
        load_private_key(path)
    assert key_id(load_private_key(path, password=b"s3cret").public_key()) == key_id(key.public_key())


def test_trusted_keys_load_from_files_and_directories_without_duplicates(tmp_path: Path) -> None:
    _, first = generate_keypair(tmp_path / "ring", "first")
    _, second = generate_keypair(tmp_path / "ring", "second")
    keys = load_trusted_keys([tmp_path / "ring", first])
    assert sorted(key_id(k) for k in keys) == sorted({key_id(load_public_key(p)) for p in (first, second)})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KeyFileError, match="no"):
        load_trusted_keys([empty])


def test_signature_round_trip_returns_the_signer() -> None:
    key = fixed_private_key(7)
    manifest = b'{"name":"m"}'
    signature = sign_manifest_bytes(manifest, key)
    assert verify_manifest_signature(manifest, signature, [key.public_key()]) == key_id(key.public_key())
    with pytest.raises(BadSignature):
        verify_manifest_signature(manifest + b" ", signature, [key.public_key()])
    with pytest.raises(UntrustedKey) as caught:
        verify_manifest_signature(manifest, signature, [fixed_private_key(8).public_key()])
    assert caught.value.key_id == key_id(key.public_key())
    assert key_id(fixed_private_key(8).public_key()) in caught.value.message


def _envelope(**changes: object) -> bytes:
    base: dict[str, object] = {
        "alg": "ed25519",
        "key_id": "0" * 16,
        "signature": base64.b64encode(bytes(64)).decode(),
    }
    base.update(changes)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "nothing else"),
        (_envelope(extra="x"), "nothing else"),
        (_envelope(alg=None), "nothing else"),
        (_envelope(alg="rsa"), "only 'ed25519'"),
        (_envelope(key_id="XYZ"), "16 lowercase hex"),
        (_envelope(signature="***"), "not base64"),
        (_envelope(signature=base64.b64encode(bytes(10)).decode()), "10 bytes"),
        (_envelope(signature=5), "0 bytes"),
    ],
    ids=["not-json", "array", "extra-key", "missing-key", "alg", "key-id", "base64", "short", "wrong-type"],
)
def test_malformed_envelopes_are_bad_signatures(data: bytes, message: str) -> None:
    with pytest.raises(BadSignature, match=message):
        parse_signature(data)
