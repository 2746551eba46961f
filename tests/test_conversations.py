"""Issue 9 §1: native multi-turn, end to end with the openai SDK on the replay server.

The cassettes are :mod:`recorder.synthetic_conversations`: each records the first turn, the
second turn continued natively (same chat, ``parent_id`` = the first answer's response id, only
the new user text) and the second turn flattened into a new chat. The replay server remembers
its chats (``recorder.chats``), so a deleted chat or an unknown parent is refused as the site
refuses it.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from helpers import SCENARIO, Stack, cassette, cassettes, start_stack

from proxy.app import make_app
from proxy.config import Settings
from proxy.continuation import Plan, answer_digest, conversation_key, message_digest, plan, scope_of
from proxy.frontdoors.openai_chat import parse_chat
from proxy.state import SERVICE, STORE
from recorder.cassette import Interaction
from recorder.chats import response_id_in
from recorder.replay import CHATS_KEY, UPLOADS_KEY, make_replay_app
from recorder.synthetic import synthetic_cassette
from recorder.synthetic_conversations import CONVERSATIONS, Conversation, flattened, response_id
from recorder.synthetic_media import BY_NAME as MEDIA
from recorder.synthetic_media import png

COMPLETIONS = "/api/v2/chat/completions"
CHATS_NEW = "/api/v2/chats/new"
BY_NAME = {c.name: c for c in CONVERSATIONS}


def sent(stack: Stack) -> list[dict[str, Any]]:
    """The completion bodies the replay server received, in order."""
    return [json.loads(r.body) for r in stack.upstream(COMPLETIONS)]


async def ask(stack: Stack, messages: list[dict[str, str]], *, stream: bool, key: str = "t") -> str:
    async with stack.async_client(api_key=key) as client:
        if not stream:
            done = await client.chat.completions.create(model="qwen3-max", messages=messages)  # type: ignore[arg-type]
            return done.choices[0].message.content or ""
        out = ""
        chunks = await client.chat.completions.create(
            model="qwen3-max",
            messages=messages,  # type: ignore[arg-type]
            stream=True,
        )
        async for chunk in chunks:
            if chunk.choices:
                out += chunk.choices[0].delta.content or ""
        return out


async def settle(stack: Stack) -> None:
    """Let the background work (the conversation store's put) finish."""
    await stack.proxy.app[SERVICE].close()


async def two_turns(stack: Stack, conv: Conversation, *, stream: bool) -> tuple[str, str]:
    a1 = await ask(stack, conv.first_messages(), stream=stream)
    await settle(stack)
    a2 = await ask(stack, conv.messages(), stream=stream)
    return a1, a2


@pytest.mark.parametrize("name", sorted(BY_NAME))
@pytest.mark.parametrize("stream", [False, True])
async def test_the_second_turn_continues_the_chat(
    aiohttp_server: Any, name: str, stream: bool
) -> None:
    """Only the new user message goes upstream, to the same chat, after the first answer."""
    conv = BY_NAME[name]
    stack = await start_stack(aiohttp_server)
    a1, a2 = await two_turns(stack, conv, stream=stream)
    assert a1 == "".join(conv.answer1) and a2 == "".join(conv.answer2)
    assert len(stack.upstream(CHATS_NEW)) == 1
    first, second = sent(stack)
    assert first["messages"][0]["content"] == flattened(conv.first_messages())
    assert first["parent_id"] is None
    assert second["chat_id"] == first["chat_id"]
    assert second["messages"][0]["content"] == conv.user2
    assert second["parent_id"] == response_id(conv, "1")
    assert second["messages"][0]["parent_id"] == second["messages"][0]["parentId"]
    assert second["messages"][0]["parent_id"] == response_id(conv, "1")


async def test_flatten_mode_sends_the_whole_history_to_a_new_chat(aiohttp_server: Any) -> None:
    conv = BY_NAME["conversation_system_prompt"]
    stack = await start_stack(aiohttp_server, conversations="flatten")
    _, a2 = await two_turns(stack, conv, stream=False)
    assert a2 == "".join(conv.answer2)
    assert len(stack.upstream(CHATS_NEW)) == 2
    second = sent(stack)[1]
    assert second["messages"][0]["content"] == flattened(conv.messages())
    assert second["parent_id"] is None


async def test_a_history_the_gateway_never_answered_is_flattened(aiohttp_server: Any) -> None:
    conv = BY_NAME["conversation_two_turn"]
    stack = await start_stack(aiohttp_server)
    assert await ask(stack, conv.messages(), stream=True) == "".join(conv.answer2)
    [only] = sent(stack)
    assert only["messages"][0]["content"] == flattened(conv.messages())


async def test_a_deleted_chat_falls_back_to_a_new_one(aiohttp_server: Any) -> None:
    """The site refuses the turn (chat not found): the client still gets its answer."""
    conv = BY_NAME["conversation_two_turn"]
    stack = await start_stack(aiohttp_server)
    await ask(stack, conv.first_messages(), stream=False)
    await settle(stack)
    [chat] = stack.replay.app[CHATS_KEY].live()
    assert stack.replay.app[CHATS_KEY].delete(chat.id)
    assert await ask(stack, conv.messages(), stream=True) == "".join(conv.answer2)
    _, refused, fallback = sent(stack)
    assert refused["chat_id"] == chat.id and refused["parent_id"] == response_id(conv, "1")
    assert fallback["chat_id"] != chat.id and fallback["parent_id"] is None
    assert fallback["messages"][0]["content"] == flattened(conv.messages())
    # The stale entry is gone; the new chat's answer is remembered instead.
    store = stack.proxy.app[STORE]
    first_key = key_after(conv.first_messages(), conv.answer1)
    assert await store.get_conversation(first_key) is None
    await settle(stack)
    second_key = key_after(conv.messages(), conv.answer2)
    entry = await store.get_conversation(second_key)
    assert entry is not None and entry["chat_id"] == fallback["chat_id"]


async def test_an_unknown_parent_falls_back_too(aiohttp_server: Any) -> None:
    conv = BY_NAME["conversation_system_prompt"]
    stack = await start_stack(aiohttp_server)
    await ask(stack, conv.first_messages(), stream=False)
    await settle(stack)
    store = stack.proxy.app[STORE]
    key = key_after(conv.first_messages(), conv.answer1)
    entry = await store.get_conversation(key)
    assert entry is not None
    await store.put_conversation(key, {**entry, "parent_id": "no-such-response"}, 60)
    assert await ask(stack, conv.messages(), stream=False) == "".join(conv.answer2)
    _, refused, fallback = sent(stack)
    assert refused["parent_id"] == "no-such-response"
    assert fallback["messages"][0]["content"] == flattened(conv.messages())


async def test_a_regenerated_turn_continues_from_the_earlier_answer(aiohttp_server: Any) -> None:
    """Asking the second turn again (a regenerate) branches from the first answer again."""
    conv = BY_NAME["conversation_two_turn"]
    stack = await start_stack(aiohttp_server)
    await two_turns(stack, conv, stream=False)
    assert await ask(stack, conv.messages(), stream=True) == "".join(conv.answer2)
    _, second, again = sent(stack)
    assert again["chat_id"] == second["chat_id"]
    assert again["parent_id"] == response_id(conv, "1")
    assert len(stack.upstream(CHATS_NEW)) == 1


async def test_clients_with_other_api_keys_do_not_share_chats(aiohttp_server: Any) -> None:
    conv = BY_NAME["conversation_two_turn"]
    stack = await start_stack(aiohttp_server, api_keys=["key-a", "key-b"])
    await ask(stack, conv.first_messages(), stream=False, key="key-a")
    await settle(stack)
    assert await ask(stack, conv.messages(), stream=False, key="key-b") == "".join(conv.answer2)
    assert len(stack.upstream(CHATS_NEW)) == 2
    assert sent(stack)[1]["messages"][0]["content"] == flattened(conv.messages())


async def test_entries_hold_ids_and_hashes_not_text(aiohttp_server: Any) -> None:
    conv = BY_NAME["conversation_system_prompt"]
    stack = await start_stack(aiohttp_server)
    await two_turns(stack, conv, stream=False)
    await settle(stack)
    key = key_after(conv.messages(), conv.answer2)
    entry = await stack.proxy.app[STORE].get_conversation(key)
    assert entry is not None
    assert entry["parent_id"] == response_id(conv, "2")
    text = json.dumps(entry)
    for words in (conv.user1, conv.user2, conv.system or "", "".join(conv.answer1)):
        assert words not in text


def key_after(history: list[dict[str, str]], answer: tuple[str, ...], api_key: str = "t") -> str:
    """The key under which the gateway remembers ``answer`` to ``history``."""
    conv = parse_chat(json.dumps({"model": "qwen3-max", "messages": history}).encode())
    digests = [message_digest(t) for t in conv.turns]
    digests.append(answer_digest("".join(answer)))
    return conversation_key(digests, scope_of({"Authorization": f"Bearer {api_key}"}))


async def test_earlier_turns_images_are_not_uploaded_again(aiohttp_server: Any) -> None:
    """A vision turn, then a follow-up question: the picture is uploaded once, the second turn
    carries only its text (the site has the picture in the chat already)."""
    vision = MEDIA["media_vision_chat"]
    [answer1] = [i for i in cassette("media_vision_chat").interactions if COMPLETIONS in i.uri]
    parent = response_id_in(answer1.response_body)
    follow_up = "Is the picture mostly green?"
    frames = [
        {"response.created": {"chat_id": "c", "response_id": "vision-follow-up"}},
        {"choices": [{"delta": {"content": "Yes.", "phase": "answer", "status": "typing"}}]},
        {"choices": [{"delta": {"content": "", "phase": "answer", "status": "finished"}}]},
    ]
    body = {
        "model": "qwen3-max",
        "parent_id": parent,
        "messages": [
            {
                "role": "user",
                "content": follow_up,
                "chat_type": "t2t",
                "feature_config": {"thinking_enabled": False, "output_schema": "phase"},
            }
        ],
    }
    second = Interaction.streamed(
        method="POST",
        uri="https://chat.qwen.ai/api/v2/chat/completions?chat_id=c",
        request_headers={},
        request_body=json.dumps(body),
        pieces=[(0.0, "".join(f"data: {json.dumps(f)}\n\n" for f in frames).encode())],
    )
    extra = synthetic_cassette("vision_follow_up", "test: a follow-up turn", ["4.1"], [second])
    replay: TestServer = await aiohttp_server(make_replay_app([*cassettes(), extra], speed=0))
    base = str(replay.make_url("")).rstrip("/")
    proxy = await aiohttp_server(
        make_app(Settings(upstream_url=base, media_base_url=base, object_store_url=base))
    )
    stack = Stack(replay=replay, proxy=proxy)
    raw = png(24, 24, lambda x, y: (x * 10, 200, y * 10))
    uri = "data:image/png;base64," + base64.b64encode(raw).decode()
    first_turn = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": vision.prompt},
                {"type": "image_url", "image_url": {"url": uri}},
            ],
        }
    ]
    async with stack.async_client() as client:
        done = await client.chat.completions.create(model="qwen3-max", messages=first_turn)  # type: ignore[arg-type]
        await settle(stack)
        history = [
            *first_turn,
            {"role": "assistant", "content": done.choices[0].message.content},
            {"role": "user", "content": follow_up},
        ]
        again = await client.chat.completions.create(model="qwen3-max", messages=history)  # type: ignore[arg-type]
    assert again.choices[0].message.content == "Yes."
    assert len(replay.app[UPLOADS_KEY]) == 1
    assert len(stack.upstream("/api/v2/files/getstsToken")) == 1
    first, follow = sent(stack)
    assert len(first["messages"][0]["files"]) == 1
    assert follow["messages"][0]["files"] == []
    assert follow["messages"][0]["content"] == follow_up
    assert follow["chat_id"] == first["chat_id"] and follow["parent_id"] == parent


