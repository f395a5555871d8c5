from __future__ import annotations

import sys

from telegen.cli import main

sys.exit(main())
