"""Request-body decompression shared by the server's push decoder and the agent's push receiver (stdlib only).

Bodies are inflated in bounded steps, so a small "zip bomb" is refused once it passes the limit instead of
filling memory.
"""

from __future__ import annotations

import zlib


class DecompressError(ValueError):
    """A body that cannot be decompressed (empty, truncated, corrupt, or trailing garbage)."""


class DecompressTooLarge(DecompressError):
    """A body that decompresses to more than the limit; `size` is how far it got."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


def inflate(body: bytes, wbits: int, limit: int, what: str) -> bytes:
    """Decompress gzip (wbits 31, several members allowed) or deflate (wbits 15 zlib, -15 raw), never past `limit`."""
    chunks: list[bytes] = []
    total = 0
    data = body
    if not data:
        raise DecompressError(f"{what} body is empty")
    while True:
        d = zlib.decompressobj(wbits)
        try:
            while not d.eof:
                out = d.decompress(data, limit + 1 - total)
                data = d.unconsumed_tail
                if out:
                    total += len(out)
                    if total > limit:
                        raise DecompressTooLarge(f"the {what} body decompresses to more than {limit} bytes", total)
                    chunks.append(out)
                elif not data:
                    raise DecompressError(f"{what} body is truncated")
        except zlib.error as exc:
            raise DecompressError(f"invalid {what} body: {exc}") from None
        data = d.unused_data
        if wbits != 31 or not data:
            break
    if data:
        raise DecompressError(f"invalid {what} body: {len(data)} bytes of garbage after the compressed data")
    return b"".join(chunks)


def inflate_deflate(body: bytes, limit: int) -> bytes:
    """Decompress a `Content-Encoding: deflate` body: raw DEFLATE as Go reads it, or zlib-wrapped as many clients
    send it."""
    if len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0:
        try:
            return inflate(body, 15, limit, "deflate")
        except DecompressTooLarge:
            raise
        except DecompressError:
            pass
    return inflate(body, -15, limit, "deflate")
