"""The files of a multipart request: read, checked against the form's contract, named safely.

`single_upload` is the one `file` of `/predict`, `/predict/explain` and `/predict/compare`;
`uploads` the repeated `files` of `/predict/batch`. Stray fields, duplicates and too many files
are refused with the envelope. A client's file name is echoed only as a sanitised base name.
"""

from __future__ import annotations

import re
import unicodedata

from fastapi import Request
from starlette.datastructures import UploadFile as StarletteUploadFile

from deployments.errors import ApiError

__all__ = ["MAX_FILENAME_CHARS", "safe_filename", "single_upload", "uploads"]

MAX_FILENAME_CHARS = 100  # of a client's file name echoed in /predict/batch
_ANSI_ESCAPE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")  # CSI and 2-byte sequences


async def single_upload(request: Request) -> bytes:
    """The one `file` of a single-image request (duplicates and stray fields are refused); its
    name is not echoed, so not read."""
    (upload,) = await _files(request, "file", 1)
    return await upload.read()


async def uploads(request: Request, field: str, max_files: int) -> list[tuple[str, bytes]]:
    """(filename, bytes) of every upload under `field`, in order; refuses other fields."""
    files = await _files(request, field, max_files)
    return [(safe_filename(f.filename, i), await f.read()) for i, f in enumerate(files)]


async def _files(request: Request, field: str, max_files: int) -> list[StarletteUploadFile]:
    form = await request.form()  # parsed once by FastAPI already; this is its cached copy
    unexpected = sorted({key for key in form if key != field})
    if unexpected:
        raise ApiError(422, "validation_error", f"unexpected form fields: {unexpected}; "
                       f"send the image(s) as `{field}`")  # fmt: skip
    values = form.getlist(field)
    if not all(isinstance(v, StarletteUploadFile) for v in values):
        raise ApiError(422, "validation_error", f"`{field}` must be a file upload")
    if max_files == 1 and len(values) != 1:
        raise ApiError(422, "validation_error", f"send exactly one `{field}`, not {len(values)}")
    if len(values) > max_files:
        raise ApiError(413, "too_large", f"{len(values)} files; at most {max_files} per request")
    return values


def safe_filename(name: str | None, index: int) -> str:
    """The base name a client gave, safe to show: no folders, no ANSI escape sequences, no
    control, format (bidi override) or separator characters, at most MAX_FILENAME_CHARS."""
    base = _ANSI_ESCAPE.sub("", re.split(r"[/\\]", name or "")[-1])
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C"
                   and unicodedata.category(c) not in ("Zl", "Zp")).strip()  # fmt: skip
    if len(base) > MAX_FILENAME_CHARS:
        base = base[: MAX_FILENAME_CHARS - 1] + "…"
    return base if base.strip(".") else f"file-{index}"
