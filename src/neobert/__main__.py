import sys

from neobert.cli import main

sys.exit(main())
