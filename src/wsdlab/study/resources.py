"""What one run of a stage is given to train on: its ranks (one GPU each on a CUDA machine, a gloo CPU
process each otherwise) and the nodes they are spread over.

A run with more than one rank trains as one distributed job (DDP, or FSDP2 with `train.fsdp`): the
local executors start it under torchrun, the Slurm executor as one job of `nodes` x `ranks_per_node`
tasks. The ranks never change a run's result or identity: DDP over N ranks trains the same micro
batches as one process, so a run folder may be finished with another `gpus_per_run` than it started.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from wsdlab.common.config import StrictModel


class Resources(StrictModel):
    """Ranks per run: `gpus_per_run` processes in all (the world size), spread evenly over `nodes` nodes."""

    gpus_per_run: int = Field(1, ge=1, description="Ranks of one run: one GPU each on a CUDA machine, "
                                                   "a gloo CPU process each otherwise.")
    nodes: int = Field(1, ge=1, description="Nodes the ranks are spread over (Slurm only; local executors use 1).")

    model_config = {**StrictModel.model_config, "frozen": True}  # hashable, as the QueuedRun that carries it

    @model_validator(mode="after")
    def _even_split(self) -> "Resources":
        if self.gpus_per_run % self.nodes:
            raise ValueError(f"gpus_per_run ({self.gpus_per_run}) must be a multiple of nodes ({self.nodes}): "
                             "every node runs the same number of ranks")
        return self

    @property
    def world_size(self) -> int:
        return self.gpus_per_run

    @property
    def ranks_per_node(self) -> int:
        return self.gpus_per_run // self.nodes

    @property
    def distributed(self) -> bool:
        return self.gpus_per_run > 1
