"""The data error types, and the printable file names that their messages and record ids carry.

Every failure to read a record raises a `DataError` that names the file (or record id) and the
reason, so that a bad file in an archive of millions can be found, and so that the pipeline can skip
and count it when the config says so (`data.skip_bad`).

File names that are not valid UTF-8 appear in ids and messages with their undecodable bytes (and
'%') percent-encoded (`printable_name`).
"""

from __future__ import annotations


class DataError(ValueError):
    """An input record is unusable (unreadable, corrupt, wrong band count, missing, empty split)."""


class BadImageError(DataError):
    """A file or encoded image cannot be read or decoded, is too large, or holds non-finite values."""


class ImageTooLargeError(BadImageError):
    """An image has more values (height x width x bands) than `data.max_image_pixels` allows."""


class BandCountError(DataError):
    """An image has a different number of bands than the config expects."""


def printable_name(name: str) -> str:
    """`name` (a path as the OS gave it) as valid UTF-8 text, losslessly.

    Names that are valid UTF-8 are returned unchanged. Otherwise Python holds each undecodable
    byte as a surrogate ('surrogateescape'), which cannot be written as UTF-8; here each becomes
    '%XX' and each '%' becomes '%25', so `os.fsdecode(urllib.parse.unquote_to_bytes(result))` gives
    the name back.
    """
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        pass
    parts = []
    for char in name:
        if char == "%":
            parts.append("%25")
        elif "\udc80" <= char <= "\udcff":  # A byte that was not UTF-8.
            parts.append(f"%{ord(char) - 0xDC00:02X}")
        elif "\ud800" <= char <= "\udfff":  # Any other lone surrogate.
            parts.append("".join(f"%{b:02X}" for b in char.encode("utf-8", "surrogatepass")))
        else:
            parts.append(char)
    return "".join(parts)
