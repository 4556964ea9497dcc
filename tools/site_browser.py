#!/usr/bin/env python3
"""`python tools/site_browser.py`: a built page measured and photographed in headless Chromium.

The command keeps this path, where the Makefile, CI and the docs run it; the code is
tools/site/browser.py.
"""

import sys

from tools.site.browser import main

if __name__ == "__main__":
    sys.exit(main())
