"""Field encryption: AES-GCM envelopes bound to job name and field path, key ids,
rotation, and display redaction."""

from __future__ import annotations

import msgspec
import pytest

from shigoto.errors import ConfigurationError, PayloadError
from shigoto.security import DecryptionError, KeyRing, generate_key, redact
from shigoto.security.encryption import (
    MARKER,
    SHOWN,
    decrypt_fields,
    encrypt_fields,
    has_encrypted,
    reencrypt,
)

DATA = {"user_id": 1, "email": "a@example.com", "address": {"street": "1 Main", "zip": "100"}}
PATHS = ["email", "address.street", "missing", "address.nope"]


def test_round_trip_encrypts_only_the_listed_fields_and_leaves_the_input_alone() -> None:
    keys = KeyRing.parse(generate_key())
    sealed = encrypt_fields("mail", DATA, PATHS, keys)
    assert DATA["email"] == "a@example.com"  # the caller's dict is not modified
    assert sealed["user_id"] == 1 and sealed["address"]["zip"] == "100"
    assert set(sealed["email"]) == {MARKER}
    payload = msgspec.json.encode(sealed)
    assert b"a@example.com" not in payload and b"1 Main" not in payload
    assert has_encrypted(payload) and not has_encrypted(msgspec.json.encode(DATA))
    assert decrypt_fields("mail", msgspec.json.decode(payload), keys) == DATA
    assert redact(sealed) == {**DATA, "email": SHOWN, "address": {"street": SHOWN, "zip": "100"}}


def test_any_json_value_can_be_encrypted() -> None:
    keys = KeyRing.parse(generate_key())
    data = {"v": {"nested": [1, 2, {"x": None}]}, "n": 42}
    sealed = encrypt_fields("j", data, ["v", "n"], keys)
    assert decrypt_fields("j", sealed, keys) == data


def test_a_ciphertext_moved_to_another_field_or_job_does_not_decrypt() -> None:
    keys = KeyRing.parse(generate_key())
    sealed = encrypt_fields("mail", {"a": "secret", "b": "other"}, ["a", "b"], keys)
    swapped = {"a": sealed["b"], "b": sealed["a"]}
    with pytest.raises(DecryptionError, match="altered, or moved"):
        decrypt_fields("mail", swapped, keys)
    with pytest.raises(DecryptionError):
        decrypt_fields("other_job", sealed, keys)
    token = sealed["a"][MARKER]
    tampered = {"a": {MARKER: token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]}}
    with pytest.raises(DecryptionError):
        decrypt_fields("mail", tampered, keys)


def test_unknown_key_and_malformed_envelopes_are_clear_errors() -> None:
    sealed = encrypt_fields("j", {"a": 1}, ["a"], KeyRing.parse(generate_key()))
    with pytest.raises(DecryptionError, match="which is not configured"):
        decrypt_fields("j", sealed, KeyRing.parse(generate_key()))
    with pytest.raises(DecryptionError, match="SHIGOTO_ENCRYPTION_KEYS is not set"):
        decrypt_fields("j", sealed, KeyRing([]))
    with pytest.raises(DecryptionError, match="malformed"):
        decrypt_fields("j", {"a": {MARKER: "garbage"}}, KeyRing.parse(generate_key()))


def test_key_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="32 bytes"):
        KeyRing.parse("c2hvcnQ")
    with pytest.raises(ConfigurationError, match="not base64url"):
        KeyRing.parse("!!!not-base64!!!")
    with pytest.raises(ConfigurationError, match="need a key"):
        encrypt_fields("j", {"a": 1}, ["a"], KeyRing([]))
    with pytest.raises(PayloadError, match="not an object"):
        encrypt_fields("j", {"a": 1}, ["a.b"], KeyRing.parse(generate_key()))


def test_the_first_key_encrypts_all_decrypt_and_reencrypt_moves_to_the_first() -> None:
    old, new = generate_key(), generate_key()
    sealed = encrypt_fields("j", {"a": "x", "b": "y"}, ["a", "b"], KeyRing.parse(old))
    both = KeyRing.parse(f"{new}, {old}")
    assert decrypt_fields("j", sealed, both) == {"a": "x", "b": "y"}
    fresh, count = reencrypt("j", sealed, both)
    assert count == 2
    assert decrypt_fields("j", fresh, KeyRing.parse(new)) == {"a": "x", "b": "y"}
    assert reencrypt("j", fresh, both)[1] == 0
