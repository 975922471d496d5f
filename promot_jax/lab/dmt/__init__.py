"""`promot-jax lab dmt`: the DMT paper's argument at toy scale (docs/dmt_lab_design.md).

- `config`: the settings (pools, fractions, k, the compute rule, seeds) and their checks;
- `data`: the three domains' fixed pools and their nested subsets as SeqIO tasks;
- `plan`: the experiments (F1 scaling, F2 mixing, F3 ratio, T1 strategies, K sweep);
- `pilot`: the registered pilot that chose the domains' difficulty and the step cap;
- `run`: training and scoring in worker processes, resumable;
- `report`: curves, tables beside the paper's numbers, and the verdicts.
"""
