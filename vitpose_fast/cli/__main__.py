import sys

from vitpose_fast.cli.main import main

sys.exit(main())
