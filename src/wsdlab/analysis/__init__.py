"""Pure measurements on checkpoints and data, returning tables (lists of dict rows).

Importing the package registers every analysis by name (see `analysis_names()`).
"""

from wsdlab.analysis.registry import analysis_names, get_analysis, register_analysis
from wsdlab.analysis.tables import read_table, write_table

# Register the analyses (each module decorates its table functions with @register_analysis).
from wsdlab.analysis import (  # noqa: E402,F401  (imported for registration)
    alignment,
    averaging,
    bias_variance,
    geometry_tables,
    hyperparams,
    perplexity,
    recency,
)

__all__ = ["analysis_names", "get_analysis", "read_table", "register_analysis", "write_table"]
