"""Paper versus this run: the papers' claims as data, and their verdicts on a study's tables.

`CLAIMS` (catalog.py) lists each finding with its verbatim quote; `evaluate_claims(tables)` gives one
row per claim of the papers a study touches (value, 95% interval, holds / contradicted / inconclusive
and why); `write_claims(study_dir)` writes STUDY/tables/claims.csv, which the report opens with.
"""

from wsdlab.analysis.claims.catalog import CLAIMS, PAPERS
from wsdlab.analysis.claims.evaluate import COLUMNS, evaluate_claims, summary_line, verdict_counts, write_claims
from wsdlab.analysis.claims.model import Claim

__all__ = ["CLAIMS", "COLUMNS", "PAPERS", "Claim", "evaluate_claims", "summary_line", "verdict_counts", "write_claims"]
