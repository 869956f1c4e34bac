import sys

from fullchain.cli import command

sys.exit(command())
