"""Pure measurements on checkpoints and data, returning tables (lists of dict rows).

Each analysis is one registered unit (`wsdlab.analysis.units`); importing the package registers the
built-in ones, dependencies first (see `units()`).
"""

# Register the built-in units (each module declares its units with @register_unit).
from wsdlab.analysis import (  # noqa: E402,F401,I001  (imported for registration, in this order)
    alignment,
    averaging,
    bias_variance,
    curves,
    geometry_tables,
    hyperparams,
    perplexity,
    recency,
    update_norm,
    wso,
)
from wsdlab.analysis.tables import read_table, write_table
from wsdlab.analysis.units import (
    AnalysisUnit,
    RunSelector,
    get_unit,
    register_unit,
    unit_names,
    units,
)

__all__ = ["AnalysisUnit", "RunSelector", "get_unit", "read_table", "register_unit", "unit_names", "units",
           "write_table"]
