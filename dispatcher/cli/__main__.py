"""`python -m dispatcher.cli`: how worker processes are started by module path."""

import sys

from dispatcher.cli.main import main

sys.exit(main())
