"""``python -m BrainGemma3DLib`` is the same as the ``braingemma3d`` command."""

import sys

from .cli import main

sys.exit(main())
