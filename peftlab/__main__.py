import sys

from peftlab.tools.cli import main

sys.exit(main())
