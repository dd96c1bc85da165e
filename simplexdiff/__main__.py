import sys

from simplexdiff.cli import main

sys.exit(main())
