"""An independent fake chat.qwen.ai for integration tests (loopback aiohttp app).

Written from ``docs/protocol.md`` only, not from the replay server: it answers every request
from its own state instead of replaying recordings, so a gateway bug that exact-prompt cassettes
hide (wrong chat id, lost ``parent_id``, a prompt detail, frames split at odd places) shows up.

What it does (protocol.md section in brackets):

- ``GET /api/models`` (§8): a few models with ``info.meta.abilities`` numbers and chat types.
- ``POST /api/v2/chats/new`` (§3): issues chat ids; refuses a client-made id; a timestamp not in
  milliseconds is recorded in :attr:`FakeQwen.violations` (as is anything else the real site
  would mishandle: tests assert the list stays empty).
- ``POST /api/v2/chat/completions?chat_id=`` (§4, §5): checks the body (one user message,
  ``stream: true``, ``output_schema: "phase"``, chat id in query and body, second timestamps, no
  top-level ``tools``), remembers each turn (prompt, answer, ``response_id``, ``parent_id``) per
  chat, answers ``PARENT_NOT_FOUND`` for an unknown ``parent_id`` (§13.1), streams
  ``response.created``, optional ``response.info`` keep-alives, ``thinking_summary`` snapshots or
  ``think`` increments when thinking is on, ``answer`` increments with cumulative ``usage``, and
  the ``finished`` frame. The stream bytes are cut at odd places (inside UTF-8 characters, inside
  frames), and the answer text is cut into deltas at odd places too (inside tags).
- ``POST /api/v2/chat/completions/stop`` (§13.1): recorded, and ends a held answer (``hold``:
  silence after the first text; ``hold_silent``: silence before any text, until the gateway
  hangs up).
- ``GET /api/v2/chats/?page=N`` and ``DELETE /api/v2/chats/<id>`` (§2).
- Several accounts (tokens); per-token behaviour: ``ok``, a rate-limit envelope (§10, §13.3),
  the captcha wall as JSON or HTML (§10), ``unauthorized``, an error frame or a broken
  connection in the middle of the answer (§5.7).
- SSE variants the standard allows (``wire``: CRLF, ``data:`` without a space, comment and
  ``id:`` lines) and the last text riding on the ``finished`` frame.

Its "model" (:class:`Model`) is a small deterministic policy reading the chat's context (the
prompts of the turns up to this one, as the site would): with a ``<tools>`` section it answers
with Qwen ``<tool_call>`` markup (JSON form, or the XML ``<function=…>`` form) for a tool named in
the latest request, with arguments that fit the tool's schema; after a ``<tool_response>`` it
answers prose quoting the result; otherwise it echoes the latest request deterministically.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

__all__ = ["Account", "ChatRecord", "FakeQwen", "Model", "TurnRecord"]

Behaviour = Literal["ok", "ratelimited", "parallel_limited", "captcha_json", "captcha_html",
                    "unauthorized", "error_midstream", "cut_midstream"]  # fmt: skip

MODELS = [
    {
        "id": "qwen3-max",
        "name": "Qwen3-Max",
        "object": "model",
        "owned_by": "qwen",
        "info": {
            "id": "qwen3-max",
            "name": "Qwen3-Max",
            "is_active": True,
            "created_at": 1757000000,
            "meta": {
                "abilities": {"thinking": 1, "vision": 1},
                "capabilities": {"thinking": True, "vision": True},
                "chat_type": ["t2t", "search"],
                "max_context_length": 262144,
            },
        },
    },
    {
        "id": "qwen3-coder-plus",
        "name": "Qwen3-Coder",
        "object": "model",
        "owned_by": "qwen",
        "info": {
            "id": "qwen3-coder-plus",
            "name": "Qwen3-Coder",
            "is_active": True,
            "created_at": 1753000000,
            "meta": {
                "abilities": {"thinking": 0},
                "capabilities": {"thinking": False},
                "chat_type": ["t2t"],
            },
        },
    },
]


@dataclass
class Account:
    """One token of the fake site and how it behaves."""

    token: str
    behaviour: Behaviour = "ok"
    completions: int = 0  # completion requests that reached this account


@dataclass
class TurnRecord:
    """One turn of a chat, as the site keeps it."""

    response_id: str
    parent_id: str | None
    prompt: str
    answer: str = ""
    finished: bool = False
    stopped: bool = False


@dataclass
class ChatRecord:
    """One chat of one account."""

    id: str
    token: str
    title: str
    chat_mode: str
    chat_type: str
    model: str
    created_at: int
    turns: dict[str, TurnRecord] = field(default_factory=dict)  # by response_id
    deleted: bool = False

    def chain(self, parent_id: str | None) -> list[TurnRecord]:
        """The turns from the chat's first one down to ``parent_id`` (the context)."""
        out: list[TurnRecord] = []
        while parent_id is not None:
            turn = self.turns[parent_id]
            out.append(turn)
            parent_id = turn.parent_id
        return out[::-1]


