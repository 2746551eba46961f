"""Fixtures: OpenAI-side cassettes that answer the conformance probes as broken proxies do.

Each fixture is one cassette standing in for a whole OpenAI-compatible proxy: the replay server
serves it (``recorder/matching.py`` matches ``/v1/chat/completions`` on model, stream and the
last user message, ``/v1/images/generations`` on model and prompt), and ``qwen-proxy check`` runs
against it. :func:`healthy` answers every probe correctly; each broken fixture changes only the
answers that show one failure users of other Qwen proxies report (LANDSCAPE.md §3: #2 empty 200s,
#7/#10 ``![image](null)``, #8 duplicated streamed text, #13 garbled Chinese, #14 opaque errors)
and :data:`BROKEN` names the checks that must fail and the diagnosis each must give.

Everything here is synthetic (provenance ``kind: synthetic``), written from those descriptions,
not captured. Regenerate the files after a change with::

    /tmp/venv/bin/python tests/broken_proxies.py

``tests/test_conformance_broken.py`` fails when the files differ from this builder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.conformance.diagnosis import cp1252_mojibake, gbk_mojibake, latin1_mojibake
from proxy.conformance.probes import (
    AUTH_PROMPT,
    BAD_JSON_BODY,
    ECHO_EN_PROMPT,
    ECHO_EN_SENTENCE,
    ECHO_ZH_PROMPT,
    ECHO_ZH_SENTENCE,
    IMAGE_PROMPT,
    OVERSIZE_PROMPT,
    STREAM_PROMPT,
    THINK_PROMPT,
    UNKNOWN_MODEL,
    UNKNOWN_MODEL_PROMPT,
)
from recorder.cassette import Cassette, Interaction, Provenance

BROKEN_DIR = Path(__file__).resolve().parent / "cassettes" / "broken"
ROOT = "http://broken-proxy.test"
BASE = f"{ROOT}/v1"
TEXT, THINKING, IMAGE = "qwen3-max", "qwen3-max-thinking", "qwen3-max-image"
IMAGE_URL = "https://images.broken-proxy.test/probe/red-apple.png"
"""The image URL the healthy fixture returns; tests rewrite it to a local image server."""
CREATED = 1795341600
SECTIONS = ["LANDSCAPE.md §3", "PROTOCOL.md §5.4", "PROTOCOL.md §6.4", "PROTOCOL.md §11.9"]
_JSON = {"Content-Type": ["application/json"]}
_REQ_HEADERS = {"Content-Type": ["application/json"]}

EN_PIECES = ("The quick", " brown fox", " jumps over", " the lazy", " dog near", " the quiet")
EN_PIECES += (" river", ".")
ZH_PIECES = ("我们", "在北京", "的咖啡馆", "里讨论", "量子", "计算", "。")
_WORDS = "one two three four five six seven eight nine ten eleven twelve".split()
_WORD_PIECES = tuple(f" {w}" if i else w.capitalize() for i, w in enumerate(_WORDS))
STREAM_PIECES = tuple(p for w in _WORD_PIECES for p in (w, ","))[:-1]
STREAM_PIECES = (*STREAM_PIECES, ".")
THINK_REASONING = ("221 is odd.", " 13 × 17 = 221,", " so it is not prime.")
THINK_ANSWER = ("No", ":", " 221", " = 13 × 17", ".")
TUTORIAL = (
    "Here is how to draw a red apple: Step 1: sketch a round outline with a pencil. "
    "Step 2: add the stem and a leaf. Step 3: colour it in with red, leaving a highlight."
)


# -- OpenAI objects ----------------------------------------------------------------------------


def completion(model: str, content: str, cid: str) -> dict[str, Any]:
    """A ``chat.completion`` with one assistant message."""
    return {
        "id": f"chatcmpl-{cid}",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30},
    }


def chunk(model: str, cid: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    """A ``chat.completion.chunk`` with one choice."""
    return {
        "id": f"chatcmpl-{cid}",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


@dataclass(frozen=True)
class StreamStyle:
    """How a (possibly broken) proxy streams: the faults it has."""

    cumulative: bool = False
    done: bool = True
    finish: bool = True
    shape: Callable[[dict[str, Any]], dict[str, Any]] | None = None


def stream_events(
    model: str,
    cid: str,
    pieces: tuple[str, ...],
    style: StreamStyle,
    *,
    reasoning: tuple[str, ...] = (),
    usage: bool = False,
) -> list[str]:
    """The ``data:`` payloads of a streamed answer in ``style``."""
    chunks = [chunk(model, cid, {"role": "assistant", "content": ""})]
    chunks += [chunk(model, cid, {"reasoning_content": r}) for r in reasoning]
    sent = ""
    for piece in pieces:
        sent += piece
        chunks.append(chunk(model, cid, {"content": sent if style.cumulative else piece}))
    if style.finish:
        chunks.append(chunk(model, cid, {}, "stop"))
    if usage:
        last = chunk(model, cid, {})
        last["choices"] = []
        last["usage"] = {"prompt_tokens": 21, "completion_tokens": 24, "total_tokens": 45}
        chunks.append(last)
    if style.shape is not None:
        chunks = [style.shape(c) for c in chunks]
    datas = [json.dumps(c, ensure_ascii=False) for c in chunks]
    return [*datas, "[DONE]"] if style.done else datas


# -- interactions ------------------------------------------------------------------------------


def _request(path: str, body: Any, method: str = "POST") -> dict[str, Any]:
    text = body if isinstance(body, str) or body is None else json.dumps(body, ensure_ascii=False)
    return {
        "method": method,
        "uri": BASE + path,
        "request_headers": dict(_REQ_HEADERS),
        "request_body": text,
    }


def chat_request(model: str, prompt: str, stream: bool, **more: Any) -> dict[str, Any]:
    """The request the harness sends (only model, stream and the prompt are matched)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": stream,
    }
    body.update(more)
    return _request("/chat/completions", body)


