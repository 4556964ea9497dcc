#!/usr/bin/env python3
"""`python tools/render_site.py` (make site): the site's generated pages.

The command keeps this path, where the Makefile, CI and the docs run it; the code is
tools/site/render.py.
"""

import sys

from tools.site.render import main

if __name__ == "__main__":
    sys.exit(main())
