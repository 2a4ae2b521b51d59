"""Tests that drive Debian's chromium: what the console's pages do in a real browser."""
