"""Figures and one self-contained HTML report of a study, drawn from its analysis tables only."""

from wsdlab.report.catalog import FIGURES, SECTIONS, FigureSpec, figure_names
from wsdlab.report.html import build_report, load_tables

__all__ = ["FIGURES", "SECTIONS", "FigureSpec", "build_report", "figure_names", "load_tables"]
