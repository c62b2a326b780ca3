"""Event pipeline behind the student dashboard."""
