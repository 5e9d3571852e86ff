"""File and folder names made from layer names, which may hold any character."""
from __future__ import annotations

import re

MAX_NAME_CHARACTERS = 80  # of a layer's name kept: a path must stay within the file system's limits
# File systems take names of 255 bytes; a letter takes up to 4 in UTF-8 (Chinese ones 3), so 80
# characters can be 320 bytes
MAX_NAME_BYTES = 200


def name_from(text: str, characters: int = MAX_NAME_CHARACTERS, max_bytes: int = MAX_NAME_BYTES) -> str:
    """``text`` as a file name: each run of characters other than letters, digits, '.' and '-' as
    one '_', cut to ``characters`` characters and to ``max_bytes`` bytes in UTF-8 (never inside a letter)."""
    name = re.sub(r"[^\w.-]+", "_", text)[:characters]
    return name.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")
