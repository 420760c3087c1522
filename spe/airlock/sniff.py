"""What a file is, from its first bytes: never from its name.

Record-level and opaque formats are recognised by their magic numbers (DICOM's 128-byte
preamble and "DICM"; Parquet, Feather/Arrow, pickle, NumPy, SQLite, HDF5, NIfTI; zip, gzip,
bzip2, xz, zstd, 7z, tar; executables). Everything else is text if it decodes as UTF-8 with
no NUL byte, or binary.
"""

from __future__ import annotations

HEAD_BYTES = 512

# (kind, description) by prefix
_PREFIXES: list[tuple[bytes, str, str]] = [
    (b"\x89PNG\r\n\x1a\n", "png", "PNG image"),
    (b"%PDF-", "pdf", "PDF document"),
    (b"PAR1", "opaque", "Parquet file"),
    (b"ARROW1", "opaque", "Arrow/Feather file"),
    (b"\x93NUMPY", "opaque", "NumPy array"),
    (b"SQLite format 3\x00", "opaque", "SQLite database"),
    (b"\x89HDF\r\n\x1a\n", "opaque", "HDF5 file"),
    (b"PK\x03\x04", "archive", "zip archive (also xlsx, docx, npz)"),
    (b"PK\x05\x06", "archive", "zip archive"),
    (b"\x1f\x8b", "archive", "gzip-compressed file"),
    (b"BZh", "archive", "bzip2-compressed file"),
    (b"\xfd7zXZ\x00", "archive", "xz-compressed file"),
    (b"\x28\xb5\x2f\xfd", "archive", "zstd-compressed file"),
    (b"7z\xbc\xaf\x27\x1c", "archive", "7z archive"),
    (b"Rar!\x1a\x07", "archive", "RAR archive"),
    (b"\x7fELF", "opaque", "executable (ELF)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "opaque", "OLE2 document (xls, doc)"),
    (b"\xff\xd8\xff", "image", "JPEG image"),
    (b"GIF8", "image", "GIF image"),
]


def sniff(head: bytes) -> tuple[str, str]:
    """(kind, description) of content starting with `head` (at least HEAD_BYTES if any).

    kind is one of dicom, png, pdf, image, opaque, archive, text, binary, empty.
    """
    if not head:
        return "empty", "empty file"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom", "DICOM file (preamble and DICM prefix)"
    for prefix, kind, description in _PREFIXES:
        if head.startswith(prefix):
            return kind, description
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "opaque", "Python pickle"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "archive", "tar archive"
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "opaque", "NIfTI image volume"
    if b"\x00" in head:
        return "binary", "binary content"
    if _decodes(head):
        return "text", "text"
    return "binary", "binary content (not UTF-8 text)"


def _decodes(head: bytes) -> bool:
    """UTF-8, allowing a multi-byte character cut at the end of the sample."""
    for cut in range(4):
        try:
            head[: len(head) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False
