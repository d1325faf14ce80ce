import sys

from resofleet.cli import main

sys.exit(main())
