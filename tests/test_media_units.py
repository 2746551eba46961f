"""Pure pieces of the media work: sizes, the media-URL policy, OSS signing, STS answers, file
entries, data: URIs, the fetch guard, t2v task answers, model variants and the translator's
image phases (docs/protocol.md §5.3, §5.5, §6, §7)."""

from __future__ import annotations

import base64
import ipaddress
import zlib
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from markdown_it import MarkdownIt

from proxy.errors import (
    ClientRequestError,
    MediaTooLargeError,
    MediaURLRefusedError,
    ModelNotFoundError,
    UpstreamBadMediaError,
    UpstreamNoMediaError,
    UpstreamProtocolError,
)
from proxy.fetch import check_address, check_url
from proxy.qwen.files import (
    StsGrant,
    decode_data_uri,
    file_entry,
    is_data_uri,
    make_blob,
    oss_put_request,
    oss_signature,
    oss_string_to_sign,
    parse_sts,
    sniff,
)
from proxy.qwen.media import MediaPolicy, aspect_ratio, find_task_id, is_punish_url, task_state
from proxy.qwen.models import Catalog, UpstreamModel
from proxy.qwen.request import ModelRoute, completion_body
from proxy.qwen.translate import Aggregate, ChunkEncoder, Failure, Finish, Media, Text, Translator
from recorder.synthetic_media import PUNISH_URL, STS_GRANT, png

CDN_URL = "https://cdn.qwenlm.ai/output/u1/t2i/c1/image.png?key=abc"
SOURCE = "https://cdn.qwenlm.ai/u1/f1_image.png?key=first"


# -- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "ratio"),
    [
        (None, "1:1"),
        ("1024x1024", "1:1"),
        ("1536x1024", "4:3"),
        ("1024x1536", "3:4"),
        ("1792x1024", "16:9"),
        ("1024x1792", "9:16"),
        ("256x256", "1:1"),
        ("auto", "1:1"),
        ("16:9", "16:9"),
        ("1280*720", "16:9"),
        ("900x1200", "3:4"),
    ],
)
def test_openai_sizes_map_to_aspect_ratios(size: str | None, ratio: str) -> None:
    """OpenAI sizes, WxH values and ratios all become one of the v2 ratios (§6.1)."""
    assert aspect_ratio(size) == ratio


@pytest.mark.parametrize("size", ["huge", "0x10", "21:9", "x1024"])
def test_unknown_sizes_are_a_clear_400(size: str) -> None:
    """A size that maps to no ratio is a 400 naming the `size` parameter."""
    with pytest.raises(ClientRequestError) as info:
        aspect_ratio(size)
    assert info.value.param == "size" and info.value.http_status() == 400


# -- the media-URL policy ------------------------------------------------------------------------


def test_policy_accepts_cdn_and_alibaba_hosts() -> None:
    """cdn.qwenlm.ai and *.alicdn.com / *.aliyuncs.com URLs are media answers (§1)."""
    p = MediaPolicy()
    assert p.check(CDN_URL) == "ok"
    assert p.check("https://img.alicdn.com/a.png") == "ok"
    assert p.check("https://qwen-webui-prod.oss-ap-southeast-1.aliyuncs.com/x.png") == "ok"


def test_policy_refuses_captcha_foreign_and_non_http_urls() -> None:
    """The punish link, foreign hosts, non-http and look-alike hosts are refused (§6.4)."""
    p = MediaPolicy()
    assert is_punish_url(PUNISH_URL)
    assert p.check(PUNISH_URL).startswith("captcha")
    assert "allow-list" in p.check("https://images.example.net/a.png")
    assert "allow-list" in p.check("https://cdn.qwenlm.ai.evil.example/a.png")
    assert "http" in p.check("null")
    assert "http" in p.check("ftp://cdn.qwenlm.ai/a.png")


