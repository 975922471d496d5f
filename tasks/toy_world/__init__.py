"""The toy world: a seeded, code-generated mirror of every task family (see toy_tasks.py)."""
