#!/usr/bin/env python3
"""The unit check of bench/plot_png.py (TAP; make check runs it): a PNG it
writes decodes (signature, every chunk's CRC, IHDR, the data length), has
the size asked for and the pixels where they were drawn, and a flipped bit
is caught."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plot_png  # noqa: E402

sys.exit(plot_png.self_test())