def test_policy_excludes_the_source_whatever_its_signature() -> None:
    """An edit's source URL is excluded even when its ?key= signature differs."""
    p = MediaPolicy(exclude=frozenset({SOURCE}))
    assert p.check("https://cdn.qwenlm.ai/u1/f1_image.png?key=second") == "excluded"
    assert p.check(CDN_URL) == "ok"


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com\\@cdn.qwenlm.ai/x.png",  # a browser: evil.example.com
        "https://attacker.test\\.cdn.qwenlm.ai/x.png",  # a browser: attacker.test
        "https://cdn.qwenlm.ai\\x.png",
        "https://attacker.test\t.cdn.qwenlm.ai/x.png",  # a browser drops the tab
        "https://attacker.test\n.cdn.qwenlm.ai/x.png",
        "https://cdn.qwenlm.ai/x\x00.png",
        "https://user@cdn.qwenlm.ai/x.png",
        "https://user:pw@cdn.qwenlm.ai/x.png",
        "https://cdn.qwenlm.ai%2eevil.example/x.png",
        "https://[::1/x.png",
    ],
)
def test_policy_refuses_urls_a_browser_reads_otherwise(url: str) -> None:
    """A URL whose host a browser and Python's urlsplit read differently (a backslash, a tab or
    newline browsers drop, user info, odd characters in the host) is never a media answer,
    whatever host urlsplit finds in it."""
    assert MediaPolicy().check(url) not in ("ok", "excluded")


def test_policy_excludes_the_source_under_any_host_spelling() -> None:
    """An edit's source echoed with its host in upper case, or under another host (the
    bucket's own address), is still the source: the object's path identifies it."""
    p = MediaPolicy(exclude=frozenset({SOURCE}))
    path = SOURCE.split("?", 1)[0].removeprefix("https://cdn.qwenlm.ai")
    assert p.check("https://CDN.QWENLM.AI" + path) == "excluded"
    assert p.check("https://qwen-webui-prod.oss-ap-southeast-1.aliyuncs.com" + path) == "excluded"
    assert MediaPolicy(exclude=frozenset({"https://cdn.qwenlm.ai/"})).check(CDN_URL) == "ok"


def test_policy_rewrites_for_offline_and_keeps_the_query() -> None:
    """Offline, the client gets <media_base_url>/<path>?<query>; online the URL unchanged."""
    assert MediaPolicy().public(CDN_URL) == CDN_URL
    offline = MediaPolicy(rewrite_to="http://127.0.0.1:9/")
    assert offline.public(CDN_URL) == "http://127.0.0.1:9/output/u1/t2i/c1/image.png?key=abc"


# -- OSS signing, STS, file entries (§7) ---------------------------------------------------------


def test_oss_signature_matches_the_published_vector() -> None:
    """Aliyun's own OSS v1 example (PutObject of /oss-example/nelson) signs to 26NBxo…/yA=."""
    sts = oss_string_to_sign(
        method="PUT",
        content_md5="ODBGOERFMDMzQTczRUY3NUE3NzA5QzdFNUYzMDQxNEM=",
        content_type="text/html",
        date="Thu, 17 Nov 2005 18:49:58 GMT",
        oss_headers={"X-OSS-Meta-Author": "foo@bar.com", "X-OSS-Magic": "abracadabra"},
        bucket="oss-example",
        key="nelson",
    )
    assert sts == (
        "PUT\nODBGOERFMDMzQTczRUY3NUE3NzA5QzdFNUYzMDQxNEM=\ntext/html\n"
        "Thu, 17 Nov 2005 18:49:58 GMT\nx-oss-magic:abracadabra\n"
        "x-oss-meta-author:foo@bar.com\n/oss-example/nelson"
    )
    assert oss_signature("OtxrzxIsfpFjA7SwPzILwy8Bw21TLhquhboDYROV", sts) == (
        "26NBxoKdsyly4EDv6inkoDft/yA="
    )


def _grant(**over: str) -> StsGrant:
    return parse_sts({"success": True, "data": {**STS_GRANT, **over}})


def test_sts_v2_and_v1_answers_parse_without_leaking_secrets() -> None:
    """Both STS layouts parse; v1 builds the endpoint from the region; repr hides secrets."""
    g = _grant()
    assert (g.bucket, g.endpoint, g.user_id) == (
        "qwen-webui-prod",
        "oss-ap-southeast-1.aliyuncs.com",
        "8f2c6a1e-0000-4000-8000-000000000001",
    )
    assert "secret" not in repr(g) and "security" not in repr(g)
    flat = {k: v for k, v in STS_GRANT.items() if k != "endpoint"}
    assert parse_sts(flat).endpoint == "oss-ap-southeast-1.aliyuncs.com"
    prefixed = parse_sts({**STS_GRANT, "file_path": "qwen-webui-prod/u/f_x.png"})
    assert prefixed.object_key == "u/f_x.png"


