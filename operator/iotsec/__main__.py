import sys

from iotsec.cli.main import main

sys.exit(main())
