"""The geometry analyses on run directories, one registered unit per module: `sharpness`, `interpolate`,
`landscape`, `trajectory`, `probes`; `common` holds what they share (reading a run's weights and data,
the study's run selector, the base unit class). Each reads weights from a `RunDir` (snapshots or
checkpoints), fixed batches of the run's data, and returns one table (list of dict rows).

Table columns (every table starts with `run`, the run directory's name):
- sharpness:   run, step, dataset, method, estimator, loss, then by method
               trace:     trace, trace_stderr, samples (probes actually used: fewer than `samples`
                          when `target_rel_stderr` stopped it), products
               top-eigen: solver, lambda_1 .. lambda_k, converged, residual, iterations, products
               exact:     trace, trace_stderr (= 0), samples (= 0), lambda_1 .. lambda_k,
                          converged (True), residual (0), iterations (0), products
               (`residual`: `hessian.EigenEstimate.residual`, max ||H y - lambda y|| / max|lambda|;
               a row with converged False is not a measurement to draw conclusions from)
- interpolate: run, from_run, from_step, to_run, to_step, dataset, alpha, loss, perplexity
- landscape:   run, point, pre_step, final_step, after_step, dataset, a, b, loss, perplexity,
               e1_norm, e2_norm
- trajectory:  run, kind, ... (the columns of `analysis.trajectory`: pca / hv / path rows)
- probes:      run, step, layer, loss, perplexity, initial_loss, initial_perplexity, rel_perplexity

`dataset` is the split name ("val", "train") or the label given to a second dataset.

In a study each unit reads the base run (group 'stable') and the snapshot-keeping cooldown of each
shape (the first seed); rows get a leading `shape` column. On the command line (`wsdlab analyze
<name>`) it reads the run (or checkpoint) of its Target.
"""

import importlib as _importlib

# Register the units, in the order `wsdlab analyze --help` and a study list them (each module declares
# its unit with @register_unit).
UNIT_MODULES = ("sharpness", "interpolate", "landscape", "trajectory", "probes")
for _module in UNIT_MODULES:
    _importlib.import_module(f"{__name__}.{_module}")
