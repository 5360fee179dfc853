import sys

from iotsec.cli import main

sys.exit(main())
