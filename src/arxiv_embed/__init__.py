"""Shared code of the arXiv embedding pipeline and its API.

Small flat modules; nothing happens at import time.
"""

__version__ = "0.1.0"
