"""App construction, payload encoding and backend URLs: errors that say what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shigoto import App, ConfigurationError, PayloadError, ShigotoError
from shigoto.backends import SCHEMES, open_backend
from shigoto.backends.sqlite import SqliteBackend


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App(f"sqlite:///{tmp_path / 'jobs.db'}", max_payload_bytes=64)


# -- payloads -----------------------------------------------------------------------


def test_job_data_is_encoded_as_json(app: App) -> None:
    assert app.encode_payload("send", {"user_id": 1, "tags": ["a"]}) == (
        b'{"user_id":1,"tags":["a"]}'
    )
    assert app.encode_payload("send", None) == b"{}"


@pytest.mark.parametrize("data", [[1, 2], "user=1", 42, ("a", 1)])
def test_data_that_is_not_a_mapping_is_refused(app: App, data: Any) -> None:
    with pytest.raises(PayloadError, match="must be a mapping") as info:
        app.encode_payload("send", data)

    assert "'send'" in str(info.value)
    assert type(data).__name__ in str(info.value)


def test_data_with_non_string_keys_is_refused(app: App) -> None:
    with pytest.raises(PayloadError, match="keys must be strings") as info:
        bad: dict[Any, Any] = {1: "a", "ok": 2, (2, 3): "b"}
        app.encode_payload("send", bad)

    assert "1" in str(info.value) and "(2, 3)" in str(info.value)


@pytest.mark.parametrize("value", [object(), 1 + 2j, print])
def test_data_that_is_not_json_encodable_is_refused(app: App, value: Any) -> None:
    with pytest.raises(PayloadError, match="'send': data is not JSON-encodable"):
        app.encode_payload("send", {"v": value})


def test_a_payload_over_the_size_limit_is_refused_with_its_size(app: App) -> None:
    with pytest.raises(PayloadError, match="over the limit of 64") as info:
        app.encode_payload("send", {"blob": "x" * 100})

    assert "pass ids" in str(info.value)


def test_a_payload_exactly_at_the_limit_is_accepted(app: App) -> None:
    data = {"b": "x" * (64 - len(b'{"b":""}'))}

    assert len(app.encode_payload("send", data)) == 64


def test_payload_errors_are_shigoto_errors_and_value_errors(app: App) -> None:
    not_a_mapping: Any = [1]
    with pytest.raises(ShigotoError):
        app.encode_payload("send", not_a_mapping)
    with pytest.raises(ValueError):
        app.encode_payload("send", not_a_mapping)


@pytest.mark.parametrize("limit", [0, -1, 1.5, "big"])
def test_an_invalid_payload_limit_is_refused(tmp_path: Path, limit: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_payload_bytes"):
        App(f"sqlite:///{tmp_path / 'x.db'}", max_payload_bytes=limit)


def test_app_defaults_are_validated_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="attempts"):
        App(f"sqlite:///{tmp_path / 'x.db'}", attempts=0)

    app = App(f"sqlite:///{tmp_path / 'x.db'}", attempts=7, priority=2)
    assert (app.default_options.attempts, app.default_options.priority) == (7, 2)


def test_app_takes_its_url_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("SHIGOTO_URL", url)

    assert App().url == url


def test_app_without_a_url_uses_the_embedded_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHIGOTO_URL", raising=False)

    assert App().url == "sqlite:///shigoto.db"


def test_unknown_worker_settings_are_refused(app: App) -> None:
    with pytest.raises(ConfigurationError, match="lease_seconds"):
        app.worker(lease_seconds=3)


def test_queue_names_are_validated(app: App) -> None:
    for bad in ("", "a{b}", "x" * 129):
        with pytest.raises(ConfigurationError, match="queue name"):
            app.queue(bad)


# -- open_backend -------------------------------------------------------------------


def test_an_unknown_scheme_is_refused_listing_the_supported_ones() -> None:
    with pytest.raises(ConfigurationError, match="unknown backend URL scheme 'mongodb'") as info:
        open_backend("mongodb://localhost/jobs")

    for scheme in SCHEMES:
        assert scheme in str(info.value)


def test_the_app_validates_its_url_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="supported"):
        App("postgres://localhost/db")


@pytest.mark.parametrize("url", ["jobs.db", "", "localhost:6379", "sqlite:/jobs.db"])
def test_a_malformed_url_is_refused_with_an_example(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"sqlite:///jobs\.db"):
        open_backend(url)


def test_a_url_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        open_backend(None)  # type: ignore[arg-type]


def test_schemes_are_case_insensitive(tmp_path: Path) -> None:
    assert isinstance(open_backend(f"SQLite:///{tmp_path / 'a.db'}"), SqliteBackend)


def test_a_sqlite_url_builds_without_touching_the_disk(tmp_path: Path) -> None:
    backend = open_backend(f"sqlite:///{tmp_path / 'sub' / 'jobs.db'}?poll=0.5")

    assert isinstance(backend, SqliteBackend)
    assert backend.poll_interval_s == 0.5
    assert not (tmp_path / "sub").exists()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:"])
def test_a_sqlite_url_needs_a_file_path(url: str) -> None:
    with pytest.raises(ConfigurationError, match="needs a file path"):
        open_backend(url)


@pytest.mark.parametrize(
    ("query", "words"),
    [("poll=0", "poll"), ("poll=fast", "poll"), ("colour=red", "unknown SQLite URL option")],
)
def test_bad_sqlite_url_options_are_refused(tmp_path: Path, query: str, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        open_backend(f"sqlite:///{tmp_path / 'a.db'}?{query}")