def test_sts_answer_missing_fields_names_them_only() -> None:
    """A grant without credentials is a protocol error naming fields, never values."""
    with pytest.raises(UpstreamProtocolError) as info:
        parse_sts({"data": {"access_key_id": "STS.visible", "bucketname": "b"}})
    assert "security_token" in info.value.message and "STS.visible" not in info.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bucketname", "evil.example/x?"),
        ("bucketname", "user@evil.example#"),
        ("endpoint", "evil.example/x"),
        ("endpoint", "aliyuncs.com@evil.example"),
        ("endpoint", "evil.example?x="),
        ("endpoint", "a b.aliyuncs.com"),
        ("region", "evil.example/x#"),
    ],
)
def test_a_grant_whose_host_parts_would_move_the_upload_is_refused(field: str, value: str) -> None:
    """The bucket and the endpoint make the PutObject URL's host: anything but a host name's
    characters there could send the STS token and the file elsewhere; refused, not quoted."""
    grant = {**STS_GRANT, field: value}
    if field == "region":
        del grant["endpoint"]
    with pytest.raises(UpstreamProtocolError) as info:
        parse_sts(grant)
    assert value not in info.value.message and "malformed" in info.value.message


def test_put_request_is_signed_and_goes_where_configured() -> None:
    """The PUT carries MD5, the STS token and a v1 Authorization; the URL is virtual-hosted
    online and path-style under object_store_url."""
    g = _grant()
    blob = make_blob(png(2, 2, lambda x, y: (1, 2, 3)), "image/png", "a b.png", expect="image")
    date = "Sun, 22 Nov 2026 10:00:00 GMT"
    put = oss_put_request(g, blob, date=date)
    key = g.object_key
    assert put.url == f"https://qwen-webui-prod.oss-ap-southeast-1.aliyuncs.com/{key}"
    h = put.headers
    expected = oss_signature(
        STS_GRANT["access_key_secret"],
        f"PUT\n{h['Content-MD5']}\nimage/png\n{date}\n"
        f"x-oss-security-token:{STS_GRANT['security_token']}\n/qwen-webui-prod/{key}",
    )
    assert h["Authorization"] == f"OSS {STS_GRANT['access_key_id']}:{expected}"
    local = oss_put_request(g, blob, date=date, object_store_url="http://127.0.0.1:1/")
    assert local.url == f"http://127.0.0.1:1/qwen-webui-prod/{key}"
    assert "security-token" not in repr(put)


def test_file_entry_has_the_browser_fields() -> None:
    """The §7.4 entry: ids, CDN url, vision class for images, document class otherwise."""
    g = _grant()
    blob = make_blob(png(2, 2, lambda x, y: (0, 0, 0)), "image/png", None, expect="image")
    entry = file_entry(g, blob, now_ms=1, item_id="i", task_id="t")
    assert (entry["type"], entry["file_class"], entry["showType"]) == ("image", "vision", "image")
    assert entry["url"] == STS_GRANT["file_url"] and entry["id"] == STS_GRANT["file_id"]
    assert entry["file"]["meta"] == {
        "name": blob.filename,
        "size": len(blob.data),
        "content_type": "image/png",
    }
    doc = make_blob(b"%PDF-1.4 x", "application/pdf", "a.pdf", expect=None)
    assert file_entry(g, doc, now_ms=1, item_id="i", task_id="t")["file_class"] == "document"


# -- data: URIs and blobs ------------------------------------------------------------------------


def test_data_uri_decodes_and_sniffs() -> None:
    """A base64 PNG data: URI decodes to the same bytes, typed by its magic number."""
    raw = png(3, 3, lambda x, y: (x * 80, y * 80, 0))
    uri = "data:application/octet-stream;base64," + base64.b64encode(raw).decode()
    blob = decode_data_uri(uri, limit=10_000, expect="image")
    assert (blob.data, blob.content_type, blob.kind) == (raw, "image/png", "image")


@pytest.mark.parametrize("scheme", ["DATA", "Data", "dAtA"])
def test_data_uri_scheme_is_case_insensitive(scheme: str) -> None:
    """RFC 3986 §3.1: a scheme is case-insensitive, so ``DATA:`` is a data: URI too (and so is
    an upper-case media type and ``BASE64``)."""
    raw = png(3, 3, lambda x, y: (x * 80, y * 80, 0))
    uri = f"{scheme}:IMAGE/PNG;BASE64," + base64.b64encode(raw).decode()
    assert is_data_uri(uri)
    blob = decode_data_uri(uri, limit=10_000, expect="image")
    assert (blob.data, blob.content_type, blob.kind) == (raw, "image/png", "image")


