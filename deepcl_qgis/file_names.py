"""File and folder names made from layer names, which may hold any character."""
from __future__ import annotations

import re

MAX_NAME_CHARACTERS = 80  # of a layer's name kept: a path must stay within the file system's limits


def name_from(text: str) -> str:
    """``text`` as a file name: each run of characters other than letters, digits, '.' and '-' as
    one '_', cut to :data:`MAX_NAME_CHARACTERS`."""
    return re.sub(r"[^\w.-]+", "_", text)[:MAX_NAME_CHARACTERS]