def json_answer(req: dict[str, Any], status: int, body: Any, reason: str = "") -> Interaction:
    """A plain JSON (or empty, for ``body=None``) answer."""
    text = "" if body is None else json.dumps(body, ensure_ascii=False)
    headers = dict(_JSON) if body is not None else {"Content-Type": ["text/plain"]}
    return Interaction(
        status=status, reason=reason or "OK", response_headers=headers, response_body=text, **req
    )


def sse_answer(req: dict[str, Any], datas: list[str]) -> Interaction:
    """A streamed answer, one network chunk per event, 15 ms apart."""
    events = [f"data: {d}\n\n".encode() for d in datas]
    return Interaction.streamed(
        pieces=[(round(0.015 * i, 3), e) for i, e in enumerate(events)],
        response_headers={"Content-Type": ["text/event-stream; charset=utf-8"]},
        t_headers_s=0.05,
        **req,
    )


def error(status: int, message: str, type_: str, code: str) -> dict[str, Any]:
    """An OpenAI error object."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


@dataclass(frozen=True)
class Proxy:
    """The answers of one (possibly broken) proxy; defaults are correct answers."""

    zh: str = ECHO_ZH_SENTENCE
    zh_stream: tuple[str, ...] = ZH_PIECES
    style: StreamStyle = StreamStyle()
    image_chat: str = f"![image]({IMAGE_URL})"
    image_url: str | None = IMAGE_URL
    errors_empty_200: bool = False
    auth_as_200: str | None = None


def interactions(p: Proxy) -> list[Interaction]:
    """Every probe's answer by proxy ``p``."""
    models = {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": CREATED, "owned_by": "qwen"}
            for m in (TEXT, THINKING, IMAGE)
        ],
    }
    out = [
        json_answer(_request("/models", None, "GET"), 200, models),
        json_answer(dict(_request("/models", None, "GET"), uri=ROOT + "/models"), 200, models),
        json_answer(
            chat_request(TEXT, ECHO_EN_PROMPT, False), 200, completion(TEXT, ECHO_EN_SENTENCE, "en")
        ),
        sse_answer(
            chat_request(TEXT, ECHO_EN_PROMPT, True),
            stream_events(TEXT, "en-stream", EN_PIECES, p.style),
        ),
        json_answer(chat_request(TEXT, ECHO_ZH_PROMPT, False), 200, completion(TEXT, p.zh, "zh")),
        sse_answer(
            chat_request(TEXT, ECHO_ZH_PROMPT, True),
            stream_events(TEXT, "zh-stream", p.zh_stream, p.style),
        ),
        sse_answer(
            chat_request(TEXT, STREAM_PROMPT, True, stream_options={"include_usage": True}),
            stream_events(TEXT, "stream", STREAM_PIECES, p.style, usage=True),
        ),
        sse_answer(
            chat_request(THINKING, THINK_PROMPT, True),
            stream_events(
                THINKING,
                "think",
                THINK_ANSWER,
                StreamStyle(done=p.style.done, finish=p.style.finish, shape=p.style.shape),
                reasoning=THINK_REASONING,
            ),
        ),
        json_answer(
            chat_request(IMAGE, IMAGE_PROMPT, False), 200, completion(IMAGE, p.image_chat, "image")
        ),
        json_answer(
            _request(
                "/images/generations",
                {"model": IMAGE, "prompt": IMAGE_PROMPT, "n": 1, "size": "1024x1024"},
            ),
            200,
            {"created": CREATED, "data": [{"url": p.image_url, "revised_prompt": IMAGE_PROMPT}]},
        ),
    ]
    if p.auth_as_200 is not None:
        out.append(
            json_answer(
                chat_request(TEXT, AUTH_PROMPT, False), 200, completion(TEXT, p.auth_as_200, "auth")
            )
        )
    else:
        out.append(
            json_answer(
                chat_request(TEXT, AUTH_PROMPT, False),
                401,
                error(
                    401, "Incorrect API key provided.", "authentication_error", "invalid_api_key"
                ),
                "Unauthorized",
            )
        )
    errors = [
        (
            _request("/chat/completions", BAD_JSON_BODY.decode()),
            400,
            error(
                400, "the request body is not valid JSON", "invalid_request_error", "invalid_json"
            ),
            "Bad Request",
        ),
        (
            chat_request(UNKNOWN_MODEL, UNKNOWN_MODEL_PROMPT, False),
            404,
            error(
                404,
                f"The model `{UNKNOWN_MODEL}` does not exist.",
                "invalid_request_error",
                "model_not_found",
            ),
            "Not Found",
        ),
        (
            _request(
                "/chat/completions",
                {
                    "model": TEXT,
                    "messages": [
                        {"role": "system", "content": "<padding>"},
                        {"role": "user", "content": OVERSIZE_PROMPT},
                    ],
                    "stream": False,
                },
            ),
            413,
            error(
                413, "the request body is too large", "invalid_request_error", "request_too_large"
            ),
            "Payload Too Large",
        ),
    ]
    for req, status, body, reason in errors:
        if p.errors_empty_200:
            out.append(json_answer(req, 200, None))
        else:
            out.append(json_answer(req, status, body, reason))
    return out