def test_data_uri_limits_and_kinds() -> None:
    """Over the limit is a 413; text where an image is expected and bad base64 are 400s."""
    raw = png(8, 8, lambda x, y: (0, 0, 0))
    uri = "data:image/png;base64," + base64.b64encode(raw).decode()
    with pytest.raises(MediaTooLargeError) as info:
        decode_data_uri(uri, limit=len(raw) - 1, expect="image")
    assert info.value.http_status() == 413
    with pytest.raises(ClientRequestError):
        decode_data_uri("data:text/plain,hello", limit=100, expect="image")
    with pytest.raises(ClientRequestError):
        decode_data_uri("data:image/png;base64,@@@", limit=100, expect="image")
    with pytest.raises(ClientRequestError):
        make_blob(b"not a png", "image/png", None, expect="image")


def test_generated_pngs_are_valid() -> None:
    """The cassettes' PNG builder writes a signature, CRC-checked chunks and inflatable data."""
    raw = png(4, 2, lambda x, y: (x, y, 7))
    assert sniff(raw) == "image/png"
    pos, chunks = 8, {}
    while pos < len(raw):
        n = int.from_bytes(raw[pos : pos + 4], "big")
        kind, data = raw[pos + 4 : pos + 8], raw[pos + 8 : pos + 8 + n]
        crc = int.from_bytes(raw[pos + 8 + n : pos + 12 + n], "big")
        assert zlib.crc32(kind + data) == crc
        chunks[kind] = data
        pos += 12 + n
    assert len(zlib.decompress(chunks[b"IDAT"])) == 2 * (1 + 4 * 3)


# -- the fetch guard -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "addr",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.10",
        "172.16.5.5",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "100.64.0.1",
    ],
)
def test_guard_refuses_non_public_addresses(addr: str) -> None:
    """Loopback, private, link-local (cloud metadata), mapped, unspecified, multicast, CGNAT:
    refused with a 400 unless private fetches are allowed."""
    ip = ipaddress.ip_address(addr)
    with pytest.raises(MediaURLRefusedError) as info:
        check_address("h.example", ip, allow_private=False)
    assert info.value.http_status() == 400 and "non-public" in info.value.message
    check_address("h.example", ip, allow_private=True)


def test_guard_accepts_public_and_checks_urls() -> None:
    """Public addresses pass; only http(s) URLs with a host and no credentials are fetched."""
    check_address("example.com", ipaddress.ip_address("93.184.215.14"), allow_private=False)
    assert check_url("https://example.com/a.png") == ("example.com", 443)
    assert check_url("http://example.com:8080/a") == ("example.com", 8080)
    assert check_url("HTTPS://Example.COM/a.png") == ("example.com", 443)  # RFC 3986 §3.1
    for bad in ("file:///etc/passwd", "ftp://example.com/a", "http:///a", "http://u:p@x.com/"):
        with pytest.raises(MediaURLRefusedError):
            check_url(bad)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com/a", "not the scheme 'ftp'"),
        ("/a.png", "not a relative URL"),
        ("data:image/png;base64,AAAA", "redirected to a data: URI"),
    ],
)
def test_refused_schemes_are_named_without_contradiction(url: str, words: str) -> None:
    """The refusal names what was sent; ``data:`` (reached only by a redirect: a part's data:
    URI is decoded, never fetched) is not refused as if it were not a data: URI."""
    with pytest.raises(MediaURLRefusedError) as info:
        check_url(url)
    assert words in info.value.message


# -- t2v tasks (§6.3) ----------------------------------------------------------------------------


def test_task_id_is_found_where_documented_or_anywhere() -> None:
    """wanx.task_id first, then any task_id/taskId; None when there is none."""
    doc = {"data": {"messages": [{"extra": {"wanx": {"task_id": "t-1"}}}]}}
    assert find_task_id(doc) == "t-1"
    assert find_task_id({"data": {"deep": [{"taskId": "t-2"}]}}) == "t-2"
    assert find_task_id({"data": {"messages": []}}) is None


