"""Server patterns: the glob patterns that name several servers at once.

A bulk ``command`` or ``container`` request names its servers with ``servers``, a list of
glob patterns (:func:`fnmatch.fnmatchcase`: ``*``, ``?``, ``[a-z]``, ``[!a-z]``) over
server ids, in the grammar of a token's ``servers`` claim: server-id characters (lowercase
letters, digits, dashes) and the glob characters ``* ? [ ] !``. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from .errors import ContractError

__all__ = [
    "MAX_BULK_PATTERNS",
    "MAX_BULK_SERVERS",
    "MAX_PATTERN_LENGTH",
    "SERVER_PATTERN",
    "check_patterns",
]

#: Server patterns one bulk ``command`` or ``container`` may list: as many as a token may
#: carry (``gateway.tokens.MAX_PATTERNS``). A person names a region or two; each pattern
#: is matched against every known server, so the bound keeps one frame's work small.
MAX_BULK_PATTERNS: Final = 64
#: Servers one bulk request may reach once its patterns are expanded: as many as one
#: ``subscribe`` may name. A larger fleet is reached in several requests, each of which
#: costs rate-limit tokens by the servers it reaches; past it, ``bad_request`` and nothing
#: runs.
MAX_BULK_SERVERS: Final = 256
#: Longest server pattern, in characters (as in a token's ``servers``).
MAX_PATTERN_LENGTH: Final = 64
#: A server pattern (see the module docstring).
SERVER_PATTERN: Final = re.compile(rf"[a-z0-9*?\[\]!-]{{1,{MAX_PATTERN_LENGTH}}}")


def check_patterns(patterns: Sequence[str]) -> None:
    """Raise :class:`ContractError` naming what is wrong when ``patterns`` is empty or one
    of them is not a server pattern."""
    if not patterns:
        raise ContractError(
            "`servers` is empty: name at least one server or pattern, such as \"eu-*\"."
        )
    for pattern in patterns:
        if not SERVER_PATTERN.fullmatch(pattern):
            raise ContractError(
                f"{pattern[:80]!r} in `servers` is not a server pattern: server ids in "
                f"lowercase letters, digits and dashes, with * ? [ ] ! as in a shell glob, "
                f"at most {MAX_PATTERN_LENGTH} characters."
            )
