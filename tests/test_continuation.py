"""The pure conversation map of native multi-turn (proxy.continuation)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from proxy.api_models import ChatMessage
from proxy.continuation import (
    MAX_TURN_HASHES,
    answer_digest,
    conversation_entry,
    conversation_key,
    message_digest,
    plan,
    usable_entry,
)


def m(role: str, content: Any, **extra: Any) -> ChatMessage:
    return ChatMessage.model_validate({"role": role, "content": content, **extra})


def key_of(*messages: ChatMessage, scope: str = "") -> str:
    return conversation_key([message_digest(x) for x in messages], scope)


def test_a_first_turn_has_nothing_to_continue() -> None:
    p = plan([m("system", "Be brief."), m("user", "Hi")])
    assert p.key is None and p.tail_start == 2 and len(p.digests) == 2
    assert p.digests == (message_digest(m("system", "Be brief.")), message_digest(m("user", "Hi")))


def test_a_first_turn_digests_its_messages_only_when_they_are_read() -> None:
    """Before the request goes upstream nothing is hashed; the digests (for the answer's
    entry) are computed once, on first read."""
    reads: list[str] = []

    class Counted:
        def __init__(self, role: str, content: str) -> None:
            self.role = role
            self._content = content

        @property
        def content(self) -> str:
            reads.append(self._content)
            return self._content

    p = plan([Counted("system", "S"), Counted("user", "Hi")], "scope")
    assert p.key is None and p.stale_key is None and p.scope == "scope"
    assert reads == []
    first = p.digests
    assert reads == ["S", "Hi"]
    assert first == p.digests and reads == ["S", "Hi"]  # once
    assert first == plan([m("system", "S"), m("user", "Hi")]).digests
    assert "tail_start=2" in repr(p)


def test_a_continuation_looks_up_the_history_up_to_the_last_answer() -> None:
    msgs = [m("system", "S"), m("user", "Hi"), m("assistant", "Hello!"), m("user", "And?")]
    p = plan(msgs)
    assert p.tail_start == 3
    assert p.key == key_of(*msgs[:3])


def test_the_stored_answer_key_is_what_the_client_sends_back() -> None:
    """History + the answer as streamed gives the key the next request looks up."""
    first = [m("user", "Hi")]
    stored = conversation_key([message_digest(first[0]), answer_digest("Hello there!\n")])
    nxt = plan([*first, m("assistant", "  Hello there!"), m("user", "Next")])
    assert nxt.key == stored


def test_reasoning_and_whitespace_do_not_matter() -> None:
    a = m("assistant", "<think>\nlet me see\n</think>\n\nThe answer  is\r\n42.")
    b = m("assistant", "The answer is 42.")
    assert message_digest(a) == message_digest(b)
    assert m("developer", "x") and message_digest(m("developer", "x")) == message_digest(
        m("system", "x")
    )


def test_edits_system_prompts_scopes_and_media_change_the_key() -> None:
    base = [m("system", "S"), m("user", "Hi"), m("assistant", "Hello")]
    k = key_of(*base)
    assert key_of(m("system", "T"), *base[1:]) != k
    assert key_of(base[0], m("user", "Hi!"), base[2]) != k
    assert key_of(*base, scope="key-a") != k
    img = [{"type": "text", "text": "Hi"}, {"type": "image_url", "image_url": {"url": "a.png"}}]
    img2 = [{"type": "text", "text": "Hi"}, {"type": "image_url", "image_url": {"url": "b.png"}}]
    assert message_digest(m("user", img)) != message_digest(m("user", img2))
    assert message_digest(m("user", img)) != message_digest(m("user", "Hi"))


def test_tool_calls_count_but_not_their_ids() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    other_id = {**call, "id": "call_2"}
    a = m("assistant", None, tool_calls=[call])
    assert message_digest(a) == message_digest(m("assistant", None, tool_calls=[other_id]))
    assert message_digest(a) != message_digest(m("assistant", None))
    assert message_digest(a) == answer_digest("", [call])


def test_re_encoded_call_arguments_still_match() -> None:
    """The gateway answered ``{"city": "Paris", "n": 2}``; clients send it back re-encoded
    (Anthropic ``input`` objects become compact JSON, JS ``JSON.stringify``, key order): the
    history still continues the answer. Different values do not."""
    from proxy.conversation import ToolCallRecord

    answered = [ToolCallRecord("call_1", "f", '{"city": "Paris", "n": 2}')]
    key = answer_digest("", answered)
    for sent in ('{"city":"Paris","n":2}', '{"n": 2,\n "city": "Paris"}'):
        call = {"id": "toolu_9", "type": "function", "function": {"name": "f", "arguments": sent}}
        assert message_digest(m("assistant", None, tool_calls=[call])) == key
    other = {"id": "x", "type": "function", "function": {"name": "f", "arguments": '{"n":3}'}}
    assert message_digest(m("assistant", None, tool_calls=[other])) != key


def test_an_assistant_last_message_is_not_a_continuation() -> None:
    assert plan([m("user", "Hi"), m("assistant", "Hel")]).key is None


def test_entries_hold_ids_and_hashes_only_and_are_bounded() -> None:
    digests = [f"{i:032x}" for i in range(200)]
    entry = conversation_entry(
        chat_id="c", account="account-1", parent_id="r", model="qwen3-max", digests=digests, now=1.0
    )
    assert set(entry) == {"chat_id", "account", "parent_id", "model", "turn_hashes", "updated"}
    assert entry["turn_hashes"] == digests[-MAX_TURN_HASHES:]
    assert usable_entry(entry, digests)
    assert not usable_entry(entry, digests[:-1])
    assert not usable_entry({**entry, "parent_id": None}, digests)
    assert not usable_entry("nope", digests)


@given(st.text(), st.sampled_from(["", " ", "\n", "\r\n", "\t  "]))
def test_answer_digest_survives_trimming(text: str, pad: str) -> None:
    assert answer_digest(text + pad) == message_digest(m("assistant", pad + text.strip()))


def test_internal_turns_digest_like_openai_messages() -> None:
    """The front doors' Turn (with ToolCallRecord) and OpenAI messages agree."""
    from proxy.conversation import ToolCallRecord, Turn

    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    openai_side = m("assistant", "Let me check.", tool_calls=[call])
    internal = Turn(
        role="assistant",
        content="Let me check.",
        tool_calls=(ToolCallRecord(id="call_9", name="f", arguments="{}"),),
    )
    assert message_digest(internal) == message_digest(openai_side)
    assert message_digest(Turn(role="system", content="S")) == message_digest(m("developer", "S"))
