"""Reading a small text file the admin names by path (policy, trust store, recovery key).

The console and the server run on the same box; for files the admin brings on
removable media, the console reads them and sends their text to the admin API.
Errors say plainly what is wrong with which file.
"""

from __future__ import annotations

from pathlib import Path


class LocalFileError(ValueError):
    """The named file cannot be used; the message says why."""


def read_text_file(path_text: str, what: str, limit: int) -> tuple[Path, str]:
    """The file's path and text (UTF-8, at most `limit` bytes)."""
    if not path_text.strip():
        raise LocalFileError(f"Enter the path of the {what} file.")
    path = Path(path_text.strip()).expanduser()
    try:
        if path.is_dir():
            raise LocalFileError(f"{path} is a directory; give the {what} file inside it.")
        size = path.stat().st_size
        if size > limit:
            raise LocalFileError(f"{path} is {size} bytes; a {what} file is under {limit}.")
        data = path.read_bytes()
    except FileNotFoundError:
        raise LocalFileError(f"No such file: {path} ({what}).") from None
    except PermissionError:
        raise LocalFileError(f"Not allowed to read {path} ({what}).") from None
    except OSError as exc:
        raise LocalFileError(f"Cannot read {path}: {exc.strerror or exc}") from None
    try:
        return path, data.decode("utf-8")
    except UnicodeDecodeError:
        raise LocalFileError(f"{path} is not UTF-8 text; is it the {what} file?") from None
