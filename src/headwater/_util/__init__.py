"""Leaf helpers shared by every layer (stdlib only)."""
