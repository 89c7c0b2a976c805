"""Pure measurements on checkpoints and data, returning tables (lists of dict rows)."""

from wsdlab.analysis.registry import analysis_names, get_analysis, register_analysis
from wsdlab.analysis.tables import read_table, write_table

__all__ = ["analysis_names", "get_analysis", "read_table", "register_analysis", "write_table"]
