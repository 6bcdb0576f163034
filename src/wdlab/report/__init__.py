"""Plots (matplotlib) and, later, the HTML report."""
