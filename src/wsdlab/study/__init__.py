"""Studies: a YAML spec expanded into runs (a base and its cooldown branches), trained by an executor
(in-process, local worker processes, Slurm), then analysis tables and a report. See `wsdlab study run`.

spec.py: the StudySpec models and YAML loading (sections.py: the cooldown shorthand's sections, expanded by
cooldown.py; stages.py: stages and their typed points); plan.py: spec -> every run's RunSpec, pure and checked
(jobs.py: what a run does); identity.py: a run's folder hash; resolve.py: planned runs -> folders, and when a
branch may start; preflight.py: every input exists before training; executors.py / worker.py: who trains a run (resources.py: its ranks;
launch.py: torchrun for a run of several ranks; slurm_task.py: one Slurm task); runner.py: the
loop (skip complete, resume partial, dependency order); analyses.py: runs -> tables; progress.py: display.
"""

from wsdlab.study.plan import Plan, PlannedRun, expand_plan
from wsdlab.study.resolve import ResolvedRun, Resolver
from wsdlab.study.runner import StudyError, load_study_dir, plan_status, redo_report, run_study
from wsdlab.study.spec import BUILTIN_STUDIES, StudySpec, builtin_study_path, load_study, parse_study

__all__ = [
    "BUILTIN_STUDIES",
    "Plan",
    "PlannedRun",
    "ResolvedRun",
    "Resolver",
    "StudyError",
    "StudySpec",
    "builtin_study_path",
    "expand_plan",
    "load_study",
    "load_study_dir",
    "parse_study",
    "plan_status",
    "redo_report",
    "run_study",
]
