"""Fault tests: real processes killed, stopped and restarted, and servers cut, under load."""
