import sys

from vitpose_fast.cli.commands import main

sys.exit(main())
