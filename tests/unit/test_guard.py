"""The payload guard refuses credential-looking data with an error naming the path and
the way out, and lets ordinary data (ids, counts, timestamps, prose) through."""

from __future__ import annotations

import random
import re
from typing import Any

import msgspec
import pytest

from shigoto import App
from shigoto.security import GuardPolicy, SensitiveDataError
from shigoto.security.guard import _CARD, DEFAULT_POLICY, VALUE_PATTERNS, luhn_ok

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA...\n-----END RSA PRIVATE KEY-----"


def check(data: dict[str, Any], policy: GuardPolicy = DEFAULT_POLICY, **kw: Any) -> None:
    policy.check("job", data, msgspec.json.encode(data), **kw)


def refused_path(data: dict[str, Any], policy: GuardPolicy = DEFAULT_POLICY) -> str:
    with pytest.raises(SensitiveDataError) as caught:
        check(data, policy)
    return caught.value.path


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"user": {"password": "hunter2"}}, "data.user.password"),
        ({"passwd": "x"}, "data.passwd"),
        ({"client_secret": "abc"}, "data.client_secret"),
        ({"accessToken": "abc"}, "data.accessToken"),
        ({"refresh-token": "abc"}, "data.refresh-token"),
        ({"api_key": "k"}, "data.api_key"),
        ({"apiKey": "k"}, "data.apiKey"),
        ({"headers": {"Authorization": "x"}}, "data.headers.Authorization"),
        ({"cookie": "sid=1"}, "data.cookie"),
        ({"session_id": "abc"}, "data.session_id"),
        ({"aws": {"secret_access_key": "k"}}, "data.aws.secret_access_key"),
        ({"note": PEM}, "data.note"),
        ({"header": "Bearer abcdefghijklmnopqrstuvwxyz012345"}, "data.header"),
        ({"t": JWT}, "data.t"),
        ({"k": "AKIAIOSFODNN7EXAMPLE"}, "data.k"),
        ({"dsn": "postgres://app:s3cr3t@db.internal/app"}, "data.dsn"),
        ({"gh": "ghp_" + "a" * 36}, "data.gh"),
        ({"pay": "4111 1111 1111 1111"}, "data.pay"),
        ({"note": "card:4111111111111111, exp 12/30"}, "data.note"),
        ({"items": [{"sku": 1}, {"card": "5555-5555-5555-4444"}]}, "data.items.card"),
    ],
)
def test_credentials_are_refused_with_the_path_named(data: dict[str, Any], path: str) -> None:
    assert refused_path(data) == path


def test_the_error_names_the_path_and_both_ways_out() -> None:
    with pytest.raises(SensitiveDataError) as caught:
        check({"user": {"password": "hunter2"}})
    message = str(caught.value)
    assert "data.user.password" in message
    assert 'allow_sensitive=["user.password"]' in message
    assert 'encrypt=["user.password"]' in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "data",
    [
        {"user_id": 1, "email_id": 7},
        {"token_count": 512, "tokens_used": 10, "session_count": 3},
        {"password": None, "token": "", "secret": False},
        {"created_ms": 1_700_000_000_000, "ids": [4111111111111111, 1_234_567_890_123]},
        {"order": "4111 1111 1111 1112"},  # fails Luhn
        # a Luhn-valid digit run inside a hex id: the framework's own batch ids hit this
        {"batch_id": "batch-899b7ac7c3057701031814fb", "sha": "ab4111111111111111cd"},
        {"phone": "+81 3 1234 5678"},
        {"text": "The session starts at nine; bring your token of appreciation."},
        {"url": "https://example.com/path?q=1"},
        {"author": "alice", "oauth_provider": "github", "secretary": "bob"},
    ],
)
def test_ordinary_data_passes(data: dict[str, Any]) -> None:
    check(data)


def test_allow_sensitive_and_encrypted_fields_are_skipped() -> None:
    data = {"user": {"password": "x"}, "token": "t"}
    check(data, allow=["user.password"], encrypted=["token"])
    check(data, allow=["user", "token"])
    assert refused_path({"user": {"password": "x"}, "token": ""}) == "data.user.password"


def test_patterns_are_configurable() -> None:
    policy = GuardPolicy(
        key_words=("pin",),
        value_patterns={"an internal ticket": r"\bINT-\d{6}\b"},
        card_numbers=False,
    )
    assert refused_path({"pin": "1234"}, policy) == "data.pin"
    assert refused_path({"ref": "see INT-123456"}, policy) == "data.ref"
    check({"password": "now allowed by this policy", "pay": "4111111111111111"}, policy)


