"""``python -m edgeser.cli``: the ``edgeser`` command."""

import sys

from edgeser.cli.entry import main

sys.exit(main())
