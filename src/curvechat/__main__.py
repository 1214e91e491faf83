import sys

from curvechat.cli.main import main

sys.exit(main())
