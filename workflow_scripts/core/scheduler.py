"""The batch scheduler's view of a job (SLURM's job id, array task and node), for every row's provenance and
for the placement checks (:mod:`workflow_scripts.fleet.placement`)."""

from __future__ import annotations

from typing import Mapping


def scheduler_facts(environ: Mapping[str, str]) -> dict[str, str]:
    """The batch scheduler's view of this process: {scheduler, job_id, node}; all empty when local.

    SLURM sets SLURM_JOB_ID in every job and job step; array tasks are named ``<array job>_<task>``
    as squeue and sacct show them. The node is SLURMD_NODENAME (the node this step runs on), else
    the job's node list (one name for the single-node jobs the executor submits).
    """
    job_id = environ.get("SLURM_JOB_ID", "").strip()
    if not job_id:
        return {"scheduler": "", "job_id": "", "node": ""}
    array_job, array_task = environ.get("SLURM_ARRAY_JOB_ID", "").strip(), environ.get("SLURM_ARRAY_TASK_ID", "").strip()
    if array_job and array_task:
        job_id = f"{array_job}_{array_task}"
    node = environ.get("SLURMD_NODENAME", "").strip() or environ.get("SLURM_JOB_NODELIST", "").strip()
    return {"scheduler": "slurm", "job_id": job_id, "node": node}


def scheduler_columns(facts: Mapping[str, str]) -> dict[str, str]:
    """The provenance columns of ``scheduler_facts``: scheduler, scheduler_job_id, scheduler_node."""
    return {"scheduler": facts.get("scheduler", ""), "scheduler_job_id": facts.get("job_id", ""),
            "scheduler_node": facts.get("node", "")}
