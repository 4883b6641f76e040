"""Settings from the environment, read once into a frozen object; a bad value fails by name.

`make demo`, `serve run`, `serve deploy` and a `RayService` all set these the same way, as
environment variables of the processes that run the deployments. Plain API keys are hashed
here and only their SHA-256 digests are kept.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Settings", "SettingsError", "hash_api_key"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    """An environment variable with a value that cannot be used."""


def hash_api_key(key: str) -> str:
    """The hex SHA-256 digest under which an API key is configured and compared."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Settings:
    """The environment, cast and checked. Build with `Settings.from_env()`."""

    api_key_hashes: frozenset[str] = field(default_factory=frozenset, repr=False)
    require_auth: bool = False
    rate_limit_per_minute: int = 60  # per API key (per client address when auth is off); 0 = off
    auth_failures_per_minute: int = 20  # failed authentications per client address; 0 = off
    trusted_proxies: frozenset[str] = frozenset()  # peers (IPs, CIDRs) whose X-Forwarded-For counts
    model_uri: str | None = None  # overrides the Classifier's user_config model_uri
    shadow_model_uri: str | None = None  # overrides the Shadow's user_config model_uri
    log_level: str = "INFO"
    max_file_bytes: int = 10 * 1024 * 1024
    max_batch_files: int = 10
    max_batch_bytes: int = 50 * 1024 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        hashes = {h.lower() for h in _csv(env, "API_KEY_HASHES") + _hashes_file(env)}
        bad = sorted(
            h for h in hashes if len(h) != 64 or any(c not in "0123456789abcdef" for c in h)
        )
        if bad:
            raise SettingsError("API_KEY_HASHES must hold hex SHA-256 digests (64 hex characters)")
        hashes |= {hash_api_key(k) for k in _csv(env, "API_KEYS")}
        require_auth = _bool(env, "REQUIRE_AUTH", False)
        if require_auth and not hashes:
            raise SettingsError("REQUIRE_AUTH is on but neither API_KEYS nor API_KEY_HASHES is set")
        log_level = env.get("LOG_LEVEL", "INFO").strip().upper()
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise SettingsError(f"LOG_LEVEL must be a logging level name, not {log_level!r}")
        trusted_proxies = frozenset(_csv(env, "TRUSTED_PROXIES"))
        for proxy in trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise SettingsError(
                    f"TRUSTED_PROXIES must hold IP addresses or CIDR ranges, not {proxy!r}"
                ) from None
        return cls(
            api_key_hashes=frozenset(hashes),
            require_auth=require_auth,
            rate_limit_per_minute=_int(env, "RATE_LIMIT_PER_MINUTE", 60),
            auth_failures_per_minute=_int(env, "AUTH_FAILURES_PER_MINUTE", 20),
            trusted_proxies=trusted_proxies,
            model_uri=env.get("MODEL_URI") or None,
            shadow_model_uri=env.get("SHADOW_MODEL_URI") or None,
            log_level=log_level,
            max_file_bytes=_int(env, "MAX_FILE_BYTES", 10 * 1024 * 1024, minimum=1),
            max_batch_files=_int(env, "MAX_BATCH_FILES", 10, minimum=1),
            max_batch_bytes=_int(env, "MAX_BATCH_BYTES", 50 * 1024 * 1024, minimum=1),
        )


def _hashes_file(env: Mapping[str, str]) -> list[str]:
    """The digests in the file API_KEY_HASHES_FILE names (a mounted Secret): one a line, blank
    lines and `#` comments skipped. Read at start-up like the other settings; a changed Secret
    takes effect when the replicas restart."""
    path = env.get("API_KEY_HASHES_FILE", "").strip()
    if not path:
        return []
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError as error:
        raise SettingsError(f"API_KEY_HASHES_FILE cannot be read: {error.strerror}") from None
    digests = [line.strip().lower() for line in lines if line.strip() and line.strip()[0] != "#"]
    if any(len(d) != 64 or any(c not in "0123456789abcdef" for c in d) for d in digests):
        raise SettingsError("API_KEY_HASHES_FILE must hold hex SHA-256 digests, one a line")
    return digests


def _csv(env: Mapping[str, str], key: str) -> list[str]:
    return [part.strip() for part in env.get(key, "").split(",") if part.strip()]


def _bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{key} must be true or false, not {raw!r}")


def _int(env: Mapping[str, str], key: str, default: int, minimum: int = 0) -> int:
    raw = env.get(key)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{key} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{key} must be at least {minimum}, not {value}")
    return value