async def test_a_conversation_keeps_at_most_two_entries(aiohttp_server: Any) -> None:
    """After the second answer the first turn's entry is dropped; the first answer's stays (a
    regenerated second turn can still continue)."""
    conv = BY_NAME["conversation_two_turn"]
    stack = await start_stack(aiohttp_server)
    store = stack.proxy.app[STORE]
    await ask(stack, conv.first_messages(), stream=False)
    await settle(stack)
    await ask(stack, conv.messages(), stream=False)
    await settle(stack)
    first = key_after(conv.first_messages(), conv.answer1)
    second = key_after(conv.messages(), conv.answer2)
    assert await store.get_conversation(first) is not None
    assert await store.get_conversation(second) is not None
    third_turn = [
        *conv.messages(),
        {"role": "assistant", "content": "".join(conv.answer2)},
        {"role": "user", "content": "Thanks!"},
    ]
    plan = continuation_plan(third_turn)
    assert plan.key == second and plan.stale_key == first
    # storing the third answer drops the first entry
    entry = await store.get_conversation(second)
    await stack.proxy.app[SERVICE]._store_answer("third", entry, 60, plan.stale_key)
    assert await store.get_conversation(first) is None
    assert await store.get_conversation(second) is not None


def continuation_plan(history: list[dict[str, str]], api_key: str = "t") -> Plan:
    conv = parse_chat(json.dumps({"model": "qwen3-max", "messages": history}).encode())
    return plan(conv.turns, scope_of({"Authorization": f"Bearer {api_key}"}))


async def test_a_continuation_goes_to_the_account_that_owns_the_chat(aiohttp_server: Any) -> None:
    """With several accounts, the second turn uses the first turn's account, whatever the
    rotation would pick next."""
    conv = BY_NAME["conversation_two_turn"]
    stack = await start_stack(aiohttp_server, tokens=["tok-one", "tok-two", "tok-three"])
    await ask(stack, conv.first_messages(), stream=False)
    await settle(stack)
    for _ in range(2):  # move the rotation along
        await ask(stack, [{"role": "user", "content": SCENARIO["t2t_answer"].prompt}], stream=True)
    await ask(stack, conv.messages(), stream=True)
    turns = stack.upstream(COMPLETIONS)
    first, second = turns[0], turns[-1]
    assert json.loads(second.body)["parent_id"] == response_id(conv, "1")
    assert second.headers["Authorization"] == first.headers["Authorization"]
    others = {t.headers["Authorization"] for t in turns[1:-1]}
    assert first.headers["Authorization"] not in others  # the rotation did move on
