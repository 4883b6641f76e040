import hashlib
import logging

import pytest
from pydantic import ValidationError

from common.settings import Settings, SettingsError, apply_log_level, hash_api_key


def test_defaults_with_an_empty_environment():
    settings = Settings.from_env({})
    assert settings.require_auth is False
    assert settings.rate_limit_per_minute == 60
    assert settings.api_key_hashes == frozenset()


def test_plain_keys_are_kept_only_as_hashes():
    settings = Settings.from_env({"API_KEYS": "k1, k2", "REQUIRE_AUTH": "true"})
    assert settings.api_key_hashes == {hash_api_key("k1"), hash_api_key("k2")}
    assert "k1" not in repr(settings)
    assert hash_api_key("k1") == hashlib.sha256(b"k1").hexdigest()


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"REQUIRE_AUTH": "maybe"}, "REQUIRE_AUTH"),
        ({"RATE_LIMIT_PER_MINUTE": "ten"}, "RATE_LIMIT_PER_MINUTE"),
        ({"API_KEY_HASHES": "xyz"}, "API_KEY_HASHES"),
        ({"REQUIRE_AUTH": "1"}, "REQUIRE_AUTH"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"MAX_FILE_BYTES": "0"}, "MAX_FILE_BYTES"),
        ({"DECODE_WORKERS": "0"}, "DECODE_WORKERS"),
        ({"DECODE_TIMEOUT_S": "soon"}, "DECODE_TIMEOUT_S"),
        ({"DECODE_TIMEOUT_S": "-1"}, "DECODE_TIMEOUT_S"),
    ],
)
def test_bad_values_fail_naming_the_variable(env, name):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)


def test_key_hashes_file_adds_its_digests(tmp_path):
    digest = hash_api_key("from-a-secret")
    secret = tmp_path / "hashes"
    secret.write_text(f"# mounted from a Kubernetes Secret\n{digest.upper()}\n\n")
    settings = Settings.from_env({"API_KEY_HASHES_FILE": str(secret), "REQUIRE_AUTH": "true"})
    assert settings.api_key_hashes == {digest}
    with pytest.raises(SettingsError, match="API_KEY_HASHES_FILE"):
        Settings.from_env({"API_KEY_HASHES_FILE": str(tmp_path / "missing")})


def test_log_level_is_applied_to_the_application_loggers_only_when_set():
    serve_logger = logging.getLogger("ray.serve")
    before = serve_logger.level
    try:
        apply_log_level(Settings.from_env({}), "test")
        assert serve_logger.level == before
        apply_log_level(Settings.from_env({"LOG_LEVEL": "warning"}), "test")
        assert serve_logger.level == logging.WARNING
    finally:
        serve_logger.setLevel(before)


def test_settings_are_frozen_and_typed():
    settings = Settings.from_env({"RATE_LIMIT_PER_MINUTE": "7", "MODEL_URI": ""})
    assert settings.rate_limit_per_minute == 7
    assert settings.model_uri is None
    with pytest.raises(ValidationError):
        settings.rate_limit_per_minute = 8


def test_the_decode_pool_size_and_deadline_are_read():
    settings = Settings.from_env({"DECODE_WORKERS": "3", "DECODE_TIMEOUT_S": "2.5"})
    assert (settings.decode_workers, settings.decode_timeout_s) == (3, 2.5)
    assert (Settings.from_env({}).decode_workers, Settings.from_env({}).decode_timeout_s) == (
        2,
        5.0,
    )


def test_api_key_hashes_file_adds_its_digests(tmp_path):
    path = tmp_path / "api-key-hashes"
    path.write_text(
        f"# rotated 2026-12-01\n{hash_api_key('k1').upper()}\n\n  {hash_api_key('k2')}\n"
    )
    settings = Settings.from_env(
        {
            "API_KEY_HASHES_FILE": str(path),
            "API_KEY_HASHES": hash_api_key("k3"),
            "REQUIRE_AUTH": "1",
        }
    )
    assert settings.api_key_hashes == {hash_api_key(k) for k in ("k1", "k2", "k3")}


@pytest.mark.parametrize("content", ["k1\n", f"{hash_api_key('k1')},{hash_api_key('k2')}\n"])
def test_api_key_hashes_file_refuses_what_is_not_one_digest_a_line(tmp_path, content):
    path = tmp_path / "api-key-hashes"
    path.write_text(content)
    with pytest.raises(SettingsError, match="API_KEY_HASHES_FILE must hold hex SHA-256 digests"):
        Settings.from_env({"API_KEY_HASHES_FILE": str(path)})


def test_a_missing_api_key_hashes_file_fails_naming_the_variable(tmp_path):
    with pytest.raises(SettingsError, match="API_KEY_HASHES_FILE cannot be read"):
        Settings.from_env({"API_KEY_HASHES_FILE": str(tmp_path / "absent")})
