"""Widgets shared by the console's screens; each carries its own CSS."""
