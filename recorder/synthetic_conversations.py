"""Synthetic multi-turn cassettes: a two-turn conversation and one with a system prompt.

Like :mod:`recorder.synthetic` (whose frame helpers this module uses), every byte is written from
``docs/protocol.md``, none is captured: the two-step flow of §3 and §4.1, SSE frames of §5.1–§5.4,
and the continuation of §4.1 (a): the second turn goes to the same chat with ``parent_id`` = the
first answer's ``response_id`` (from its ``response.created`` frame) and carries only the new user
text. Each conversation also records the second turn *flattened* into one prompt in a new chat
(§4.1 (b)), which is what a gateway sends with ``conversations = "flatten"``, after its memory was
lost, or when the continuation is refused; so multi-turn clients (chat apps, LangChain) work
offline either way. The system prompt has no slot upstream: it is prepended to the first prompt.

The flattened texts repeat the proxy's format (``proxy.qwen.request.flatten_messages``:
``"System: …"``, then ``"User: …"`` / ``"Assistant: …"`` blocks separated by blank lines) because
``recorder`` never imports ``proxy``; ``tests/test_conversations.py`` replays them through
the proxy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from recorder.cassette import Cassette, Interaction
from recorder.synthetic import (
    BASE_EPOCH_S,
    COMPLETIONS_URL,
    Scenario,
    _completions_headers,
    _Frames,
    _json_compact,
    _pieces,
    _t_headers,
    _uid,
    chats_new_interaction,
    synthetic_cassette,
    user_message,
)

__all__ = ["CONVERSATIONS", "Conversation", "build_all", "flattened"]

CONVERSATION_EPOCH_S = BASE_EPOCH_S + 7200
"""Conversation ``i`` happens ``i`` minutes after 2026-11-22T11:00:00Z."""

SECTIONS = ("3", "4.1", "5.1", "5.2", "5.3", "5.4")


@dataclass(frozen=True)
class Conversation:
    """Two user turns and their answers (pieces as streamed), with an optional system prompt.

    ``messages()`` gives the OpenAI history a client sends for the second turn.
    """

    name: str
    description: str
    system: str | None
    user1: str
    answer1: tuple[str, ...]
    user2: str
    answer2: tuple[str, ...]

    def messages(self) -> list[dict[str, str]]:
        """The second request's OpenAI ``messages``."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [
            *head,
            {"role": "user", "content": self.user1},
            {"role": "assistant", "content": "".join(self.answer1)},
            {"role": "user", "content": self.user2},
        ]

    def first_messages(self) -> list[dict[str, str]]:
        """The first request's OpenAI ``messages``."""
        return self.messages()[:-2]


CONVERSATIONS: tuple[Conversation, ...] = (
    Conversation(
        name="conversation_two_turn",
        description=(
            "Synthetic two-turn conversation: the first turn in a new chat, the second continued "
            "natively (parent_id) and, for flattening gateways, as one prompt in a new chat."
        ),
        system=None,
        user1="Let's plan a picnic. Suggest one snack, in one sentence.",
        answer1=("Bring", " fresh", " strawberries", ": easy", " to share", "."),
        user2="And a drink to go with it?",
        answer2=("Sparkling", " lemonade", " goes", " well", " with", " strawberries", "."),
    ),
    Conversation(
        name="conversation_system_prompt",
        description=(
            "Synthetic conversation under a system prompt (prepended to the first prompt, §4.1), "
            "second turn continued natively and flattened."
        ),
        system="You are a terse assistant. Answer in at most five words.",
        user1="What is the capital of France?",
        answer1=("Paris", "."),
        user2="And of Italy?",
        answer2=("Rome", "."),
    ),
)


def flattened(messages: Sequence[dict[str, str]]) -> str:
    """The one prompt a flattening gateway sends for ``messages`` (see the module docstring)."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    labels = {"user": "User", "assistant": "Assistant"}
    system = [m["content"] for m in messages if m["role"] == "system"]
    blocks = [f"System: {chr(10).join(system)}"] if system else []
    blocks += [f"{labels[m['role']]}: {m['content']}" for m in messages if m["role"] != "system"]
    return "\n\n".join(blocks)


def _turn(conv: Conversation, step: str, prompt: str) -> Scenario:
    """One request of the conversation, as a scenario (its name seeds the ids)."""
    return Scenario(
        name=f"{conv.name}/{step}",
        description=conv.description,
        protocol_sections=SECTIONS,
        model="qwen3-max",
        openai_model="qwen3-max",
        prompt=prompt,
        chat_type="t2t",
        thinking=False,
    )


def response_id(conv: Conversation, step: str) -> str:
    """The ``response_id`` the answer of ``step`` (``1``, ``2``, ``2-flat``) carries."""
    return _uid(f"{conv.name}/{step}", "response_id")


def _completion(
    conv: Conversation,
    step: str,
    prompt: str,
    answer: Sequence[str],
    *,
    chat_key: str,
    parent_id: str | None,
    ts: int,
) -> Interaction:
    sc = _turn(conv, step, prompt)
    chat_id = _uid(chat_key, "chat_id")
    feature_config: dict[str, Any] = {"thinking_enabled": False, "output_schema": "phase"}
    message = user_message(sc, feature_config, ts)
    message["parentId"] = message["parent_id"] = parent_id
    body = {
        "stream": True,
        "version": "2.1",
        "incremental_output": True,
        "chat_id": chat_id,
        "chat_mode": "normal",
        "model": sc.model,
        "parent_id": parent_id,
        "timestamp": ts + 1,
        "messages": [message],
    }
    f = _Frames(sc)
    f.created()
    f.pieces(answer, "answer")
    f.idle_typing()
    f.finished("answer", with_usage=False)
    return Interaction.streamed(
        method="POST",
        uri=f"{COMPLETIONS_URL}?chat_id={chat_id}",
        request_headers=_completions_headers(),
        request_body=_json_compact(body),
        pieces=_pieces(sc, f.events),
        t_headers_s=_t_headers(sc),
    )


def _build(conv: Conversation, epoch_s: int) -> list[Interaction]:
    msgs = conv.messages()
    first = flattened(conv.first_messages())
    return [
        chats_new_interaction(conv.name, "qwen3-max", "t2t", epoch_s),
        _completion(conv, "1", first, conv.answer1, chat_key=conv.name, parent_id=None, ts=epoch_s),
        _completion(
            conv,
            "2",
            conv.user2,
            conv.answer2,
            chat_key=conv.name,
            parent_id=response_id(conv, "1"),
            ts=epoch_s + 30,
        ),
        chats_new_interaction(f"{conv.name}/flat", "qwen3-max", "t2t", epoch_s + 40),
        _completion(
            conv,
            "2-flat",
            flattened(msgs),
            conv.answer2,
            chat_key=f"{conv.name}/flat",
            parent_id=None,
            ts=epoch_s + 40,
        ),
    ]


def build_all() -> list[Cassette]:
    """Every conversation cassette, in :data:`CONVERSATIONS` order."""
    return [
        synthetic_cassette(
            conv.name, conv.description, SECTIONS, _build(conv, CONVERSATION_EPOCH_S + 60 * i)
        )
        for i, conv in enumerate(CONVERSATIONS)
    ]
