"""Figures (one list, :data:`workflow_scripts.figures.plots.FIGURES`) and the HTML report pages.
"""
