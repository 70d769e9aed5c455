"""Prefect tasks of simstudy: thin wrappers over `simstudy` functions."""

from tasks.aggregate import aggregate_parameter_sets_task, summarize_study_task
from tasks.simulate import simulate_batch

__all__ = ["aggregate_parameter_sets_task", "simulate_batch", "summarize_study_task"]