# -- the model ------------------------------------------------------------------------------------

_TOOLS_RE = re.compile(r"<tools>\s*\n(.*?)\n\s*</tools>", re.DOTALL)
_RESULT_RE = re.compile(r"<tool_response>\n(.*?)\n</tool_response>", re.DOTALL)
_CALL_RE = re.compile(r"<tool_call>\n(.*?)\n</tool_call>", re.DOTALL)


def _real_calls(prompt: str) -> list[re.Match[str]]:
    """Call blocks in the transcript (the template's own example is not JSON: skipped)."""
    out = []
    for m in _CALL_RE.finditer(prompt):
        body = m.group(1).strip()
        if body.startswith("<function="):
            out.append(m)
            continue
        try:
            json.loads(body)
        except ValueError:
            continue
        out.append(m)
    return out


@dataclass
class Reply:
    """What the model says: reasoning snapshots, then the answer text."""

    thoughts: list[str]
    answer: str


@dataclass
class Model:
    """The fake's deterministic policy. ``tool_format``: ``json`` (Hermes) or ``xml`` (Qwen3-Coder);
    ``preface``: prose written before a call; ``script``: a fixed :class:`Reply` for requests
    holding a keyword (tests of what a model may write). Reasoning is sent only when the turn
    asked for thinking, as the site does; before a call it says which tool it will call."""

    tool_format: Literal["json", "xml"] = "json"
    preface: str = ""
    script: dict[str, Reply] = field(default_factory=dict)  # keyword in the request -> reply

    @staticmethod
    def tools_of(context: list[str]) -> list[dict[str, Any]]:
        """The function tools described in any prompt of the context (``<tools>`` section)."""
        for prompt in reversed(context):
            m = _TOOLS_RE.search(prompt)
            if m is None:
                continue
            tools = []
            for line in m.group(1).splitlines():
                line = line.strip()
                if not line:
                    continue
                obj = json.loads(line)  # a broken tools line is a gateway bug: let it raise
                fn = obj.get("function", obj)
                tools.append(fn)
            return tools
        return []

    @staticmethod
    def latest_request(prompt: str) -> str:
        """The newest request in a (possibly flattened) prompt: the last paragraph that is not a
        tool-call/response block and not the tools section."""
        text = _TOOLS_RE.sub("", prompt)
        paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
        for p in reversed(paras):
            if "<tool_response>\n" in p or "<tool_call>\n" in p or p.startswith("System:"):
                continue
            return re.sub(r"^(User|Human):\s*", "", p)
        return paras[-1] if paras else ""

    def reply(self, context: list[str], prompt: str, *, thinking: bool) -> Reply:
        """The answer to ``prompt`` given the earlier prompts of the chat (``context``)."""
        tools = self.tools_of([*context, prompt])
        calls = _real_calls(prompt)
        after = calls[-1].end() if calls else 0
        results = _RESULT_RE.findall(prompt[after:])
        if results:
            answer = "Based on the tool result: " + " | ".join(r.strip() for r in results) + "."
            return Reply(["Reading the tool result."] if thinking else [], answer)
        request = self.latest_request(prompt)
        for keyword, scripted in self.script.items():
            if keyword in request:
                return Reply(scripted.thoughts if thinking else [], scripted.answer)
        if tools and "chat only" not in request.lower():
            chosen = [t for t in tools if t["name"] in request]
            chosen.sort(key=lambda t: request.index(t["name"]))
            if not chosen:
                chosen = tools[:1]
            blocks = [self._call(t, request) for t in chosen]
            thoughts = [f"The user wants {', '.join(t['name'] for t in chosen)}."]
            thoughts.append("I will call the function.")
            return Reply(thoughts if thinking else [], self.preface + "\n".join(blocks))
        turn_no = len(context) + 1
        shown = request if len(request) <= 200 else request[:200] + "…"
        answer = f"Echo (turn {turn_no}): {shown} — 好的 ✅"
        return Reply(["Thinking about it.", "Answering plainly."] if thinking else [], answer)

    def _call(self, tool: dict[str, Any], request: str) -> str:
        args = arguments_for(tool.get("parameters"), request)
        if self.tool_format == "xml":
            params = "".join(
                f"<parameter={k}>\n{v if isinstance(v, str) else json.dumps(v)}\n</parameter>\n"
                for k, v in args.items()
            )
            return f"<tool_call>\n<function={tool['name']}>\n{params}</function>\n</tool_call>"
        body = json.dumps({"name": tool["name"], "arguments": args}, ensure_ascii=False)
        return f"<tool_call>\n{body}\n</tool_call>"


