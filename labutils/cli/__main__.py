"""``python -m labutils.cli``: the same as ``labctl``."""

import sys

from labutils.cli import main

sys.exit(main())
