import sys

from fullchain.cli import main

sys.exit(main())
