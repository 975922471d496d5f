"""Glue between promot_jax and T5X: the only package in promot_jax that imports t5x.

The gin files in `gin/t5x/` bind these small callables so that T5X's
`EncoderDecoderModel`, MultiOptimizer, Adafactor and PjitPartitioner apply the
same rules as our own runner:

- `freezing`: which parameters train (a MultiOptimizer traversal derived from
  `promot_jax.methods`), Adafactor factor rules that know the prompt's axes.
- `axis_rules`: T5X's logical-axis partition rules with the prompt replicated.
- `restore`: the restore recipe (skip the prompt, refill only the prompt).

Importing this package needs t5x (installed from its public source); nothing
outside it may import it.
"""
