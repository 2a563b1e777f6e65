"""The audit log's file: append-only, length-prefixed, checksummed records, fsynced.

Why a flat file rather than SQLite: the log's only operations are "append one
record durably" and "read a range back", and its integrity argument (never a
torn entry) is short for a file we write ourselves: a record is

    u32 BE  length L of (type || body)
    u8      type  (1 = entry, 2 = checkpoint)
    L-1     body  (canonical CBOR map)
    u32 BE  CRC-32 (IEEE) over the length, type and body bytes

after an 8-byte file magic. Each append is one write() followed by fsync().
A crash can only leave an incomplete or CRC-failing record *at the end of the
file*; `open()` cuts that tail off (and says how many bytes it cut). A bad
record followed by more records is not a crash but damage or tampering and is
refused, never "repaired". The chain and checkpoints then protect the content.
"""

from __future__ import annotations

import fcntl
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from .chain import AuditCorrupt

FILE_MAGIC = b"OPAUDIT1"
RECORD_ENTRY = 1
RECORD_CHECKPOINT = 2
MAX_RECORD_BYTES = 64 * 1024  # an entry is bounded by MAX_DETAILS_BYTES plus its fixed fields
_LEN = struct.Struct(">I")
_CRC = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Record:
    """Where a record's body lies; bodies are read on demand so a long log costs little RAM."""

    offset: int  # of the body in the file
    type: int
    size: int


class RecordFile:
    """One open audit file, locked against a second writer process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        new = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise AuditCorrupt(None, f"audit file {path} is in use by another process") from None
        self._fd = fd
        if new or os.fstat(fd).st_size == 0:
            os.write(fd, FILE_MAGIC)
            os.fsync(fd)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the new file's directory entry must survive a crash too
            finally:
                os.close(dir_fd)
        self.records: list[Record] = []
        self.recovered_tail_bytes = 0
        self._scan()

    def _scan(self) -> None:
        size = os.fstat(self._fd).st_size
        data = os.pread(self._fd, size, 0)
        if data[: len(FILE_MAGIC)] != FILE_MAGIC:
            if FILE_MAGIC.startswith(data):  # crash while creating the file
                os.ftruncate(self._fd, 0)
                os.write(self._fd, FILE_MAGIC)
                os.fsync(self._fd)
                return
            raise AuditCorrupt(None, "not an Outpost audit file")
        pos = len(FILE_MAGIC)
        while pos < len(data):
            rec, end = self._parse_at(data, pos)
            if rec is None:
                break
            self.records.append(rec)
            pos = end
        if pos < len(data):
            self.recovered_tail_bytes = len(data) - pos
            os.ftruncate(self._fd, pos)
            os.fsync(self._fd)
        self._end = pos

    @staticmethod
    def _parse_at(data: bytes, pos: int) -> tuple[Record | None, int]:
        """The record at `pos`, or (None, pos) if the rest of the file is a torn tail."""
        if len(data) - pos < _LEN.size:
            return None, pos
        (length,) = _LEN.unpack_from(data, pos)
        end = pos + _LEN.size + length + _CRC.size
        if length < 1 or length > MAX_RECORD_BYTES:
            if not any(data[pos:]):
                return None, pos  # a zero-filled tail, as some filesystems leave after a crash
            raise AuditCorrupt(None, f"record at byte {pos} has an impossible length {length}")
        if end > len(data):
            return None, pos  # the length made it to disk, the rest of the record did not
        (crc,) = _CRC.unpack_from(data, end - _CRC.size)
        if zlib.crc32(data[pos : end - _CRC.size]) != crc:
            if end == len(data):
                return None, pos  # the last record was cut mid-write
            raise AuditCorrupt(None, f"record at byte {pos} fails its checksum and is not the last")
        return Record(pos + _LEN.size + 1, data[pos + _LEN.size], length - 1), end

    def append(self, rtype: int, body: bytes) -> Record:
        if len(body) + 1 > MAX_RECORD_BYTES:
            raise AuditCorrupt(None, "record too large")
        head = _LEN.pack(len(body) + 1) + bytes([rtype]) + body
        raw = head + _CRC.pack(zlib.crc32(head))
        written = os.pwrite(self._fd, raw, self._end)
        if written != len(raw):
            os.ftruncate(self._fd, self._end)  # never leave a short record behind a live process
            raise OSError("short write to audit file")
        os.fsync(self._fd)
        rec = Record(self._end + _LEN.size + 1, rtype, len(body))
        self._end += len(raw)
        self.records.append(rec)
        return rec

    def read(self, rec: Record) -> bytes:
        return os.pread(self._fd, rec.size, rec.offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