def arguments_for(schema: Any, request: str) -> dict[str, Any]:
    """Arguments fitting ``schema``: ``key=value`` / ``key: value`` found in the request, else a
    default of the property's type; required properties always, others only when found."""
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    out: dict[str, Any] = {}
    for name, prop in props.items():
        m = re.search(rf"\b{re.escape(name)}\s*[=:]\s*\"?([^\",\n]+?)\"?(?:[,\n]|$)", request)
        kind = prop.get("type") if isinstance(prop, dict) else None
        if m is None and name not in required:
            continue
        raw = m.group(1).strip() if m else None
        if isinstance(prop, dict) and "enum" in prop:
            out[name] = raw if raw in prop["enum"] else prop["enum"][0]
        elif kind == "integer":
            out[name] = int(raw) if raw and raw.lstrip("-").isdigit() else 3
        elif kind == "number":
            try:
                out[name] = float(raw) if raw else 1.5
            except ValueError:
                out[name] = 1.5
        elif kind == "boolean":
            out[name] = raw != "false" if raw else True
        elif kind == "array":
            out[name] = [raw] if raw else []
        elif kind == "object":
            out[name] = {}
        else:
            out[name] = raw if raw else f"{name}-value"
    return out


# -- the site --------------------------------------------------------------------------------------


def _envelope(code: str, details: str, num: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"code": code, "details": details}
    if num is not None:
        data["num"] = num
    return {"success": False, "request_id": str(uuid.uuid4()), "data": data}


def _ok(data: Any) -> web.Response:
    return web.json_response({"success": True, "request_id": str(uuid.uuid4()), "data": data})


CAPTCHA_HTML = (
    "<!DOCTYPE html><html><head><title>Verification</title></head><body>"
    "<script>var _____tmd_____ = 'x'; window.aliyun_waf_aa = 1;"
    "window.location.replace('https://chat.qwen.ai/punish?x5secdata=abc');</script>"
    "</body></html>"
)