def cassette(name: str, description: str, p: Proxy) -> Cassette:
    """The cassette of proxy ``p``."""
    return Cassette(
        name=name,
        description=description,
        provenance=Provenance(
            "synthetic", "2026-11-22", "tests/broken_proxies.py", "1", list(SECTIONS), None
        ),
        interactions=interactions(p),
    )


def healthy() -> Cassette:
    """A proxy that answers every probe correctly (kept in memory, not written)."""
    return cassette(
        "healthy", "Synthetic OpenAI-side proxy answering every probe correctly.", Proxy()
    )


def _non_openai(c: dict[str, Any]) -> dict[str, Any]:
    """Chunks shaped by hand: ``object`` of a completion, ``created`` as text, no ``index``."""
    out = dict(c, object="chat.completion", created=str(c["created"]))
    out["choices"] = [{k: v for k, v in ch.items() if k != "index"} for ch in c["choices"]]
    return out


def _fffd(text: str) -> str:
    """Chinese text decoded piecewise: two characters split across chunks become U+FFFD."""
    return text.replace("北", "\ufffd\ufffd").replace("子", "\ufffd")


_STREAM_CHECKS = ("chat.en.stream", "chat.zh.stream")


@dataclass(frozen=True)
class Broken:
    """A broken fixture: its description, its proxy, and ``expect``: check id → diagnosis."""

    description: str
    proxy: Proxy
    expect: dict[str, str]