def test_task_states() -> None:
    """success carries the URL; failed/error stop; anything else keeps polling."""
    ok = task_state({"task_status": "success", "content": "https://cdn.qwenlm.ai/v.mp4"})
    assert (ok.state, ok.url) == ("success", "https://cdn.qwenlm.ai/v.mp4")
    wrapped = task_state({"data": {"task_status": "failed", "message": "nope"}})
    assert (wrapped.state, wrapped.detail) == ("failed", "nope")
    assert task_state({"task_status": "pending"}).state == "running"
    assert task_state({"task_status": "weird-new-state"}).state == "running"


# -- models and bodies ---------------------------------------------------------------------------


def _catalog() -> Catalog:
    return Catalog(
        [
            UpstreamModel("m", "M", True, True, 0, ("t2t", "search", "t2i", "image_edit", "t2v")),
            UpstreamModel("plain", "P", False, False, 0, ("t2t",)),
        ]
    )


def test_media_variants_are_listed_and_routed() -> None:
    """-image, -image-edit and -video exist where chat_type allows and route to t2i/image_edit/
    t2v without thinking; they combine with no other suffix."""
    ids = [m["id"] for m in _catalog().openai_list()["data"]]
    assert {"m-image", "m-image-edit", "m-video"} <= set(ids)
    assert not {"plain-image", "plain-video"} & set(ids)
    c = _catalog()
    assert c.route("m-image") == ModelRoute("m", "t2i", False)
    assert c.route("m-image-edit") == ModelRoute("m", "image_edit", False)
    assert c.route("m-video") == ModelRoute("m", "t2v", False)
    for bad in ("plain-image", "m-thinking-image", "m-image-search"):
        with pytest.raises(ModelNotFoundError):
            c.route(bad)


def test_media_bodies() -> None:
    """t2i streams with a size; t2v is stream:false with 16:9 when asked; t2t has no size."""
    ids = iter(str(i) for i in range(10))
    t2i = completion_body(
        ModelRoute("m", "t2i"), chat_id="c", prompt="p", now_s=1, new_id=lambda: next(ids)
    )
    assert (t2i["stream"], t2i["size"], t2i["messages"][0]["chat_type"]) == (True, "1:1", "t2i")
    t2v = completion_body(ModelRoute("m", "t2v"), chat_id="c", prompt="p", now_s=1, size="16:9")
    assert (t2v["stream"], t2v["size"]) == (False, "16:9")
    files = [{"id": "f"}]
    t2t = completion_body(ModelRoute("m"), chat_id="c", prompt="p", now_s=1, files=files)
    assert "size" not in t2t and t2t["messages"][0]["files"] == files


# -- the translator's image phases ---------------------------------------------------------------


def _frame(phase: str, content: str = "", status: str = "typing", **extra: Any) -> str:
    delta: dict[str, Any] = {"role": "assistant", "content": content, "phase": phase}
    delta["status"] = status
    if extra:
        delta["extra"] = extra
    return orjson.dumps({"choices": [{"delta": delta}]}).decode()


def _run(tr: Translator, frames: list[str], *, eof: bool = True) -> list[Any]:
    out: list[Any] = []
    for f in frames:
        out.extend(tr.feed(f))
    if eof:
        out.extend(tr.close())
    return out


def test_image_gen_url_is_the_answer_not_the_think_text() -> None:
    """image_gen_think text is not the answer; the image_gen URL is, then the stream finishes."""
    tr = Translator(expect_image=True)
    out = _run(
        tr,
        [
            _frame("image_gen_think", "Planning"),
            _frame("image_gen", CDN_URL),
            _frame("image_gen", "", "finished"),
        ],
        eof=False,
    )
    assert out == [Media("image", CDN_URL, CDN_URL), Finish("stop")]
    enc = ChunkEncoder(completion_id="x", model="m", created=0, include_usage=False)
    assert b"![image](" + CDN_URL.encode() + b")" in enc.encode(out[0])


def test_image_list_and_tool_result_layouts() -> None:
    """URLs in extra.image_list[].image and extra.tool_result[].url count too (§5.5)."""
    tr = Translator(media=MediaPolicy())
    other = "https://cdn.qwenlm.ai/output/u1/t2i/c2/image.png"
    out = _run(
        tr,
        [
            _frame("image_gen_tool", image_list=[{"image": CDN_URL}]),
            _frame("image_edit_tool", tool_result=[{"url": other}]),
            _frame("answer", "done", "finished"),
        ],
        eof=False,
    )
    assert [e.url for e in out if isinstance(e, Media)] == [CDN_URL, other]
    agg = Aggregate()
    for e in out:
        agg.add(e)
    content = agg.completion(completion_id="x", model="m", created=0, usage=None)
    assert content["choices"][0]["message"]["content"] == (
        f"![image]({CDN_URL})\n\n![image]({other})done"
    )


