"""Settings from the environment, read once through pydantic-settings; a bad value fails by name.

`make demo`, `serve run`, `serve deploy` and a `RayService` all set these the same way, as
environment variables of the processes that run the deployments (never through `runtime_env`,
which Ray writes into its logs). Plain API keys are hashed here and only their SHA-256 digests
are kept; `API_KEY_HASHES_FILE` names a file of digests (one per line), e.g. a mounted
Kubernetes Secret.

Precedence: an environment variable applies to the whole process and wins over the
`user_config` of `serve_config.yaml` where both name the same thing (`MODEL_URI`,
`SHADOW_MODEL_URI`, `LOG_LEVEL`); the replicas log which one they use at start-up and on every
reconfigure (`deployments.model_slot.resolve_model_uri`, `apply_log_level`).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "SettingsError", "apply_log_level", "get_settings", "hash_api_key"]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
_HEX = frozenset("0123456789abcdef")
# The loggers the application writes to: Serve's, which carries the request id into JSON lines.
_APPLICATION_LOGGERS = ("ray.serve",)


class SettingsError(ValueError):
    """An environment variable with a value that cannot be used."""


def hash_api_key(key: str) -> str:
    """The hex SHA-256 digest under which an API key is configured and compared."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


CsvSet = Annotated[frozenset[str], NoDecode]  # "a, b,c" in the environment


class Settings(BaseSettings):
    """The environment, cast and checked. `get_settings()` gives the process's one copy."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    api_keys: CsvSet = Field(default=frozenset(), repr=False, exclude=True)  # hashed, then empty
    api_key_hashes: CsvSet = Field(default=frozenset(), repr=False)
    api_key_hashes_file: Path | None = None  # digests, one per line (a mounted Secret)
    require_auth: bool = False
    rate_limit_per_minute: int = Field(60, ge=0)  # per key (per address without auth); 0 = off
    auth_failures_per_minute: int = Field(20, ge=0)  # failed authentications per address; 0 = off
    trusted_proxies: CsvSet = frozenset()  # peers (IPs, CIDRs) whose X-Forwarded-For counts
    model_uri: str | None = None  # overrides the Classifier's user_config model_uri
    shadow_model_uri: str | None = None  # overrides the Shadow's user_config model_uri
    log_level: LogLevel | None = None  # None: serve_config.yaml's logging_config.log_level
    c2pa_trust_anchors: Path | None = None  # PEM file of trusted C2PA roots
    max_file_bytes: int = Field(10 * 1024 * 1024, ge=1)
    max_batch_files: int = Field(10, ge=1)
    max_batch_bytes: int = Field(50 * 1024 * 1024, ge=1)
    decode_workers: int = Field(2, ge=1)  # concurrent decodes (worker processes) per replica
    decode_timeout_s: float = Field(5.0, gt=0)  # one upload's decode; past it the worker is killed

    @field_validator("api_keys", "api_key_hashes", "trusted_proxies", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return frozenset(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("model_uri", "shadow_model_uri", "log_level", "api_key_hashes_file",
                     "c2pa_trust_anchors", mode="before")  # fmt: skip
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_name(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: frozenset[str]) -> frozenset[str]:
        for proxy in value:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"must hold IP addresses or CIDR ranges, not {proxy!r}") from None
        return value

    @model_validator(mode="after")
    def _keys(self) -> Settings:
        hashes = {h.lower() for h in self.api_key_hashes}
        if any(len(h) != 64 or not set(h) <= _HEX for h in hashes):
            raise ValueError("API_KEY_HASHES must hold hex SHA-256 digests (64 hex characters)")
        if self.api_key_hashes_file is not None:
            in_file = _digests_in(self.api_key_hashes_file)
            if any(len(h) != 64 or not set(h) <= _HEX for h in in_file):
                raise ValueError("API_KEY_HASHES_FILE must hold hex SHA-256 digests, one a line")
            hashes |= in_file
        hashes |= {hash_api_key(k) for k in self.api_keys}
        if self.require_auth and not hashes:
            raise ValueError("REQUIRE_AUTH is on but no API key is configured (API_KEYS, "
                             "API_KEY_HASHES or API_KEY_HASHES_FILE)")  # fmt: skip
        object.__setattr__(self, "api_key_hashes", frozenset(hashes))  # frozen: set once here
        object.__setattr__(self, "api_keys", frozenset())
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings of `environ` (default: this process's environment); SettingsError
        naming the variable when one is unusable."""
        try:
            if environ is None:
                return cls()
            known = {name.upper() for name in cls.model_fields}
            return cls(**{k.lower(): v for k, v in environ.items() if k.upper() in known})
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from None


@functools.cache
def get_settings() -> Settings:
    """This process's settings, read from the environment once."""
    return Settings.from_env()


def apply_log_level(settings: Settings, who: str) -> None:
    """`LOG_LEVEL`, when set, on the application's loggers (it wins over logging_config)."""
    if settings.log_level is None:
        return
    for name in _APPLICATION_LOGGERS:
        logging.getLogger(name).setLevel(settings.log_level)
    logging.getLogger("ray.serve").info("%s: log level %s from LOG_LEVEL", who, settings.log_level)


def _digests_in(path: Path) -> set[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"API_KEY_HASHES_FILE cannot be read: {exc.strerror}") from None
    return {line.strip().lower() for line in lines if line.strip() and not line.startswith("#")}


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        message = error.get("msg", "invalid").removeprefix("Value error, ")
        parts.append(f"{where.upper()}: {message}" if where else message)
    return "; ".join(parts)