def test_luhn() -> None:
    assert luhn_ok("4111111111111111")
    assert luhn_ok("378282246310005")
    assert not luhn_ok("4111111111111112")


async def test_every_enqueue_path_is_guarded_and_nothing_is_stored(tmp_path: Any) -> None:
    app = App(f"sqlite:///{tmp_path}/g.db")

    @app.job
    async def login(ctx: object, user_id: int, password: str = "") -> None:
        return None

    queue = app.queue("default")
    try:
        with pytest.raises(SensitiveDataError, match=r"data\.password"):
            await login.enqueue(user_id=1, password="hunter2")
        with pytest.raises(SensitiveDataError, match=r"data\.password"):
            await queue.add("login", {"user_id": 1, "password": "hunter2"})
        with pytest.raises(SensitiveDataError, match=r"data\.password"):
            await queue.add_bulk(
                [
                    {"name": "login", "data": {"user_id": 1}},
                    {"name": "login", "data": {"user_id": 2, "password": "p"}},
                ]
            )
        assert (await queue.counts())["waiting"] == 0
    finally:
        await app.close()


async def test_allowances_per_enqueue_and_per_job_and_guard_off(tmp_path: Any) -> None:
    app = App(f"sqlite:///{tmp_path}/g.db")

    @app.job(allow_sensitive=["legacy_token"])
    async def login(ctx: object, user_id: int, legacy_token: str = "", password: str = "") -> None:
        return None

    try:
        await login.enqueue(user_id=1, legacy_token="abc")
        await login.enqueue(user_id=1, password="p", allow_sensitive=["password"])
        await app.queue().add("other", {"password": "p"}, allow_sensitive=["password"])
        assert (await app.queue().counts())["waiting"] == 3
    finally:
        await app.close()
    off = App(f"sqlite:///{tmp_path}/off.db", guard=False)
    try:
        await off.queue().add("other", {"password": "p"})
    finally:
        await off.close()


def _searched_one_by_one(text: str) -> str | None:
    """What the value rules say when every pattern is searched, in order, as a custom
    policy does: the reference the quick path for the default rules must agree with."""
    for what, pattern in VALUE_PATTERNS.items():
        if re.search(pattern, text):
            return f"the value is {what}"
    if len(text) >= 13 and any(
        13 <= len(d := re.sub(r"\D", "", m.group())) <= 19 and d[0] in "23456" and luhn_ok(d)
        for m in _CARD.finditer(text)
    ):
        return "the value is a card number (passes the Luhn check)"
    return None


PIECES = (
    "-----BEGIN ",
    "RSA ",
    "PRIVATE KEY-----",
    "Bearer ",
    "bEaReR\t",
    "eyJ",
    "eyJhbGciOiJIUzI1.",
    "AKIA",
    "ASIA",
    "ABCDEFGHIJKLMNOP",
    "://",
    "@",
    "u:pw",
    "https",
    "db:",
    "ghp_",
    "xoxb-",
    "sk_live_",
    "glpat-",
    "4111",
    "1111 ",
    "5500-",
    "0000",
    "0004",
    "4242424242424242",
    "7",
    " ",
    "-",
    "_",
    ".",
    "/",
    "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6",
    "x",
    "Z",
    "é",
    "\u212a",
)


def test_the_quick_path_says_what_searching_every_pattern_says() -> None:
    """Strings are searched only for the rules whose literal text they hold; built from
    pieces of every rule, 20,000 strings get the same verdict both ways."""
    rnd = random.Random(14)
    for _ in range(20_000):
        text = "".join(rnd.choice(PIECES) for _ in range(rnd.randint(1, 12)))
        assert DEFAULT_POLICY._value(text) == _searched_one_by_one(text), text


def test_non_ascii_strings_and_custom_rules_are_searched_in_full() -> None:
    # non-ASCII text skips the quick tests (case folding beyond ASCII has surprises)
    assert refused_path({"h": "Grüße, Bearer abcdefghijklmnop0123"}) == "data.h"
    # a policy with rules of its own searches them all
    custom = GuardPolicy(value_patterns={"an internal ticket": r"TICKET-\d{6}"})
    assert refused_path({"t": "see TICKET-123456 today"}, custom) == "data.t"
    check({"t": "see AKIAABCDEFGHIJKLMNOP"}, custom)  # not among its rules


def test_a_card_number_of_13_digits_is_refused_and_one_of_12_passes() -> None:
    assert luhn_ok("4222222222222")
    assert refused_path({"pay": "card 4222222222222 thanks"}) == "data.pay"
    check({"pay": "ref 422222222222 thanks"})  # 12 digits: no card number
