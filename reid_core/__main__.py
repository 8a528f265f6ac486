"""``python -m reid_core``: the ``reid`` command (see :mod:`reid_core.cli.main`)."""

import sys

from reid_core.cli.main import main

sys.exit(main())
