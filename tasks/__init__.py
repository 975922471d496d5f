"""promot_tasks: the SeqIO registry of promot_jax (the repository's `tasks/` folder).

Importing it registers every task and mixture with SeqIO: the paper's TFDS
tasks (`promot_*`, mT5 vocabulary), the DMT sources, and the offline toy world
(`toy_*`, toy vocabulary). Use `import promot_tasks` in a t5x gin file, or
`--module_import=promot_tasks` with SeqIO's inspection script.
`CATALOGUE` (name -> TaskInfo) describes every task for evaluation code.
"""

from promot_tasks import dmt_tasks, mixtures, paper_tasks
from promot_tasks.catalogue import CATALOGUE, TaskInfo, task_info
from promot_tasks.toy_world import toy_tasks

paper_tasks.register_paper_tasks()
mixtures.multitask_mixture("promot_multitask_rte_en_fr", ["promot_rte", "promot_wmt14_en_fr"])
dmt_tasks.register_gsm8k()
dmt_tasks.register_dmt_from_env()
toy_tasks.register_toy_world()

__all__ = ["CATALOGUE", "TaskInfo", "task_info"]
