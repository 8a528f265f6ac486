"""``python -m reid_core.cli``: the ``reid`` command."""

import sys

from reid_core.cli.main import main

sys.exit(main())
