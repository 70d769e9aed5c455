"""Prefect flows of simstudy (orchestration only; the domain lives in `simstudy`)."""
