"""The command line's results on stdout: JSON, which scripts parse."""
from __future__ import annotations

import json
import sys
from typing import Any

from .errors import OutputError


def print_json(value: Any) -> None:
    """``value`` as indented JSON. Text outside ASCII (a path, the ▸ of a warning) is written as it is
    where stdout takes UTF-8, and as JSON escapes elsewhere (a redirected stdout on Windows is
    cp1252, which cannot encode it: the run would end in an error after its work was done)."""
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "").replace("_", "")
    try:  # flushed here: a redirected stdout's buffer would otherwise fail only as Python exits
        print(json.dumps(value, indent=2, default=str, ensure_ascii=encoding != "utf8"), flush=True)
    except BrokenPipeError:  # the reader left (`| head`): the command line ends quietly
        raise
    except OSError as exc:  # a full disk behind `> results.json`
        raise OutputError(f"the results could not be written to standard output: {exc.strerror}") from None
