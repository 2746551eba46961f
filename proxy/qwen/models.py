"""The upstream model list and the OpenAI model ids derived from it. Pure.

``GET /api/models`` answers ``{"data": [model, …]}``; the 2026 variant ``/api/v2/models/`` may
nest it as ``data.data`` (docs/protocol.md §8, §2). Each model's ``info.meta`` says what it can do:
``abilities`` holds NUMBERS (``"thinking": 1``), ``capabilities`` booleans, and ``chat_type`` the
chat types it accepts. Variants offered:

- ``<id>-thinking`` when ``abilities.thinking`` or ``capabilities.thinking`` is truthy;
- ``<id>-search`` when ``"search"`` is in ``chat_type``;
- ``<id>-thinking-search`` when both hold;
- ``<id>-image`` when ``"t2i"`` is in ``chat_type`` (text to image, §6.1);
- ``<id>-image-edit`` when ``"image_edit"`` is (§6.2);
- ``<id>-video`` when ``"t2v"`` is (text to video, §6.3).

Media variants do not combine with ``-thinking`` or ``-search``.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from proxy.errors import ModelNotFoundError, clip
from proxy.qwen.request import ModelRoute, split_model_name

__all__ = ["Catalog", "UpstreamModel", "parse_models"]


@dataclass(frozen=True, slots=True)
class UpstreamModel:
    """One upstream model: its id, display name and what it supports."""

    id: str
    name: str
    thinking: bool
    search: bool
    created: int
    chat_types: tuple[str, ...]

    @property
    def media_variants(self) -> tuple[str, ...]:
        """The media suffixes offered: ``image``, ``image-edit``, ``video`` (in that order)."""
        pairs = (("t2i", "image"), ("image_edit", "image-edit"), ("t2v", "video"))
        return tuple(suffix for chat_type, suffix in pairs if chat_type in self.chat_types)


def _truthy(v: Any) -> bool:
    # abilities are numbers (1/0), capabilities booleans; strings like "1" occur in forks.
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return v > 0
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes")
    return False


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def parse_models(payload: Any) -> list[UpstreamModel]:
    """Parse a model-list answer. Unknown or malformed entries are skipped, never fatal."""
    data = payload.get("data") if isinstance(payload, dict) else payload
    if isinstance(data, dict):
        data = data.get("data")
    if not isinstance(data, list):
        return []
    out: list[UpstreamModel] = []
    for entry in data:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        info = _dict(entry.get("info"))
        if info.get("is_active") is False:
            continue
        meta = _dict(info.get("meta"))
        abilities = _dict(meta.get("abilities"))
        caps = _dict(meta.get("capabilities"))
        chat_types = meta.get("chat_type")
        if not isinstance(chat_types, list):
            chat_types = []
        created = info.get("created_at") or entry.get("created") or 0
        out.append(
            UpstreamModel(
                id=entry["id"],
                name=str(entry.get("name") or info.get("name") or entry["id"]),
                thinking=_truthy(abilities.get("thinking")) or _truthy(caps.get("thinking")),
                search="search" in chat_types,
                created=created if isinstance(created, int) else 0,
                chat_types=tuple(str(c) for c in chat_types),
            )
        )
    return out


_MEDIA_CHAT_TYPE = {"image": "t2i", "image_edit": "image_edit", "video": "t2v"}


_NO_FLAGS: frozenset[str] = frozenset()
_MAX_ROUTES = 256  # resolved model names kept per catalog


class Catalog:
    """The models on offer, and how an OpenAI model id routes upstream."""

    def __init__(self, models: Iterable[UpstreamModel]) -> None:
        self.models = {m.id: m for m in models}
        self._folded = {m.id.lower(): m for m in self.models.values()}
        # resolved names (a catalog is replaced, never changed, when the list is refreshed);
        # bounded, since clients choose the names; a refused name is not kept
        self._routes = functools.lru_cache(maxsize=_MAX_ROUTES)(self._route)

    def model_ids(self) -> list[str]:
        """Every id ``GET /v1/models`` lists (variants included), in its order."""
        return [entry["id"] for entry in self.openai_list()["data"]]

    def _unknown(self, name: str) -> str:
        """The 404 message: the closest id, and every model (variants are at /v1/models)."""
        shown = name if len(name) <= 80 else name[:77] + "..."
        ids = self.model_ids()
        guess = difflib.get_close_matches(name.lower(), [i.lower() for i in ids], n=1, cutoff=0.6)
        hint = ""
        if guess:
            hint = " Did you mean `" + next(i for i in ids if i.lower() == guess[0]) + "`?"
        if not self.models:
            return f"The model `{shown}` does not exist: the upstream lists no models."
        return (
            f"The model `{shown}` does not exist.{hint} The {len(self.models)} models are: "
            f"{', '.join(sorted(self.models))} (GET /v1/models lists all {len(ids)} ids, "
            "with their -thinking, -search, -image, -image-edit and -video variants)."
        )

    def openai_list(self) -> dict[str, Any]:
        """``GET /v1/models`` body: ``{"object": "list", "data": [{id, object, created,
        owned_by}]}``."""
        data: list[dict[str, Any]] = []
        for m in self.models.values():
            ids = [m.id]
            if m.thinking:
                ids.append(f"{m.id}-thinking")
            if m.search:
                ids.append(f"{m.id}-search")
            if m.thinking and m.search:
                ids.append(f"{m.id}-thinking-search")
            ids.extend(f"{m.id}-{suffix}" for suffix in m.media_variants)
            data.extend(
                {"id": i, "object": "model", "created": m.created, "owned_by": "qwen"} for i in ids
            )
        return {"object": "list", "data": data}

    def route(self, name: str, *, enable_thinking: bool | None = None) -> ModelRoute:
        """Resolve an OpenAI model id. Raises :class:`ModelNotFoundError` for unknown ids or
        variants the model does not support. A name resolved once is looked up after that."""
        return self._routes(name, enable_thinking)

    def _route(self, name: str, enable_thinking: bool | None) -> ModelRoute:
        exact = self.models.get(name) or self._folded.get(name.lower())
        if exact is not None:
            base, flags = exact.id, _NO_FLAGS
        else:
            base, flags = split_model_name(name.lower())
        model = self.models.get(base) or self._folded.get(base)
        if model is None:
            raise ModelNotFoundError(self._unknown(name), param="model")
        base = model.id
        if "thinking" in flags and not model.thinking:
            raise ModelNotFoundError(
                f"The model `{clip(base)}` has no thinking variant.", param="model"
            )
        if "search" in flags and not model.search:
            raise ModelNotFoundError(
                f"The model `{clip(base)}` has no search variant.", param="model"
            )
        media = flags & {"image", "image_edit", "video"}
        if media:
            if len(flags) > 1:
                raise ModelNotFoundError(
                    f"The model `{clip(name)}` does not exist: media variants (-image, "
                    "-image-edit, -video) do not combine with other suffixes.",
                    param="model",
                )
            flag = next(iter(media))
            chat_type = _MEDIA_CHAT_TYPE[flag]
            if chat_type not in model.chat_types:
                raise ModelNotFoundError(
                    f"The model `{clip(base)}` has no -{flag.replace('_', '-')} variant "
                    f"(chat types: {', '.join(model.chat_types) or 'none'}).",
                    param="model",
                )
            return ModelRoute(model=model.id, chat_type=chat_type, thinking=False)
        thinking = "thinking" in flags or bool(enable_thinking and model.thinking)
        return ModelRoute(
            model=model.id, chat_type="search" if "search" in flags else "t2t", thinking=thinking
        )
