"""resofleet: a control plane for Resonite headless servers.

This package is the command line: it reads configuration and wires the parts
(``gateway``, ``agent``, ``bus``, ``emulator``) together. Each subcommand lives in
its own module under :mod:`resofleet.commands`.
"""

from __future__ import annotations

__version__ = "0.1.0"
