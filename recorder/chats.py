"""The replay server's memory of chats: a stand-in for the site's chat state. Pure (no aiohttp).

A cassette holds request/answer pairs; the site also remembers which chats exist, which
responses each holds, and which were deleted (docs/protocol.md §2, §3, §4.1 (a), §13.1). The replay
server keeps that here so a client's multi-turn, stop and cleanup behaviour can be tested:

- every ``POST /api/v2/chats/new`` gets its own chat id, remembered with its ``title`` and
  ``chat_type``: the recorded answer's id the first time, a fresh one after that (the recorded id
  would otherwise be shared by every chat made from the same cassette);
- a completion in a remembered chat adds the ``response_id`` its answer carries; one whose
  ``parent_id`` is not a response of that chat answers ``PARENT_NOT_FOUND``, one in a deleted
  chat ``Not_Found`` (the §10 "… is not exist" envelope);
- ``GET /api/v2/chats/?page=N`` lists the live chats (newest first, :data:`PAGE_SIZE` a page),
  ``DELETE /api/v2/chats/<id>`` deletes one;
- ``POST /api/v2/chat/completions/stop`` is accepted (``stops`` keeps ``(chat_id,
  response_id)``).

Chats the memory never created (ids a test sends straight from a cassette) are not checked, so
single-request cassettes replay as before.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PAGE_SIZE", "ChatMemory", "ChatRecord", "response_id_in"]

PAGE_SIZE = 20
"""Chats per page of the list endpoint."""

_RESPONSE_ID = re.compile(r'"response_id"\s*:\s*"([^"]+)"')


def response_id_in(body: str) -> str | None:
    """The first ``response_id`` value in a recorded answer body (the ``response.created``
    frame of §5.2), or ``None``."""
    m = _RESPONSE_ID.search(body)
    return m.group(1) if m else None


@dataclass
class ChatRecord:
    """One chat: ``created_at``/``updated_at`` in seconds; ``responses`` the response ids the
    chat holds (valid ``parent_id`` values); ``owner`` a label for tests (``"user"`` for chats a
    test seeds as the account owner's own)."""

    id: str
    title: str
    chat_type: str
    created_at: float
    updated_at: float
    responses: set[str] = field(default_factory=set)
    deleted: bool = False
    owner: str = "gateway"

    def listing(self) -> dict[str, Any]:
        """The chat as the list endpoint shows it (§2)."""
        return {
            "id": self.id,
            "title": self.title,
            "created_at": int(self.created_at),
            "updated_at": int(self.updated_at),
            "chat_type": self.chat_type,
        }


class ChatMemory:
    """Chats by id, their responses and deletions, and the stop calls received."""

    def __init__(self) -> None:
        self.chats: dict[str, ChatRecord] = {}
        self.stops: list[tuple[str, str | None]] = []
        self.deleted: list[str] = []

    def create(
        self,
        *,
        title: str,
        chat_type: str,
        now: float,
        owner: str = "gateway",
        recorded_id: str | None = None,
    ) -> ChatRecord:
        """Remember a new chat: with ``recorded_id`` (the id the cassette answered) the first
        time it is seen, so a single replay stays byte-identical, else with a fresh id."""
        chat_id = recorded_id if recorded_id and recorded_id not in self.chats else None
        chat_id = chat_id or str(uuid.uuid4())
        record = ChatRecord(chat_id, title, chat_type, now, now, owner=owner)
        self.chats[record.id] = record
        return record

    def check_turn(self, chat_id: str | None, parent_id: Any) -> tuple[str, str] | None:
        """``(code, details)`` of the error the site gives a turn in ``chat_id`` after
        ``parent_id``, or ``None`` when the turn may go ahead (or the chat is not remembered)."""
        record = self.chats.get(chat_id or "")
        if record is None:
            return None
        if record.deleted:
            return "Not_Found", f"The chat {chat_id} is not exist"
        if parent_id is not None and parent_id not in record.responses:
            return "PARENT_NOT_FOUND", f"parent message {parent_id} not found"
        return None

    def answered(self, chat_id: str | None, response_id: str | None, now: float) -> None:
        """A turn of ``chat_id`` was answered with ``response_id``."""
        record = self.chats.get(chat_id or "")
        if record is not None:
            record.updated_at = now
            if response_id:
                record.responses.add(response_id)

    def delete(self, chat_id: str) -> bool:
        """Delete a live chat; ``False`` when there is none with that id."""
        record = self.chats.get(chat_id)
        if record is None or record.deleted:
            return False
        record.deleted = True
        self.deleted.append(chat_id)
        return True

    def page(self, n: int) -> list[dict[str, Any]]:
        """Page ``n`` (1-based) of the live chats, newest first."""
        live = sorted(
            (c for c in self.chats.values() if not c.deleted),
            key=lambda c: c.updated_at,
            reverse=True,
        )
        start = (max(n, 1) - 1) * PAGE_SIZE
        return [c.listing() for c in live[start : start + PAGE_SIZE]]

    def live(self) -> list[ChatRecord]:
        """The chats not deleted, in creation order."""
        return [c for c in self.chats.values() if not c.deleted]
