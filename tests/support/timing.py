"""How long tests let things take that the project documents as happening "at once".

A test asserts what a user would notice, not how fast this machine is: an offline server
answered at once rather than at the request's timeout, a dead console failing its command
at once rather than at the deadline. So a bound sits far below the timeout it is
contrasted with and far above the scheduling delays of a loaded CI machine; the figures
themselves are measured in bench/.
"""

from __future__ import annotations

from typing import Final

#: Seconds within which something documented as immediate must happen in a test: the
#: shortest request timeout it is told apart from is 5 s (get_output), most are 15 s.
AT_ONCE: Final = 2.0
