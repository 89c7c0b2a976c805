"""Pure measurements on checkpoints and data, returning tables (lists of dict rows).

Each analysis is one registered unit (`wsdlab.analysis.units`); importing the package registers the
built-in ones (every module of the package); `units()` orders them dependencies first.
"""

import importlib as _importlib
import pkgutil as _pkgutil

# Register the built-in units: every module of this package is imported once (each declares its units
# with @register_unit), so a new analysis is its own module here plus its catalogue entry in the report.
for _module in sorted(m.name for m in _pkgutil.iter_modules(__path__)):
    _importlib.import_module(f"{__name__}.{_module}")

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