BROKEN: dict[str, Broken] = {
    "garbled_replacement": Broken(
        "Synthetic proxy that decodes UTF-8 per network chunk: Chinese comes back with U+FFFD.",
        Proxy(zh=_fffd(ECHO_ZH_SENTENCE), zh_stream=tuple(_fffd(p) for p in ZH_PIECES)),
        {"chat.zh": "replacement_chars", "chat.zh.stream": "replacement_chars"},
    ),
    "garbled_latin1": Broken(
        "Synthetic proxy that reads UTF-8 as Latin-1 (non-stream: cp1252): Chinese mojibake.",
        Proxy(
            zh=cp1252_mojibake(ECHO_ZH_SENTENCE),
            zh_stream=tuple(latin1_mojibake(p) for p in ZH_PIECES),
        ),
        {"chat.zh": "mojibake_latin1", "chat.zh.stream": "mojibake_latin1"},
    ),
    "garbled_gbk": Broken(
        "Synthetic proxy that reads UTF-8 as GBK: Chinese mojibake.",
        Proxy(
            zh=gbk_mojibake(ECHO_ZH_SENTENCE)[-1], zh_stream=(gbk_mojibake(ECHO_ZH_SENTENCE)[0],)
        ),
        {"chat.zh": "mojibake_gbk", "chat.zh.stream": "mojibake_gbk"},
    ),
    "garbled_claim": Broken(
        "Synthetic proxy whose model sees corrupted Chinese and says the message is garbled.",
        Proxy(
            zh="It looks like your message might be garbled. Could you send it again?",
            zh_stream=("您的消息", "似乎是", "乱码", "，请重新发送。"),
        ),
        {"chat.zh": "garbled_claim", "chat.zh.stream": "garbled_claim"},
    ),
    "duplicated_deltas": Broken(
        "Synthetic proxy that forwards cumulative snapshots as deltas: streamed text repeats.",
        Proxy(style=StreamStyle(cumulative=True)),
        {
            "stream.no_duplicates": "duplicated_deltas",
            **dict.fromkeys(_STREAM_CHECKS, "duplicated_deltas"),
        },
    ),
    "image_null": Broken(
        "Synthetic proxy that answers image requests with a null URL: ![image](null).",
        Proxy(image_chat="![image](null)", image_url=None),
        {"images.chat": "null_image_url", "images.generations": "null_image_url"},
    ),
    "t2i_tutorial": Broken(
        "Synthetic proxy that sends image prompts to the text model: a drawing tutorial.",
        Proxy(image_chat=TUTORIAL),
        {"images.chat": "text_instead_of_image"},
    ),
    "stream_no_done": Broken(
        "Synthetic proxy whose streams end without data: [DONE].",
        Proxy(style=StreamStyle(done=False)),
        {"stream.done": "missing_done"},
    ),
    "stream_no_finish": Broken(
        "Synthetic proxy whose streams never carry a finish_reason.",
        Proxy(style=StreamStyle(finish=False)),
        {"stream.finish_reason": "missing_finish_reason"},
    ),
    "errors_empty_200": Broken(
        "Synthetic proxy that answers failing requests with an empty HTTP 200.",
        Proxy(errors_empty_200=True),
        {
            "errors.bad_json": "empty_200",
            "errors.unknown_model": "empty_200",
            "errors.oversize": "empty_200",
        },
    ),
    "auth_error_as_200": Broken(
        "Synthetic proxy that answers a wrong key with HTTP 200 and the error as text.",
        Proxy(auth_as_200="Error: invalid API key. Please check your configuration."),
        {"auth.wrong_key": "error_as_200"},
    ),
    "non_openai_chunks": Broken(
        "Synthetic proxy whose stream chunks are not OpenAI's: wrong object, text created.",
        Proxy(style=StreamStyle(shape=_non_openai)),
        {
            "stream.contract": "contract_violation",
            "reasoning.thinking": "contract_violation",
            **dict.fromkeys(_STREAM_CHECKS, "contract_violation"),
        },
    ),
}
"""Every broken fixture by name; the file is ``tests/cassettes/broken/<name>.json``."""


def build_broken() -> list[Cassette]:
    """Every broken fixture cassette, in :data:`BROKEN` order."""
    return [cassette(name, b.description, b.proxy) for name, b in BROKEN.items()]


def write_all(out_dir: Path = BROKEN_DIR) -> list[Path]:
    """Write every broken fixture into ``out_dir``; return the paths."""
    return [c.save(out_dir / f"{c.name}.json") for c in build_broken()]


if __name__ == "__main__":
    for path in write_all():
        print(path)
