import sys

from observe.stack import main

sys.exit(main())
