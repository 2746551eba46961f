"""File uploads (multimodal input): kinds, ``data:`` URIs, STS answers, OSS signing, file entries.

Pure. The upload flow of docs/protocol.md §7, whose I/O lives in :mod:`proxy.qwen.client` and
:mod:`proxy.uploads`:

1. ``POST /api/v2/files/getstsToken {"filename", "filesize", "filetype"}`` (§7.1) returns STS
   credentials, the bucket, the object path and the CDN ``file_url`` (:func:`parse_sts`);
2. an OSS PutObject to ``https://<bucket>.<endpoint>/<file_path>`` signed with the STS triple
   (§7.2, :func:`oss_put_request`, OSS signature version 1: :func:`oss_signature`);
3. the file entry of §7.4 in ``messages[0].files`` (:func:`file_entry`).

Kinds and their size limits (§7.2, [S8]): image 10 MB, video 100 MB, audio 25 MB, document
30 MB; the proxy's limits are Settings (``max_image_bytes`` …).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import mimetypes
import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, unquote_to_bytes

from proxy.errors import ClientRequestError, MediaTooLargeError, UpstreamProtocolError, clip

__all__ = [
    "Blob",
    "Kind",
    "OssPut",
    "StsGrant",
    "content_type_kind",
    "decode_data_uri",
    "file_entry",
    "filetype_of",
    "is_data_uri",
    "oss_put_request",
    "oss_signature",
    "oss_string_to_sign",
    "parse_sts",
    "sniff",
]

Kind = Literal["image", "video", "audio", "document"]

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"BM", 0, "image/bmp"),
    (b"%PDF-", 0, "application/pdf"),
)


def sniff(data: bytes) -> str | None:
    """The media type from magic bytes (PNG, JPEG, GIF, WEBP, BMP, PDF, MP4), else ``None``."""
    for magic, offset, ctype in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return ctype
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    return None


def content_type_kind(content_type: str) -> Kind:
    """The upload kind of a media type: ``image/*``, ``video/*``, ``audio/*``, else document."""
    major = content_type.split("/", 1)[0].strip().lower()
    if major in ("image", "video", "audio"):
        return major  # type: ignore[return-value]
    return "document"


def filetype_of(kind: Kind) -> str:
    """The STS ``filetype`` for a kind: ``image`` | ``video`` | ``audio`` | ``file`` (§7.1)."""
    return "file" if kind == "document" else kind


@dataclass(frozen=True, slots=True)
class Blob:
    """Bytes to upload: ``data``, its ``content_type`` (no parameters), ``filename``, ``kind``."""

    data: bytes
    content_type: str
    filename: str
    kind: Kind


def default_filename(content_type: str, stem: str = "upload") -> str:
    """``upload.png`` for ``image/png`` (``.bin`` when the type is unknown)."""
    ext = mimetypes.guess_extension(content_type) or ".bin"
    return f"{stem}{'.jpg' if ext == '.jpe' else ext}"


#: the scheme in any case (RFC 3986 §3.1: schemes are case-insensitive)
_DATA_URI = re.compile(r"^(?i:data):([^,]*?),", re.S)


def is_data_uri(source: str) -> bool:
    """True when ``source`` is a ``data:`` URI, its scheme in any case (``DATA:``)."""
    return source[:5].lower() == "data:"


def decode_data_uri(
    uri: str, *, limit: int, expect: Kind | None = None, param: str | None = None
) -> Blob:
    """Decode a ``data:`` URI (RFC 2397; base64 or percent-encoded; the scheme in any case)
    into a :class:`Blob`.

    ``limit`` is the byte limit for the decoded data; ``expect`` the kind it must be (an
    ``image_url`` part must hold an image). Raises :class:`MediaTooLargeError` (413) beyond the
    limit and :class:`ClientRequestError` (400) for a malformed URI or a wrong kind; both name
    ``param``, where the URI is in the request.
    """
    m = _DATA_URI.match(uri)
    if not m:
        raise ClientRequestError(
            "a data: URI must look like data:<type>;base64,<data>", param=param
        )
    header = m.group(1)
    payload = uri[m.end() :]
    params = [p.strip() for p in header.split(";")]
    ctype = (params[0] or "text/plain").lower()
    is_b64 = "base64" in (p.lower() for p in params[1:])
    # base64 is 4/3 the size: refuse before decoding anything huge
    if (len(payload) * 3) // 4 > limit + 3:
        raise MediaTooLargeError(
            f"the data: URI holds more than the limit of {limit} bytes", param=param
        )
    try:
        data = (
            base64.b64decode(re.sub(r"\s+", "", payload), validate=True)
            if is_b64
            else unquote_to_bytes(payload)
        )
    except (binascii.Error, ValueError):
        raise ClientRequestError(
            "the data: URI's base64 payload is malformed", param=param
        ) from None
    if len(data) > limit:
        raise MediaTooLargeError(
            f"the data: URI holds more than the limit of {limit} bytes", param=param
        )
    return make_blob(data, ctype, None, expect=expect, param=param)


def make_blob(
    data: bytes,
    content_type: str,
    filename: str | None,
    *,
    expect: Kind | None,
    param: str | None = None,
) -> Blob:
    """A :class:`Blob` with a checked type: sniffed magic bytes win over a declared image type.

    Raises :class:`ClientRequestError` naming ``param`` (where the data is in the request) when
    the data is empty or not of kind ``expect``.
    """
    if not data:
        raise ClientRequestError("the file is empty", param=param)
    declared = content_type.split(";", 1)[0].strip().lower() or "application/octet-stream"
    sniffed = sniff(data)
    ctype = declared
    if sniffed and (declared.startswith("image/") or declared == "application/octet-stream"):
        ctype = sniffed
    kind = content_type_kind(ctype)
    if expect is not None and kind != expect:
        raise ClientRequestError(
            f"expected {'an' if expect == 'image' else 'a'} {expect} but got {clip(ctype)}",
            param=param,
        )
    if kind == "image" and sniffed is None and ctype in ("image/png", "image/jpeg", "image/gif"):
        raise ClientRequestError(
            f"the data is declared as {clip(ctype)} but is not one", param=param
        )
    name = filename or default_filename(ctype, "image" if kind == "image" else "upload")
    return Blob(data=data, content_type=ctype, filename=_safe_name(name), kind=kind)


def _safe_name(name: str) -> str:
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip() or "upload.bin"
    return re.sub(r"[\x00-\x1f\x7f]", "", name)[:200]


# -- STS (§7.1) ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StsGrant:
    """What ``getstsToken`` grants. The three credentials never appear in ``repr`` or logs."""

    access_key_id: str = field(repr=False)
    access_key_secret: str = field(repr=False)
    security_token: str = field(repr=False)
    bucket: str
    endpoint: str
    file_id: str
    file_path: str
    file_url: str

    @property
    def object_key(self) -> str:
        """The OSS object key: ``file_path`` without a leading ``<bucket>/`` (§7.2)."""
        path = self.file_path.lstrip("/")
        prefix = self.bucket + "/"
        return path[len(prefix) :] if path.startswith(prefix) else path

    @property
    def user_id(self) -> str:
        """The first segment of ``file_path`` (§7.4)."""
        return self.object_key.split("/", 1)[0]


#: What a grant's bucket and endpoint may be: they make the host of the PutObject URL
#: (``https://<bucket>.<endpoint>/…``), which carries the STS token and the user's file; a
#: ``/``, ``@``, ``?`` or ``#`` in either would send both to another host.
_BUCKET = re.compile(r"[A-Za-z0-9-]{1,63}")
_ENDPOINT = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?::[0-9]{1,5})?")

_STS_FIELDS = (
    "access_key_id",
    "access_key_secret",
    "security_token",
    "bucketname",
    "file_id",
    "file_path",
    "file_url",
)


def parse_sts(payload: Any) -> StsGrant:
    """Read a ``getstsToken`` answer, v2 (``{success, data:{…}}``) or v1 (flat).

    The endpoint is ``endpoint`` or, in v1, ``region + ".aliyuncs.com"``. Raises
    :class:`UpstreamProtocolError` naming the missing fields (never their values).
    """
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        data = payload if isinstance(payload, dict) else {}
    missing = [k for k in _STS_FIELDS if not isinstance(data.get(k), str) or not data.get(k)]
    endpoint = data.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        region = data.get("region")
        endpoint = f"{region}.aliyuncs.com" if isinstance(region, str) and region else ""
        if not endpoint:
            missing.append("endpoint/region")
    if missing:
        raise UpstreamProtocolError(
            "chat.qwen.ai's upload grant (getstsToken) lacks " + ", ".join(missing)
        )
    endpoint = endpoint.removeprefix("https://").removeprefix("http://").strip("/")
    bad = [
        name
        for name, value, form in (
            ("bucketname", data["bucketname"], _BUCKET),
            ("endpoint/region", endpoint, _ENDPOINT),
        )
        if len(value) > 253 or form.fullmatch(value) is None
    ]
    if bad:  # (the values are not quoted)
        raise UpstreamProtocolError(
            "chat.qwen.ai's upload grant (getstsToken) has a malformed " + ", ".join(bad)
        )
    return StsGrant(
        access_key_id=data["access_key_id"],
        access_key_secret=data["access_key_secret"],
        security_token=data["security_token"],
        bucket=data["bucketname"],
        endpoint=endpoint,
        file_id=data["file_id"],
        file_path=data["file_path"],
        file_url=data["file_url"],
    )


# -- OSS PutObject, signature version 1 (§7.2) ---------------------------------------------------


def oss_string_to_sign(
    *,
    method: str,
    content_md5: str,
    content_type: str,
    date: str,
    oss_headers: dict[str, str],
    bucket: str,
    key: str,
) -> str:
    """The OSS v1 StringToSign.

    ``VERB\\nContent-MD5\\nContent-Type\\nDate\\n`` + the ``x-oss-*`` headers (names lower-cased,
    sorted, ``name:value\\n`` each) + the resource ``/<bucket>/<key>`` (key not URL-encoded).
    """
    canon = "".join(
        f"{k}:{v.strip()}\n"
        for k, v in sorted((k.lower().strip(), v) for k, v in oss_headers.items())
        if k.startswith("x-oss-")
    )
    return f"{method}\n{content_md5}\n{content_type}\n{date}\n{canon}/{bucket}/{key}"


def oss_signature(secret: str, string_to_sign: str) -> str:
    """``base64(HMAC-SHA1(secret, string_to_sign))``, the OSS v1 signature."""
    mac = hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


@dataclass(frozen=True, slots=True)
class OssPut:
    """A signed PutObject: ``url`` and ``headers`` (which hold the STS token: never log them)."""

    url: str
    headers: dict[str, str] = field(repr=False)


def oss_put_request(
    grant: StsGrant, blob: Blob, *, date: str, object_store_url: str | None = None
) -> OssPut:
    """The signed PutObject for ``blob`` (``date``: an RFC 1123 GMT date string).

    URL: ``https://<bucket>.<endpoint>/<key>`` (virtual-host style), or, when
    ``object_store_url`` is given (offline mode, tests), ``<object_store_url>/<bucket>/<key>``.
    Headers: ``Content-Type``, ``Content-MD5``, ``Date``, ``x-oss-security-token`` and
    ``Authorization: OSS <access key id>:<signature>``.
    """
    key = grant.object_key
    md5 = base64.b64encode(hashlib.md5(blob.data).digest()).decode("ascii")
    oss = {"x-oss-security-token": grant.security_token}
    sts = oss_string_to_sign(
        method="PUT",
        content_md5=md5,
        content_type=blob.content_type,
        date=date,
        oss_headers=oss,
        bucket=grant.bucket,
        key=key,
    )
    headers = {
        "Content-Type": blob.content_type,
        "Content-MD5": md5,
        "Date": date,
        **oss,
        "Authorization": f"OSS {grant.access_key_id}:{oss_signature(grant.access_key_secret, sts)}",
    }
    quoted = quote(key, safe="/-_.~")
    if object_store_url:
        url = f"{object_store_url.rstrip('/')}/{grant.bucket}/{quoted}"
    else:
        url = f"https://{grant.bucket}.{grant.endpoint}/{quoted}"
    return OssPut(url=url, headers=headers)


# -- the file entry (§7.4) -----------------------------------------------------------------------


def file_entry(
    grant: StsGrant, blob: Blob, *, now_ms: int, item_id: str, task_id: str
) -> dict[str, Any]:
    """The ``messages[0].files[]`` entry the browser sends for an uploaded file (§7.4).

    ``file_class`` is ``vision`` for images, video and audio and ``document`` otherwise;
    ``type``/``showType`` are ``image``/``video``/``audio``/``file``.
    """
    show = filetype_of(blob.kind)
    size = len(blob.data)
    meta: dict[str, Any] = {"name": blob.filename, "size": size, "content_type": blob.content_type}
    return {
        "type": show,
        "file": {
            "created_at": now_ms,
            "data": {},
            "filename": blob.filename,
            "hash": None,
            "id": grant.file_id,
            "user_id": grant.user_id,
            "meta": meta,
            "update_at": now_ms,
            "lastModified": now_ms,
            "name": blob.filename,
            "webkitRelativePath": "",
            "size": size,
            "type": blob.content_type,
        },
        "id": grant.file_id,
        "url": grant.file_url,
        "name": blob.filename,
        "collection_name": "",
        "progress": 0,
        "status": "uploaded",
        "greenNet": "success",
        "size": size,
        "error": "",
        "itemId": item_id,
        "file_type": blob.content_type,
        "showType": show,
        "file_class": "document" if blob.kind == "document" else "vision",
        "uploadTaskId": task_id,
    }
