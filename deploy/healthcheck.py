"""A container health check: exit 0 when ``$RESOFLEET_HEALTH_URL`` answers 200, else 1.

Standard library only, so it runs with the image's python3 and nothing else; it prints
the endpoint's answer, which ``docker inspect`` shows as the check's output.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

#: Seconds for the whole request: below the HEALTHCHECK's own --timeout.
TIMEOUT = 2.0


def main() -> int:
    url = os.environ.get("RESOFLEET_HEALTH_URL", "http://127.0.0.1:8000/readyz")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            print(response.read(200).decode("utf-8", "replace").strip())
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(f"{exc.code}: {exc.read(200).decode('utf-8', 'replace').strip()}")
    except OSError as exc:
        print(f"no answer from {url}: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
