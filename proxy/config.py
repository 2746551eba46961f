"""Proxy settings: command-line flags over environment over a TOML file over defaults.

Environment variables use the prefix ``QWEN_PROXY_`` (``QWEN_PROXY_PORT=8000``). List settings
take comma-separated values in the environment (``QWEN_PROXY_TOKENS=tok1,tok2``) and arrays in the
TOML file. The TOML file is ``--config PATH`` or ``$QWEN_PROXY_CONFIG``; its keys are the field
names below, at top level. Secrets (tokens, API keys, cookies) are :class:`SecretStr`, so they
never show up in ``repr``, logs or error bodies.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = [
    "ConfigError",
    "KeyLimits",
    "Settings",
    "closest_setting",
    "load_settings",
    "setting_names",
    "unknown_env_vars",
]

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


class KeyLimits(BaseModel):
    """One API key with its limits (``[[keys]]`` in the TOML file). Limits are shared by every
    gateway process on the same Redis. ``0`` = no limit."""

    model_config = ConfigDict(extra="forbid")

    key: SecretStr = Field(description="The key clients send as `Authorization: Bearer <key>`.")
    name: str | None = Field(None, description="A label for logs and metrics (never the key).")
    requests_per_minute: int = Field(0, ge=0, description="Requests in any 60-second window.")
    max_streams: int = Field(0, ge=0, description="Answers (streamed or not) in flight at once.")


def _parse_map(value: Any) -> Any:
    """A ``{pattern: model}`` map from the environment: a JSON object, or comma-separated
    ``pattern=model`` pairs (``claude-*haiku*=qwen3.6-plus,claude-*=qwen3-max``)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("{"):
        return json.loads(text)
    pairs: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, target = item.partition("=")
        if not sep or not key.strip() or not target.strip():
            raise ValueError(f"expected pattern=model, got {item.strip()!r}")
        pairs[key.strip()] = target.strip()
    return pairs


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
        description="Keys clients must send as `Authorization: Bearer <key>` (or `x-api-key`); "
        "empty = no check.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API (CORS), e.g. http://localhost:3000 "
        "or *; empty = no CORS headers (a web page cannot use your accounts through the proxy).",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra names clients may use in the Host header (e.g. gateway.lan), besides "
        "the listening address and localhost; `*` turns the check off. Other Hosts get 403 "
        "(a defence against DNS rebinding).",
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="Longest time a client may take to send a request body (408)."
    )
    write_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Longest time a client may leave the answer unread (its bytes waiting "
        "unsent, none taken) before the gateway drops the connection and stops the answer, "
        "freeing the account's slot.",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Longest time a client may take to send a request line and its headers, "
        "counted from its first byte (or from the connection's opening): 408, then the "
        "connection closes (a defence against slow-header clients holding connections).",
    )
    frontend_version: str = Field(
        "0.3.11",
        description="The `version` header (docs/protocol.md §1, §13.2: 0.3.11 in 2026-09).",
    )
    user_agent: str = Field(DEFAULT_USER_AGENT, description="User-Agent sent upstream.")
    reasoning: Literal["field", "think_tags"] = Field(
        "field",
        description="Reasoning as `reasoning_content` (field) or inline in <think> tags.",
    )
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Request body limit.")
    connect_timeout_s: float = Field(10.0, gt=0, description="Upstream connect timeout.")
    read_timeout_s: float = Field(
        180.0,
        gt=0,
        description="Longest silence allowed between upstream bytes (a JSON answer: its whole "
        "time).",
    )
    models_ttl_s: float = Field(300.0, ge=0, description="How long the model list is cached.")
    account_cooldown_s: float = Field(
        600.0, ge=0, description="How long an account rests after a captcha or a refused token."
    )
    max_inflight_per_account: int = Field(
        4,
        ge=0,
        description="Answers in flight at once per upstream account (0 = no limit); beyond it "
        "requests go to another account, or get 429 accounts_busy when all are at the limit.",
    )
    redis_url: SecretStr | None = Field(
        None,
        description="Share state (account rests and load, conversations, per-key limits) with "
        "other gateway processes through Redis, e.g. redis://127.0.0.1:6379/0; unset = "
        "in-process state.",
    )
    redis_prefix: str = Field("qwen-gateway:", description="Prefix of every Redis key.")
    redis_timeout_s: float = Field(
        0.5,
        gt=0,
        description="Limit for a Redis connect or command; beyond it the gateway serves from "
        "in-process state and reports `degraded` in /healthz.",
    )
    admin_key: SecretStr | None = Field(
        None,
        description="Bearer key for /admin/* (`qwen-proxy accounts`); unset = admin endpoints off.",
    )
    metrics_key: SecretStr | None = Field(
        None,
        description="Bearer key for /metrics; unset = guarded like the API (api_keys).",
    )
    keys: list[KeyLimits] = Field(
        default_factory=list,
        description="API keys with limits (TOML array of tables: key, name, "
        "requests_per_minute, max_streams); accepted like api_keys.",
    )
    replay: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Cassette files or folders: serve offline from recordings (no network).",
    )
    # -- images, video, uploads (docs/protocol.md §6, §7) ------------------------------------------
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
    # -- conversations and chat cleanup (docs/landscape.md §3.6, §3.12) ------------------------
    conversations: Literal["native", "flatten"] = Field(
        "native",
        description="native: a history that continues an answer of the gateway sends only the "
        "new turn to the same upstream chat (parent_id); flatten: every request is one prompt "
        "in a new chat.",
    )
    conversation_ttl_s: float = Field(
        3600.0,
        gt=0,
        description="How long a conversation is remembered after its last turn; with "
        "chat_cleanup=delete its chat is deleted once idle this long.",
    )
    chat_cleanup: Literal["delete", "keep", "temporary"] = Field(
        "delete",
        description="delete: remove the chats the gateway created once idle; keep: leave them; "
        "temporary: create them with chat_mode 'local' (likely unlisted; unproven).",
    )
    chat_title_prefix: str = Field(
        "qwen-gateway",
        min_length=3,
        description="Title of the chats the gateway creates; the reconciler deletes only chats "
        "whose title starts with it.",
    )
    chat_reconcile_interval_s: float = Field(
        3600.0,
        ge=0,
        description="How often leftover gateway chats are looked for (also at start-up); "
        "0 = never (idle chats the gateway tracks are still deleted).",
    )
    spare_chats: bool = Field(
        False,
        description="Keep two chats created ahead per account and text model, so a streamed "
        "turn does not wait for chats/new: one round trip to the site less before the first "
        "token, at the price of two unused chats per account and model while the gateway runs "
        "(deleted at shutdown with chat_cleanup=delete). Never in replay mode.",
    )
    chat_deletes_per_minute: float = Field(
        60.0, gt=0, description="Upper bound on chat deletions per minute (cleanup, reconciler)."
    )
    # -- Anthropic Messages API (/v1/messages) ----------------------------------------------
    anthropic_model_map: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Model names of /v1/messages requests to Qwen models: {pattern: model}, "
        "exact names or shell-style patterns (`claude-*haiku*`), first match wins. In the "
        "environment a JSON object or `pattern=model,pattern=model`.",
    )
    anthropic_default_model: str = Field(
        "qwen3-max",
        description="Qwen model for a `claude-…` name the map does not match; other names "
        "(`qwen3-max`, `qwen3-max-thinking`) pass through unchanged.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["console", "json"] = "console"
    response_ttl_s: float = Field(
        86400.0,
        ge=0,
        description="How long /v1/responses answers are kept for previous_response_id (0: never).",
    )
    access_log: bool = Field(False, description="Log one line per request.")

    @field_validator(
        "tokens",
        "api_keys",
        "replay",
        "cors_origins",
        "media_hosts",
        "allowed_hosts",
        mode="before",
    )
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("redis_url", "admin_key", "metrics_key", "cookies", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # An empty variable (compose's `${VAR:-}`) means "not set", never "the empty key".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("anthropic_model_map", mode="before")
    @classmethod
    def _map(cls, value: Any) -> Any:
        return _parse_map(value)

    @field_validator("upstream_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("media_base_url", "object_store_url")
    @classmethod
    def _strip_slash_opt(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else None

    def secret_values(self) -> list[str]:
        """Every configured secret as plain text: tokens, API keys and each cookie value."""
        from proxy.secrets import cookie_values

        out = [t.get_secret_value() for t in self.tokens]
        out += [k.get_secret_value() for k in self.api_keys]
        if self.cookies is not None:
            out += cookie_values(self.cookies.get_secret_value())
        return out

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


#: ``QWEN_PROXY_*`` variables that are not settings but are read elsewhere (CLI options).
EXTRA_ENV_VARS = frozenset({"QWEN_PROXY_CONFIG", "QWEN_PROXY_CHECK_KEY", "QWEN_PROXY_URL"})

_ENV_PREFIX = "QWEN_PROXY_"
_SECRET_FIELDS = frozenset(
    {"tokens", "cookies", "api_keys", "keys", "redis_url", "admin_key", "metrics_key"}
)


class ConfigError(Exception):
    """A setting is wrong. The message names where it came from (file and line, variable,
    flag), the setting, what is wrong with it and, for a misspelt name, the closest setting.
    Secret values are never quoted."""


def setting_names() -> list[str]:
    """Every setting's name (the TOML keys), in declaration order."""
    return list(Settings.model_fields)


def closest_setting(name: str) -> str | None:
    """The setting whose name is closest to ``name`` (case-insensitive), or ``None``."""
    names = setting_names()
    lowered = {n.lower(): n for n in names}
    if name.lower() in lowered:
        return lowered[name.lower()]
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def unknown_env_vars(environ: Mapping[str, str] | None = None) -> list[str]:
    """Warnings for ``QWEN_PROXY_*`` variables that no setting reads (a misspelt name is
    otherwise silently ignored), each with the closest real variable when there is one."""
    env = os.environ if environ is None else environ
    known = {_ENV_PREFIX + n.upper() for n in setting_names()} | EXTRA_ENV_VARS
    warnings = []
    for var in sorted(env):
        if not var.upper().startswith(_ENV_PREFIX) or var.upper() in known:
            continue
        tail = var.upper().removeprefix(_ENV_PREFIX)
        tails = sorted(k.removeprefix(_ENV_PREFIX) for k in known)
        guess = difflib.get_close_matches(tail, tails, n=1, cutoff=0.7)
        hint = f"; did you mean {_ENV_PREFIX}{guess[0]}?" if guess else ""
        warnings.append(f"{var} is not a qwen-proxy setting and is ignored{hint}")
    return warnings


def _describe(err: Mapping[str, Any], *, secret: bool) -> str:
    msg = str(err.get("msg", "invalid value"))
    if secret or "input" not in err or err.get("type") == "missing":
        return msg
    value = repr(err["input"])
    if len(value) > 60:
        value = value[:57] + "..."
    return f"{msg} (got {value})"


def _toml_line(text: str, key: str) -> int | None:
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=", re.MULTILINE)
    m = pattern.search(text)
    return text.count("\n", 0, m.start()) + 1 if m else None


def _read_toml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    return data, text


def _check_file(path: Path, data: dict[str, Any], text: str) -> None:
    """Unknown keys and wrong values of the file itself, whatever flags or variables say."""
    problems: list[str] = []
    for key in data:
        if key not in Settings.model_fields:
            line = _toml_line(text, key)
            where = f"{path}, line {line}" if line else str(path)
            guess = closest_setting(key)
            hint = f"; did you mean `{guess}`?" if guess else ""
            problems.append(f"config file {where}: unknown setting `{key}`{hint}")
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        _FileOnly(_toml_data=data)
    except ValidationError as exc:
        for err in exc.errors():
            key = str(err["loc"][0]) if err.get("loc") else "?"
            line = _toml_line(text, key)
            where = f"{path}, line {line}" if line else str(path)
            problems.append(
                f"config file {where}: `{key}`: {_describe(err, secret=key in _SECRET_FIELDS)}"
            )
        raise ConfigError("\n".join(problems)) from None


class _FileOnly(Settings):
    """Validates a TOML file's values alone (no environment, no flags)."""

    def __init__(self, *, _toml_data: dict[str, Any]) -> None:
        super().__init__(**_toml_data)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _explain(exc: ValidationError, flags: Mapping[str, Any]) -> ConfigError:
    problems = []
    for err in exc.errors():
        key = str(err["loc"][0]) if err.get("loc") else "?"
        var = _ENV_PREFIX + key.upper()
        if key in flags:
            source = f"--{key.replace('_', '-')}"
        elif var in os.environ:
            source = f"environment variable {var}"
        else:
            source = f"setting `{key}`"
        problems.append(f"{source}: {_describe(err, secret=key in _SECRET_FIELDS)}")
    return ConfigError("\n".join(problems))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from ``overrides`` (flags), the environment and a TOML file.

    ``config_file`` defaults to ``$QWEN_PROXY_CONFIG``; ``None`` values in ``overrides`` are
    ignored (a flag not given). The file is checked on its own first, so a wrong value there is
    reported even when a flag or a variable overrides it. Raises ``FileNotFoundError`` when a
    named file is missing and :class:`ConfigError` (one line per problem, naming the file and
    line, the variable or the flag, and the closest setting for a misspelt key) for anything
    else.
    """
    path = config_file or (Path(p) if (p := os.environ.get("QWEN_PROXY_CONFIG")) else None)
    clean = {k: v for k, v in overrides.items() if v is not None}
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        data, text = _read_toml(path)
        _check_file(path, data, text)
    try:
        if path is None:
            return Settings(**clean)

        class FileSettings(Settings):
            model_config = SettingsConfigDict(
                env_prefix=_ENV_PREFIX, extra="forbid", toml_file=path
            )

        return FileSettings(**clean)
    except ValidationError as exc:
        raise _explain(exc, clean) from None
