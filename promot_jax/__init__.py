"""promot_jax: ProMoT and DMT format-preserving fine-tuning of mT5 in JAX/Flax.

Map of the package (see README for the story of the two stages):
  network        mT5 / T5.1.1 encoder-decoder with an optional soft prompt.
  layers         its building blocks (RMSNorm, attention, gated MLP, relpos bias).
  prompt         the soft prompt module and its `(rng, shape)` initialisers.
  decoding       greedy, beam search and sampling over the kv cache.
  checkpoints    load_params (auto-detected formats) and orbax params I/O.
  param_count    parameter counts by module, without allocating.
  cli            the `promot-jax` command line.
"""

__version__ = "0.1.0"
