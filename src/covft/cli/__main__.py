"""``python -m covft.cli ...`` (what ``accelerate launch -m covft.cli train ...`` runs)."""

import sys

from covft.cli import main

sys.exit(main())
