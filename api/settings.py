"""The API's settings: one ``Settings`` read from ``MTL_TUNE_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

import storage
from api.auth import default_token_file
from tuner.limits import Limits


class Settings(BaseSettings):
    """``MTL_TUNE_STORAGE``, ``MTL_TUNE_API_TOKEN``, ``MTL_TUNE_TOKEN_FILE``, ``MTL_TUNE_ALLOWED_HOSTS``,
    ``MTL_TUNE_DATA_DIR``, ``MTL_TUNE_MAX_BODY_BYTES``, ..."""

    model_config = SettingsConfigDict(env_prefix="MTL_TUNE_", extra="ignore")

    storage: str = Field(default_factory=storage.default_url, description="SQLAlchemy URL of the study database")
    api_token: SecretStr | None = Field(
        None, description="when set, changes need it ('Authorization: Bearer' or the dashboard's cookie)"
    )
    token_file: Path = Field(
        default_factory=default_token_file, description="where `serve` keeps the token it made, when none is set"
    )
    allowed_hosts: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="comma-separated Host names accepted besides this machine's own ('*': any); unset: any, but "
        "`serve` on one address accepts only that address and this machine's names",
    )
    data_dir: Path = Field(Path("data"), description="the only directory csv problems may read data files from")
    max_body_bytes: int = Field(1_048_576, ge=1, description="larger request bodies are refused with 413")
    worker_grace_seconds: int = Field(60, ge=1, description="a running claim silent this long is not a live worker")
    importance_max_trials: int = Field(2000, ge=10, description="importances use this many most recent trials")
    keep_alive_seconds: int = Field(5, ge=1, description="an idle connection is closed this long after a response")
    request_head_seconds: float = Field(
        10.0, gt=0, description="a request's line and headers must arrive within this long, or the connection closes"
    )

    @field_validator("storage")
    @classmethod
    def _normalized(cls, value: str) -> str:
        try:
            return storage.normalize_url(value)
        except storage.StorageError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()] or None
        return value

    @field_validator("api_token")
    @classmethod
    def _blank_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None

    @model_validator(mode="after")
    def _limits_readable(self) -> Settings:
        """A malformed ``MTL_TUNE_MAX_*`` stops the server at its start, naming the variable, rather than failing
        every launch later."""
        Limits.from_env()
        return self


@lru_cache
def get_settings() -> Settings:
    """The process's settings; tests and ``create_app(settings)`` override this dependency."""
    return Settings()
