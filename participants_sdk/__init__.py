"""Sagawire participant SDK."""
