"""``python -m gradconceal`` runs the command-line tool."""

import sys

from gradconceal.cli import main

sys.exit(main())