_CDN = "https://cdn.qwenlm.ai/o/"


@pytest.mark.parametrize(
    ("url", "destination"),
    [
        (CDN_URL, CDN_URL),  # the usual signed URL: byte for byte
        (_CDN + "im)age.png", _CDN + "im%29age.png"),
        (_CDN + "my image.png", _CDN + "my%20image.png"),
        (_CDN + "(1)<2>.png?key=a b", _CDN + "%281%29%3C2%3E.png?key=a%20b"),
        (_CDN + "a\\)b.png", _CDN + "a%5C%29b.png"),
        (_CDN + "图 片.png?key=a%2Fb&x=1", _CDN + "图%20片.png?key=a%2Fb&x=1"),
    ],
)
def test_the_markdown_image_destination_is_the_whole_url(url: str, destination: str) -> None:
    """A URL holding ``)``, ``(``, a space, ``<``/``>`` or ``\\`` has them percent-encoded in
    ``![image](…)`` (before, ``…/im)age.png`` rendered as an image of ``…/im`` and the text
    ``age.png)``); a CommonMark parser reads the whole URL back. The Media keeps the URL as
    it came (``data[].url`` of the images API)."""
    media = Media("image", url, url)
    assert media.markdown() == f"![image]({destination})"
    assert Media("video", url).markdown() == f"[video]({destination})"
    assert media.url == url
    [para] = [t for t in MarkdownIt().parse(media.markdown()) if t.type == "inline"]
    assert para.children is not None
    [image] = para.children
    assert image.type == "image" and not [t for t in para.children if t.type == "text"]
    src = image.attrs["src"]
    assert isinstance(src, str)
    assert unquote(src) == unquote(url)


def test_offline_rewrite_reaches_the_client_url() -> None:
    """With a rewrite, the Media URL is the replay server's, the upstream URL kept aside."""
    tr = Translator(media=MediaPolicy(rewrite_to="http://127.0.0.1:5"), expect_image=True)
    (media, _) = _run(tr, [_frame("image_gen", CDN_URL)])
    assert media.url == "http://127.0.0.1:5/output/u1/t2i/c1/image.png?key=abc"
    assert media.upstream_url == CDN_URL


def test_captcha_link_fails_at_once() -> None:
    """The punish link as image URL is a 502 upstream_bad_media naming the captcha."""
    out = _run(Translator(expect_image=True), [_frame("image_gen", PUNISH_URL)], eof=False)
    (failure,) = out
    assert isinstance(failure, Failure) and isinstance(failure.error, UpstreamBadMediaError)
    assert "captcha" in failure.error.message


def test_foreign_host_fails_at_the_end() -> None:
    """A URL off the CDN is no answer; the end of the stream reports why (502)."""
    out = _run(Translator(expect_image=True), [_frame("image_gen", "https://x.example/a.png")])
    assert isinstance(out[-1].error, UpstreamBadMediaError)
    assert "allow-list" in out[-1].error.message


def test_source_echo_only_is_no_image() -> None:
    """An edit stream that only echoes the source gives 502 upstream_no_media, saying so."""
    tr = Translator(media=MediaPolicy(exclude=frozenset({SOURCE})), expect_image=True)
    out = _run(tr, [_frame("image_edit", SOURCE), _frame("image_edit", "", "finished")])
    (failure,) = out
    assert isinstance(failure.error, UpstreamNoMediaError)
    assert "echoed the source" in failure.error.message


def test_unknown_phases_and_captions_are_named_never_null() -> None:
    """No URL: the error names the unknown phases and the model's text; nothing says null."""
    tr = Translator(expect_image=True)
    out = _run(tr, [_frame("image_render", "50%"), _frame("answer", "I cannot draw that.")])
    (failure,) = out
    assert isinstance(failure.error, UpstreamNoMediaError)
    assert "image_render" in failure.error.message and "cannot draw" in failure.error.message
    assert "null" not in failure.error.message
    assert not any(isinstance(e, Text) for e in out)


def test_text_mode_ignores_image_phases_without_a_policy() -> None:
    """Without a media policy image frames are unknown phases, as before."""
    tr = Translator()
    assert _run(tr, [_frame("image_gen", CDN_URL)], eof=False) == []
    assert tr.ignored_phases == {"image_gen": 1}
