"""HTTP/1.x on the wire, without sockets: parse one request head, build one response.

Only what a load target needs: request line + headers, `Content-Length` bodies (read and
ignored), keep-alive rules of HTTP/1.0 and 1.1, `Expect: 100-continue`. Chunked request
bodies are refused (501, connection closed) rather than half supported.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024

REASONS = {
    100: "Continue", 200: "OK", 400: "Bad Request", 404: "Not Found",
    405: "Method Not Allowed", 413: "Content Too Large", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class HttpError(Exception):
    """The request cannot be parsed; answer `status` and close the connection."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # without the query string
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    keep_alive: bool
    content_length: int
    expect_continue: bool


def _head_end(buf: bytes | bytearray, start: int) -> tuple[int, int]:
    """(index where the blank line starts, its length) or (-1, 0). Bare LF line ends are
    accepted as well as CRLF, as most servers do."""
    crlf = buf.find(b"\r\n\r\n", start)
    lf = buf.find(b"\n\n", start)
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf, 2
    return (crlf, 4) if crlf >= 0 else (-1, 0)


def parse_head(buf: bytes | bytearray) -> tuple[Request, int] | None:
    """Parse the request head at the start of `buf`.

    Returns (request, bytes taken by the head) — the body, `content_length` bytes, follows —
    or None when the head is not complete yet. Raises HttpError for a bad request.
    """
    start = 0
    n = len(buf)
    # RFC 9112 §2.2: ignore empty lines before a request line (some clients send a stray
    # CRLF after a body)
    while start < n and buf[start] in (0x0D, 0x0A):
        start += 1
    end, sep = _head_end(buf, start)
    if end < 0:
        if n - start > MAX_HEAD_BYTES:
            raise HttpError(431, "request head too large")
        return None
    if end - start > MAX_HEAD_BYTES:
        raise HttpError(431, "request head too large")
    lines = bytes(buf[start:end]).decode("latin-1").split("\n")
    parts = lines[0].rstrip("\r").split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if version.startswith("HTTP/"):
            raise HttpError(505, f"unsupported version {version}")
        raise HttpError(400, "malformed request line")
    if not method.isascii() or not method.isalpha():
        raise HttpError(400, "malformed method")

    content_length: int | None = None
    connection: set[str] = set()
    expect_continue = False
    for raw in lines[1:]:
        line = raw.rstrip("\r")
        colon = line.find(":")
        if colon <= 0 or line[colon - 1] in " \t" or line[0] in " \t":
            # no name, whitespace before the colon, or obsolete line folding (RFC 9112 §5)
            raise HttpError(400, "malformed header line")
        name = line[:colon].lower()
        value = line[colon + 1:].strip()
        if name == "content-length":
            if not value.isdigit() or not value.isascii():
                raise HttpError(400, "bad Content-Length")
            length = int(value)
            if content_length is not None and content_length != length:
                raise HttpError(400, "conflicting Content-Length headers")
            content_length = length
        elif name == "transfer-encoding":
            raise HttpError(501, "Transfer-Encoding bodies are not supported")
        elif name == "connection":
            connection.update(t.strip().lower() for t in value.split(","))
        elif name == "expect" and value.lower() == "100-continue":
            expect_continue = True

    if target.startswith("/"):
        path = target
    elif "://" in target:  # absolute form (a proxy's request)
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        path = rest[slash:] if slash >= 0 else "/"
    elif target == "*":
        path = "*"
    else:
        raise HttpError(400, "malformed request target")
    q = path.find("?")
    if q >= 0:
        path = path[:q]
    length = content_length or 0
    if length > MAX_BODY_BYTES:
        raise HttpError(413, "request body too large")
    if version == "HTTP/1.1":
        keep_alive = "close" not in connection
    else:
        keep_alive = "keep-alive" in connection
    request = Request(method, path, version, keep_alive, length,
                      expect_continue and version == "HTTP/1.1")
    return request, end + sep


def response(status: int, body: bytes, *, content_type: str = "text/plain; charset=utf-8",
             keep_alive: bool = True, headers: str = "", head_only: bool = False,
             date: str = "") -> bytes:
    """One complete response as bytes, for a single socket write.

    `headers` is extra header lines, each ending in CRLF. For HEAD the body is left out but
    Content-Length still describes it.
    """
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}",
             f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    if date:
        lines.append(f"Date: {date}")
    if not keep_alive:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n" + headers + "\r\n").encode("latin-1")
    return head if head_only else head + body