class FakeQwen:
    """The fake site. ``accounts``: its tokens; ``model``: the policy; ``keepalive``: send
    ``response.info`` frames; ``hold``: after the first answer text, wait until the stop call or
    the client leaving before finishing (for hang-up tests); ``parent_error``: how an unknown
    ``parent_id`` is refused (``envelope`` before the stream, or an ``error`` frame in it);
    ``wire``: SSE line endings ``lf``/``crlf``, ``nospace`` (``data:{…}``), ``comments`` (``:``
    and ``id:`` lines between frames), ``no_blank_line`` (frames as bare ``data:`` lines, the
    stream's only blank line at its end); ``last_in_finished``: the last text rides on the
    ``finished`` frame."""

    def __init__(
        self,
        tokens: list[str],
        *,
        model: Model | None = None,
        seed: int = 7,
        keepalive: bool = True,
        parent_error: Literal["envelope", "frame"] = "envelope",
        wire: Literal["lf", "crlf", "nospace", "comments", "no_blank_line"] = "lf",
        last_in_finished: bool = False,
    ) -> None:
        self.accounts = {t: Account(t) for t in tokens}
        self.model = model or Model()
        self.chats: dict[str, ChatRecord] = {}
        self.requests: list[tuple[str, str, str | None, Any]] = []  # method, path, token, body
        self.violations: list[str] = []
        self.stops: list[dict[str, Any]] = []
        self.stopped = asyncio.Event()
        self.deleted = asyncio.Event()
        self.held = asyncio.Event()  # hold mode: the first text was sent
        self.disconnected = asyncio.Event()
        self.hold = False
        self.errors_on_new_chat = True  # False: account behaviours hit only completions
        self.slow_errors = False
        # content frames carry the turn's response_id (same), another id (other), or none
        self.frame_ids: Literal["same", "other", "none"] = "same"
        # reasoning as the turn asked (thinking_format), or always `think` / `thinking_summary`
        self.thinking_style: Literal["asked", "think", "summary"] = (
            "asked"  # error answers arrive in two network pieces, 10 ms apart
        )
        self.hold_silent = False  # like hold, but before any answer text
        self.keepalive = keepalive
        self.parent_error = parent_error
        self.wire = wire
        self.last_in_finished = last_in_finished
        self._rng = random.Random(seed)

    # -- helpers for tests -------------------------------------------------------------------------

    def completions(self) -> list[dict[str, Any]]:
        """The bodies of the completion requests received, in order."""
        return [b for m, p, _, b in self.requests if p == "/api/v2/chat/completions"]

    def add_chat(self, token: str, title: str, age_s: float = 0) -> ChatRecord:
        """A chat already in the account (the user's own, or a leftover of the gateway)."""
        chat = ChatRecord(
            str(uuid.uuid4()), token, title, "normal", "t2t", "qwen3-max",
            int(time.time() - age_s),
        )  # fmt: skip
        self.chats[chat.id] = chat
        return chat

    def live_chats(self, token: str | None = None) -> list[ChatRecord]:
        return [c for c in self.chats.values() if not c.deleted and token in (None, c.token)]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/models", self._models)
        app.router.add_post("/api/v2/chats/new", self._new_chat)
        app.router.add_post("/api/v2/chat/completions", self._completion)
        app.router.add_post("/api/v2/chat/completions/stop", self._stop)
        app.router.add_get("/api/v2/chats/", self._list_chats)
        app.router.add_delete("/api/v2/chats/{chat_id}", self._delete_chat)
        return app

    # -- auth --------------------------------------------------------------------------------------

    def _account(self, request: web.Request) -> Account | None:
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        cookie = request.cookies.get("token")
        if token is not None and cookie is not None and cookie != token:
            self.violations.append("token cookie and Authorization header differ")
        for name in ("source", "version", "timezone", "x-request-id"):
            if name not in request.headers:
                self.violations.append(f"header {name} missing on {request.path}")
        return self.accounts.get(token or cookie or "")

    @staticmethod
    def _unauthorized() -> web.Response:
        return web.json_response(
            _envelope("Unauthorized", "You have no permission to access this resource"),
            status=401,
        )

    def _behaviour_error(self, account: Account) -> web.Response | None:
        b = account.behaviour
        if b in ("error_midstream", "cut_midstream"):
            return None
        if b == "ratelimited":
            return web.json_response(
                _envelope("RateLimited", "You have reached the daily usage limit", num=2)
            )
        if b == "parallel_limited":
            return web.json_response(_envelope("ParallelLimited", "Too many parallel requests"))
        if b == "captcha_json":
            return web.json_response(
                {
                    "ret": ["FAIL_SYS_USER_VALIDATE::哎哟喂,被挤爆啦,请稍后重试"],
                    "data": {"url": "https://chat.qwen.ai/punish?x5secdata=abc&x5step=2"},
                }
            )
        if b == "captcha_html":
            return web.Response(text=CAPTCHA_HTML, content_type="text/html")
        if b == "unauthorized":
            return self._unauthorized()
        return None

    async def _slowly(self, request: web.Request, answer: web.Response) -> web.StreamResponse:
        """``answer`` as is, or (``slow_errors``) its body in two pieces 10 ms apart, as a slow
        network delivers a larger error page."""
        if not self.slow_errors:
            return answer
        body = answer.body if isinstance(answer.body, bytes) else b""
        resp = web.StreamResponse(status=answer.status)
        resp.content_type = answer.content_type
        await resp.prepare(request)
        half = len(body) // 2
        await resp.write(body[:half])
        await asyncio.sleep(0.01)  # the fake's network, not test synchronisation
        await resp.write(body[half:])
        await resp.write_eof()
        return resp

    # -- endpoints ---------------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        account = self._account(request)
        self.requests.append(("GET", request.path, account and account.token, None))
        if account is None:
            return self._unauthorized()
        return web.json_response({"data": MODELS})

    async def _new_chat(self, request: web.Request) -> web.Response:
        account = self._account(request)
        body = await request.json()
        self.requests.append(("POST", request.path, account and account.token, body))
        if account is None:
            return self._unauthorized()
        error = self._behaviour_error(account) if self.errors_on_new_chat else None
        if error is not None:
            return await self._slowly(request, error)
        ts = body.get("timestamp")
        if not isinstance(ts, int) or ts < 10**12:
            self.violations.append(f"chats/new timestamp not in milliseconds: {ts!r}")
        if "id" in body or "chat_id" in body:
            return web.json_response(_envelope("Bad_Request", "chat id is issued by the server"))
        models = body.get("models")
        if not (isinstance(models, list) and len(models) == 1):
            return web.json_response(_envelope("Bad_Request", "models must hold one model"))
        chat = ChatRecord(
            id=str(uuid.uuid4()),
            token=account.token,
            title=str(body.get("title", "New Chat")),
            chat_mode=str(body.get("chat_mode", "normal")),
            chat_type=str(body.get("chat_type", "t2t")),
            model=models[0],
            created_at=int(time.time()),
        )
        self.chats[chat.id] = chat
        return _ok({"id": chat.id})

    async def _list_chats(self, request: web.Request) -> web.Response:
        account = self._account(request)
        self.requests.append(("GET", request.path, account and account.token, None))
        if account is None:
            return self._unauthorized()
        page = int(request.query.get("page", "1"))
        mine = sorted(self.live_chats(account.token), key=lambda c: c.created_at, reverse=True)
        size = 20
        items = [
            {
                "id": c.id,
                "title": c.title,
                "chat_type": c.chat_type,
                "created_at": c.created_at,
                "updated_at": c.created_at,
                "pinned": False,
            }
            for c in mine[(page - 1) * size : page * size]
        ]
        return _ok(items)

    async def _delete_chat(self, request: web.Request) -> web.Response:
        account = self._account(request)
        chat_id = request.match_info["chat_id"]
        self.requests.append(
            ("DELETE", f"/api/v2/chats/{chat_id}", account and account.token, None)
        )
        if account is None:
            return self._unauthorized()
        chat = self.chats.get(chat_id)
        if chat is None or chat.token != account.token or chat.deleted:
            return web.json_response(_envelope("Not_Found", "chat not found"))
        chat.deleted = True
        self.deleted.set()
        return _ok({"status": True})

    async def _stop(self, request: web.Request) -> web.Response:
        account = self._account(request)
        body = await request.json()
        self.requests.append(("POST", request.path, account and account.token, body))
        if account is None:
            return self._unauthorized()
        if request.query.get("chat_id") != body.get("chat_id"):
            self.violations.append("stop: chat_id differs between query and body")
        self.stops.append(body)
        chat = self.chats.get(body.get("chat_id", ""))
        if chat is not None and body.get("response_id") in chat.turns:
            chat.turns[body["response_id"]].stopped = True
        self.stopped.set()
        return _ok({"status": True})

    async def _completion(self, request: web.Request) -> web.StreamResponse:
        account = self._account(request)
        body = await request.json()
        self.requests.append(("POST", request.path, account and account.token, body))
        if account is None:
            return self._unauthorized()
        account.completions += 1
        error = self._behaviour_error(account)
        if error is not None:
            return await self._slowly(request, error)
        problem = self._check_body(request, body)
        if problem is not None:
            return web.json_response(_envelope("Bad_Request", problem))
        chat = self.chats.get(body["chat_id"])
        if chat is None or chat.deleted or chat.token != account.token:
            return web.json_response(_envelope("Not_Found", "The chat does not exist"))
        parent_id = body.get("parent_id")
        if parent_id is not None and parent_id not in chat.turns:
            if self.parent_error == "envelope":
                return web.json_response(_envelope("PARENT_NOT_FOUND", "parent message not found"))
        msg = body["messages"][0]
        prompt = msg["content"]
        feature = msg.get("feature_config") or {}
        thinking = bool(feature.get("thinking_enabled"))
        summary = feature.get("thinking_format") == "summary"
        if self.thinking_style != "asked":
            summary = self.thinking_style == "summary"
        turn = TurnRecord(str(uuid.uuid4()), parent_id, prompt)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await resp.prepare(request)
        frames: list[dict[str, Any]] = [
            {
                "response.created": {
                    "chat_id": chat.id,
                    "parent_id": parent_id,
                    "response_id": turn.response_id,
                }
            }
        ]
        if parent_id is not None and parent_id not in chat.turns:  # parent_error == "frame"
            frames.append({"error": {"code": "PARENT_NOT_FOUND", "details": "parent not found"}})
            await self._send(resp, frames)
            await resp.write_eof()
            return resp
        chat.turns[turn.response_id] = turn
        context = [t.prompt for t in chat.chain(parent_id)]
        reply = self.model.reply(context, prompt, thinking=thinking)
        if self.keepalive:
            frames.append({"response.info": {"action": "keep_alive", "chat_id": chat.id}})
        in_tokens = max(1, len(prompt) // 4)
        out_tokens = 0

        frame_id = {"same": turn.response_id, "other": "msg-" + turn.response_id[:8]}

        def frame(delta: dict[str, Any]) -> dict[str, Any]:
            out: dict[str, Any] = {
                "choices": [{"delta": {"role": "assistant", **delta}}],
                "usage": {
                    "input_tokens": in_tokens,
                    "output_tokens": out_tokens,
                    "total_tokens": in_tokens + out_tokens,
                },
            }
            if self.frame_ids in frame_id:
                out["response_id"] = frame_id[self.frame_ids]
            return out

        if thinking and reply.thoughts:
            if summary:
                for i in range(1, len(reply.thoughts) + 1):
                    out_tokens += 5
                    snap = {"content": reply.thoughts[:i]}
                    frames.append(
                        frame(
                            {
                                "content": "",
                                "phase": "thinking_summary",
                                "status": "typing",
                                "extra": {
                                    "summary_thought": snap,
                                    "summary_title": {"content": ["Plan"]},
                                },
                            }
                        )
                    )
                frames.append(
                    frame(
                        {
                            "content": "",
                            "phase": "thinking_summary",
                            "status": "finished",
                            "extra": {"summary_thought": {"content": reply.thoughts}},
                        }
                    )
                )
            else:
                for piece in self._pieces(" ".join(reply.thoughts)):
                    out_tokens += 1
                    frames.append(frame({"content": piece, "phase": "think", "status": "typing"}))
                frames.append(frame({"content": "", "phase": "think", "status": "finished"}))
        pieces = self._pieces(reply.answer)
        await self._send(resp, frames)
        frames = []
        if self.hold_silent:  # opening frames sent, then silence until the gateway hangs up
            self.held.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.disconnected.set()
                raise
        last = ""
        if self.last_in_finished and len(pieces) > 1:
            last = pieces.pop()
        for n, piece in enumerate(pieces):
            out_tokens += 1
            frames.append(frame({"content": piece, "phase": "answer", "status": "typing"}))
            if n == 0 and self.hold:
                await self._send(resp, frames)
                frames = []
                turn.answer += piece
                self.held.set()
                try:  # the test server cancels this handler when the gateway hangs up
                    await self.stopped.wait()
                except asyncio.CancelledError:
                    self.disconnected.set()
                    raise
                self.disconnected.set()
                return resp
            turn.answer += piece
            if n == len(pieces) // 2 and account.behaviour in ("error_midstream", "cut_midstream"):
                await self._send(resp, frames)
                if account.behaviour == "error_midstream":
                    err = {"code": "Internal_Server_Error", "details": "the model crashed"}
                    await self._send(resp, [{"error": err}])
                    await resp.write_eof()
                    return resp
                assert request.transport is not None
                request.transport.close()  # the connection breaks mid-answer
                return resp
            if self.keepalive and n == len(pieces) // 2:
                frames.append({"response.info": {"action": "keep_alive"}})
        turn.answer += last
        frames.append(frame({"content": last, "phase": "answer", "status": "finished"}))
        turn.finished = True
        await self._send(resp, frames)
        if self.wire == "no_blank_line":
            await resp.write(b"\n")
        await resp.write_eof()
        return resp

    def _check_body(self, request: web.Request, body: dict[str, Any]) -> str | None:
        """What the real site would refuse (returned) or mishandle (recorded as a violation)."""
        if body.get("stream") is not True:
            return "stream must be true"
        if request.query.get("chat_id") != body.get("chat_id"):
            return "chat_id differs between query and body"
        if "tools" in body:
            self.violations.append("a top-level tools field was sent (§13.2)")
        ts = body.get("timestamp")
        if not isinstance(ts, int) or ts > 10**11:
            self.violations.append(f"completion timestamp not in seconds: {ts!r}")
        messages = body.get("messages")
        if not isinstance(messages, list) or len(messages) != 1:
            return "exactly one message per turn"
        msg = messages[0]
        if msg.get("role") != "user":
            return "the message must be a user message"
        if not isinstance(msg.get("content"), str):
            return "content must be text"
        if len(msg["content"]) > 131072:
            return "message too long"
        if (msg.get("feature_config") or {}).get("output_schema") != "phase":
            self.violations.append("feature_config.output_schema is not 'phase' (§11.7)")
        if msg.get("parent_id", msg.get("parentId")) != body.get("parent_id"):
            self.violations.append("parent_id differs between the body and the message")
        if body.get("model") not in {m["id"] for m in MODELS}:
            return f"unknown model {body.get('model')!r}"
        return None

    def _pieces(self, text: str) -> list[str]:
        """``text`` cut at odd places (1-7 characters), so tags are split across deltas."""
        out = []
        i = 0
        while i < len(text):
            n = self._rng.randint(1, 7)
            out.append(text[i : i + n])
            i += n
        return out

    async def _send(self, resp: web.StreamResponse, frames: list[dict[str, Any]]) -> None:
        """Write the frames as SSE bytes cut at odd places (inside frames, inside UTF-8)."""
        nl = b"\r\n" if self.wire == "crlf" else b"\n"
        prefix = b"data:" if self.wire == "nospace" else b"data: "
        parts = []
        for f in frames:
            if self.wire == "comments":
                parts.append(b": keep-alive" + nl + b"id: 1" + nl)
            end = nl if self.wire == "no_blank_line" else nl + nl
            parts.append(prefix + json.dumps(f, ensure_ascii=False).encode() + end)
        data = b"".join(parts)
        i = 0
        while i < len(data):
            n = self._rng.choice((1, 2, 3, 5, 17, 64, 301))
            await resp.write(data[i : i + n])
            i += n
