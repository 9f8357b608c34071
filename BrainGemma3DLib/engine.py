"""``python -m BrainGemma3DLib.engine``: the report worker's documented entry point (code: ``app.engine``)."""

from __future__ import annotations

import sys

from .app.engine import main

if __name__ == "__main__":
    sys.exit(main())
