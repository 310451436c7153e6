"""`python -m bench ...`: the same as `maildispatch bench ...`."""

import sys

from bench.cli import main

sys.exit(main())
