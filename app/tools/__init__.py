"""Offline features behind commands: produce, simulate, fit, demo, report."""
