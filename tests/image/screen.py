"""The tty1 screenshot: PPM (qemu screendump) to PNG, and the text on it.

The text is read back by matching each character cell against the glyphs of
the PSF font the console unit loads (Uni2-Terminus16 from the built root), so
the test asserts on words, not on pixels. Stdlib only.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

PSF1_MAGIC = b"\x36\x04"
PSF2_MAGIC = b"\x72\xb5\x4a\x86"


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    rgb: bytes

    def pixel(self, x: int, y: int) -> bytes:
        i = (y * self.width + x) * 3
        return self.rgb[i : i + 3]


def read_ppm(path: Path) -> Image:
    data = path.read_bytes()
    fields: list[bytes] = []
    i = 0
    while len(fields) < 4:
        while data[i : i + 1].isspace():
            i += 1
        if data[i : i + 1] == b"#":
            i = data.index(b"\n", i)
            continue
        j = i
        while not data[j : j + 1].isspace():
            j += 1
        fields.append(data[i:j])
        i = j
    if fields[0] != b"P6" or fields[3] != b"255":
        raise ValueError(f"{path}: not an 8-bit binary PPM (P6)")
    w, h = int(fields[1]), int(fields[2])
    rgb = data[i + 1 : i + 1 + w * h * 3]
    if len(rgb) != w * h * 3:
        raise ValueError(f"{path}: truncated pixel data")
    return Image(w, h, rgb)


def write_png(img: Image, path: Path) -> None:
    stride = img.width * 3
    raw = b"".join(b"\0" + img.rgb[y * stride : (y + 1) * stride] for y in range(img.height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", img.width, img.height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


@dataclass(frozen=True)
class Font:
    width: int
    height: int
    glyphs: dict[bytes, str]  # bitmap (one byte per pixel row, width <= 8) -> character


def read_psf(path: Path) -> Font:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if data[:2] == PSF1_MAGIC:
        mode, charsize = data[2], data[3]
        count = 512 if mode & 0x01 else 256
        width, height, offset, has_table = 8, charsize, 4, bool(mode & 0x06)
        table = _psf1_table(data[offset + count * charsize :], count) if has_table else None
    elif data[:4] == PSF2_MAGIC:
        _, header, flags, count, charsize, height, width = struct.unpack("<7I", data[4:32])
        offset, has_table = header, bool(flags & 1)
        table = _psf2_table(data[offset + count * charsize :], count) if has_table else None
    else:
        raise ValueError(f"{path}: not a PSF font")
    if width > 8:
        raise ValueError(f"{path}: fonts wider than 8 pixels are not supported")
    glyphs: dict[bytes, str] = {}
    for n in range(count):
        bitmap = data[offset + n * charsize : offset + (n + 1) * charsize]
        chars = table[n] if table else [chr(n)]
        for ch in chars:  # prefer ASCII where two characters share a glyph
            if bitmap not in glyphs or (ch.isascii() and not glyphs[bitmap].isascii()):
                glyphs[bitmap] = ch
    return Font(width, height, glyphs)


def _psf1_table(raw: bytes, count: int) -> list[list[str]]:
    table: list[list[str]] = []
    words = struct.unpack(f"<{len(raw) // 2}H", raw[: len(raw) // 2 * 2])
    current: list[str] = []
    in_seq = False
    for w in words:
        if w == 0xFFFF:
            table.append(current)
            current, in_seq = [], False
            if len(table) == count:
                break
        elif w == 0xFFFE:
            in_seq = True
        elif not in_seq:
            current.append(chr(w))
    return table


def _psf2_table(raw: bytes, count: int) -> list[list[str]]:
    table: list[list[str]] = []
    for entry in raw.split(b"\xff")[:count]:
        single = entry.split(b"\xfe", 1)[0]
        table.append(list(single.decode("utf-8", errors="ignore")))
    return table


def read_text(img: Image, font: Font) -> list[str]:
    """The screen as lines of text; '?' where a cell matches no glyph."""
    cols, rows = img.width // font.width, img.height // font.height
    lines = []
    for r in range(rows):
        line = []
        for c in range(cols):
            x0, y0 = c * font.width, r * font.height
            cell = [
                [img.pixel(x0 + x, y0 + y) for x in range(font.width)] for y in range(font.height)
            ]
            background = Counter(p for row in cell for p in row).most_common(1)[0][0]
            bits = bytes(
                sum(0x80 >> x for x, p in enumerate(row) if p != background) for row in cell
            )
            ch = " " if not any(bits) else font.glyphs.get(bits)
            if ch is None:  # reverse video: the "background" was the glyph
                ch = font.glyphs.get(bytes((~b) & (0xFF << (8 - font.width)) & 0xFF for b in bits))
            line.append(ch if ch is not None else "?")
        lines.append("".join(line).rstrip())
    return lines
