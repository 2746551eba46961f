"""The replay server's memory of chats (recorder.chats): ids, continuations, list, delete, stop."""

from __future__ import annotations

import json
from typing import Any

from helpers import cassettes

from recorder.chats import PAGE_SIZE, ChatMemory, response_id_in
from recorder.replay import CHATS_KEY, make_replay_app
from recorder.synthetic_conversations import CONVERSATIONS, response_id

CONV = CONVERSATIONS[0]


def turn(chat_id: str, text: str, parent: str | None) -> dict[str, Any]:
    message = {
        "role": "user",
        "content": text,
        "chat_type": "t2t",
        "feature_config": {"thinking_enabled": False, "output_schema": "phase"},
    }
    return {"chat_id": chat_id, "model": "qwen3-max", "parent_id": parent, "messages": [message]}


async def new_chat(client: Any) -> str:
    resp = await client.post(
        "/api/v2/chats/new", json={"chat_type": "t2t", "title": "qwen-gateway"}
    )
    return str((await resp.json())["data"]["id"])


async def test_each_chat_gets_its_own_id_and_continuations_are_checked(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_replay_app(list(cassettes())))
    a, b = await new_chat(client), await new_chat(client)
    assert a != b
    first = await client.post(
        f"/api/v2/chat/completions?chat_id={a}", json=turn(a, CONV.user1, None)
    )
    assert response_id_in(await first.text()) == response_id(CONV, "1")
    # the continuation names the first answer: served
    ok = await client.post(
        f"/api/v2/chat/completions?chat_id={a}", json=turn(a, CONV.user2, response_id(CONV, "1"))
    )
    assert response_id_in(await ok.text()) == response_id(CONV, "2")
    # the same parent in the other chat is unknown there
    bad = await client.post(
        f"/api/v2/chat/completions?chat_id={b}", json=turn(b, CONV.user2, response_id(CONV, "1"))
    )
    body = await bad.json()
    assert body["success"] is False and body["data"]["code"] == "PARENT_NOT_FOUND"


async def test_list_delete_and_stop(aiohttp_client: Any) -> None:
    app = make_replay_app(list(cassettes()))
    client = await aiohttp_client(app)
    ids = [await new_chat(client) for _ in range(PAGE_SIZE + 2)]
    page1 = (await (await client.get("/api/v2/chats/?page=1")).json())["data"]
    page2 = (await (await client.get("/api/v2/chats/?page=2")).json())["data"]
    page3 = (await (await client.get("/api/v2/chats/?page=3")).json())["data"]
    assert len(page1) == PAGE_SIZE and len(page2) == 2 and page3 == []
    assert {c["id"] for c in page1 + page2} == set(ids)
    assert {"id", "title", "created_at", "updated_at", "chat_type"} <= set(page1[0])
    gone = await client.delete(f"/api/v2/chats/{ids[0]}")
    assert (await gone.json())["data"] == {"status": True}
    again = await client.delete(f"/api/v2/chats/{ids[0]}")
    assert (await again.json())["data"]["code"] == "Not_Found"
    refused = await client.post(
        f"/api/v2/chat/completions?chat_id={ids[0]}", json=turn(ids[0], CONV.user1, None)
    )
    assert (await refused.json())["data"]["code"] == "Not_Found"
    stop = await client.post(
        f"/api/v2/chat/completions/stop?chat_id={ids[1]}",
        data=json.dumps({"chat_id": ids[1], "response_id": "r-1"}),
    )
    assert (await stop.json())["success"] is True
    assert app[CHATS_KEY].stops == [(ids[1], "r-1")]


def test_memory_ignores_chats_it_did_not_create() -> None:
    memory = ChatMemory()
    assert memory.check_turn("recorded-id", "any-parent") is None
    assert not memory.delete("recorded-id")
