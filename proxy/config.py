"""Proxy settings: command-line flags over environment over a TOML file over defaults.

Environment variables use the prefix ``QWEN_PROXY_`` (``QWEN_PROXY_PORT=8000``). List settings
take comma-separated values in the environment (``QWEN_PROXY_TOKENS=tok1,tok2``) and arrays in the
TOML file. The TOML file is ``--config PATH`` or ``$QWEN_PROXY_CONFIG``; its keys are the field
names below, at top level. Secrets (tokens, API keys, cookies) are :class:`SecretStr`, so they
never show up in ``repr``, logs or error bodies.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = ["Settings", "load_settings"]

_MB = 1024 * 1024
_MEDIA_HOSTS = ["cdn.qwenlm.ai", "*.qwenlm.ai", "*.alicdn.com", "*.aliyuncs.com"]

DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/141.0.0.0 Safari/537.36"
)


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class Settings(BaseSettings):
    """Every setting of ``qwen-proxy serve``. Units are in the names (``_s`` seconds, bytes)."""

    model_config = SettingsConfigDict(env_prefix="QWEN_PROXY_", extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on (0 = any free port).")
    upstream_url: str = Field("https://chat.qwen.ai", description="chat.qwen.ai base URL.")
    upstream_proxy: str | None = Field(
        None, description="HTTP(S) proxy for upstream requests, e.g. http://127.0.0.1:3128."
    )
    tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="chat.qwen.ai tokens (the browser's `token` cookie); several rotate.",
    )
    cookies: SecretStr | None = Field(
        None, description="Extra cookies from your own browser session, as a Cookie header value."
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Keys clients must send as `Authorization: Bearer <key>`; empty = no check.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API (CORS), e.g. http://localhost:3000 "
        "or *; empty = no CORS headers (a web page cannot use your accounts through the proxy).",
    )
    frontend_version: str = Field("0.2.91", description="The `version` header (PROTOCOL.md §1).")
    user_agent: str = Field(DEFAULT_USER_AGENT, description="User-Agent sent upstream.")
    reasoning: Literal["field", "think_tags"] = Field(
        "field",
        description="Reasoning as `reasoning_content` (field) or inline in <think> tags.",
    )
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Request body limit.")
    connect_timeout_s: float = Field(10.0, gt=0, description="Upstream connect timeout.")
    read_timeout_s: float = Field(
        180.0, gt=0, description="Longest silence allowed between upstream bytes."
    )
    models_ttl_s: float = Field(300.0, ge=0, description="How long the model list is cached.")
    account_cooldown_s: float = Field(
        600.0, ge=0, description="How long an account rests after a captcha or a refused token."
    )
    replay: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Cassette files or folders: serve offline from recordings (no network).",
    )
    # -- images, video, uploads (PROTOCOL.md §6, §7) ------------------------------------------
    image_model: str = Field(
        "qwen3-max",
        description="Upstream model for /v1/images/* and /v1/videos/* when the request names "
        "none or an OpenAI model (dall-e-*, gpt-image-*, sora*).",
    )
    media_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(_MEDIA_HOSTS),
        description="Hosts whose URLs are accepted as generated media (`*.suffix` allowed).",
    )
    media_base_url: str | None = Field(
        None,
        description="When set, media URLs on those hosts are handed out and fetched as "
        "<media_base_url>/<path>?<query> (offline mode sets it to the replay server).",
    )
    object_store_url: str | None = Field(
        None,
        description="When set, uploads go to <object_store_url>/<bucket>/<key> instead of "
        "https://<bucket>.<endpoint>/<key> (offline mode sets it to the replay server).",
    )
    allow_private_fetch: bool = Field(
        False,
        description="Let client-given media URLs point at loopback/private/link-local hosts.",
    )
    media_fetch_timeout_s: float = Field(
        30.0, gt=0, description="Whole-download limit for a client-given or generated media URL."
    )
    max_image_bytes: int = Field(10 * _MB, ge=1, description="Image input/output limit (§7.2).")
    max_video_bytes: int = Field(100 * _MB, ge=1, description="Video input limit (§7.2).")
    max_audio_bytes: int = Field(25 * _MB, ge=1, description="Audio input limit (§7.2).")
    max_document_bytes: int = Field(30 * _MB, ge=1, description="Document input limit (§7.2).")
    max_files_per_request: int = Field(8, ge=1, description="Media parts uploaded per request.")
    video_poll_interval_s: float = Field(
        5.0, ge=0, description="First wait between t2v task polls (§6.3)."
    )
    video_poll_backoff: float = Field(
        1.5, ge=1.0, description="Factor applied to the poll wait after each poll."
    )
    video_poll_max_interval_s: float = Field(
        15.0, ge=0, description="Longest wait between polls (and between keep-alive comments)."
    )
    video_deadline_s: float = Field(
        600.0,
        ge=0,
        description="Give up on a t2v task after this long (504 upstream_task_timeout).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["console", "json"] = "console"
    access_log: bool = Field(False, description="Log one line per request.")

    @field_validator("tokens", "api_keys", "replay", "cors_origins", "media_hosts", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("upstream_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("media_base_url", "object_store_url")
    @classmethod
    def _strip_slash_opt(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else None

    def media_limit(self, kind: str) -> int:
        """The byte limit in bytes for an input of ``kind`` (``image``, ``video``, ``audio``,
        anything else: a document)."""
        return {
            "image": self.max_image_bytes,
            "video": self.max_video_bytes,
            "audio": self.max_audio_bytes,
        }.get(kind, self.max_document_bytes)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # flags > environment > TOML file (model_config["toml_file"], set by load_settings)
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from ``overrides`` (flags), the environment and a TOML file.

    ``config_file`` defaults to ``$QWEN_PROXY_CONFIG``; ``None`` values in ``overrides`` are
    ignored (a flag not given). Raises ``FileNotFoundError`` when a named file is missing and
    ``pydantic.ValidationError`` for bad values.
    """
    path = config_file or (Path(p) if (p := os.environ.get("QWEN_PROXY_CONFIG")) else None)
    clean = {k: v for k, v in overrides.items() if v is not None}
    if path is None:
        return Settings(**clean)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")

    class FileSettings(Settings):
        model_config = SettingsConfigDict(env_prefix="QWEN_PROXY_", extra="forbid", toml_file=path)

    return FileSettings(**clean)
