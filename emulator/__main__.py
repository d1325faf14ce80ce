"""``python3 -m emulator [--scenario FILE] [--tty] [--seed N] ...``"""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
