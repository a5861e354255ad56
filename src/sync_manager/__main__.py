"""``python -m sync_manager``: the command line."""

import sys

from sync_manager.cli.main import main

sys.exit(main())
