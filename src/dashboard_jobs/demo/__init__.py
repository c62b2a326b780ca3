"""The demo: a realistic school, the whole pipeline as real processes, and a report."""
