"""Autoregressive decoding over the kv cache: greedy, beam search, temperature sampling.

The search functions are pure and model-agnostic: they take a `step_fn(ids, cache)
-> (logits, cache)` that scores the next token for a flat batch `[N, 1]` of ids.
`generate` wires them to the Transformer: encode once, build the cache, search.

Outputs are `[B, max_length]` token ids (beam search: `[B, beams, max_length]`)
without the start token; after EOS every position is padding (0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

StepFn = Callable[[jax.Array, Any], tuple[jax.Array, Any]]
NEG_INF = -1.0e7
CACHE_INDEX = "cache_index"  # the scalar cache leaf that is shared, never per example


def _map_cache(fn, cache):
    """Applies `fn` to every per-example cache array (leaves named cache_index are kept)."""

    def visit(path, leaf):
        if path and getattr(path[-1], "key", None) == CACHE_INDEX:
            return leaf
        return fn(leaf)

    return jax.tree_util.tree_map_with_path(visit, cache)


def _pad_after_eos(tokens: jax.Array, eos_id: int) -> jax.Array:
    """Zeros every position after the first EOS (EOS itself is kept)."""
    is_eos = tokens == eos_id
    seen_before = jnp.cumsum(is_eos, axis=-1) - is_eos
    return jnp.where(seen_before > 0, 0, tokens)


def _sampling_loop(step_fn, cache, batch_size, max_length, eos_id, start_id, choose):
    """Shared loop of greedy and sampling: `choose(logits, step) -> ids`."""

    def cond(state):
        step, _, _, done, _ = state
        return (step < max_length) & ~jnp.all(done)

    def body(state):
        step, last, out, done, cache = state
        logits, cache = step_fn(last[:, None], cache)
        nxt = jnp.where(done, 0, choose(logits, step))
        out = out.at[:, step].set(nxt)
        return step + 1, nxt, out, done | (nxt == eos_id), cache

    init = (
        jnp.array(0, jnp.int32),
        jnp.full((batch_size,), start_id, jnp.int32),
        jnp.zeros((batch_size, max_length), jnp.int32),
        jnp.zeros((batch_size,), bool),
        cache,
    )
    _, _, out, _, _ = jax.lax.while_loop(cond, body, init)
    return out


def greedy(
    step_fn: StepFn,
    cache: Any,
    batch_size: int,
    max_length: int,
    eos_id: int = 1,
    start_id: int = 0,
) -> jax.Array:
    """Arg-max decoding: `[B, max_length]` ids."""
    return _sampling_loop(
        step_fn,
        cache,
        batch_size,
        max_length,
        eos_id,
        start_id,
        lambda logits, _: jnp.argmax(logits, axis=-1).astype(jnp.int32),
    )


def sample(
    step_fn: StepFn,
    cache: Any,
    rng: jax.Array,
    batch_size: int,
    max_length: int,
    temperature: float = 1.0,
    top_k: int = 0,
    eos_id: int = 1,
    start_id: int = 0,
) -> jax.Array:
    """Temperature sampling (optionally from the top-k logits): `[B, max_length]` ids."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (use greedy for 0), got {temperature}")

    def choose(logits, step):
        logits = logits.astype(jnp.float32) / temperature
        if top_k:
            kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
            logits = jnp.where(logits < kth, NEG_INF, logits)
        return jax.random.categorical(jax.random.fold_in(rng, step), logits).astype(jnp.int32)

    return _sampling_loop(step_fn, cache, batch_size, max_length, eos_id, start_id, choose)


def length_penalty(length: jax.Array, alpha: float) -> jax.Array:
    """GNMT's ((5 + length) / 6) ** alpha, the normaliser T5X's beam search uses."""
    return ((5.0 + length) / 6.0) ** alpha


def beam_search(
    step_fn: StepFn,
    cache: Any,
    batch_size: int,
    max_length: int,
    beam_size: int = 4,
    alpha: float = 0.6,
    eos_id: int = 1,
    start_id: int = 0,
    early_stopping: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Beam search with a length penalty.

    An ending (EOS) counts only when it ranks among the top `beam_size` candidates
    of its step, so width 1 is exactly greedy. With `early_stopping` an example
    stops once it holds `beam_size` finished hypotheses; without it, it stops when
    no alive beam can still beat the worst finished one.
    `cache` must already be expanded to `batch_size * beam_size` rows (example-major,
    see `expand_for_beams`). Returns ids `[B, beams, max_length]` and their scores
    `[B, beams]` (log-probability / length penalty), best first.
    """
    B, K, L = batch_size, beam_size, max_length

    def gather(x, idx):  # x [B, K, ...], idx [B, M] -> [B, M, ...]
        return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)

    def gather_cache(cache, idx):
        def fn(leaf):
            split = leaf.reshape((B, K) + leaf.shape[1:])
            return gather(split, idx).reshape(leaf.shape)

        return _map_cache(fn, cache)

    def settled(alive_logp, fin_scores, fin_flags):
        full = jnp.all(fin_flags, axis=1)
        if early_stopping:
            return full
        # Alive beams only lose log-probability; the best they can still reach
        # is their current score under the longest length's penalty.
        best_alive = alive_logp[:, 0] / length_penalty(jnp.float32(L), alpha)
        worst_fin = jnp.min(jnp.where(fin_flags, fin_scores, NEG_INF), axis=1)
        return full & (worst_fin >= best_alive)

    def cond(state):
        step, _, alive_logp, _, fin_scores, fin_flags, _ = state
        return (step < L) & ~jnp.all(settled(alive_logp, fin_scores, fin_flags))

    def body(state):
        step, seqs, alive_logp, fin_seqs, fin_scores, fin_flags, cache = state
        done = settled(alive_logp, fin_scores, fin_flags)
        last = seqs[:, :, step].reshape(B * K, 1)
        logits, cache = step_fn(last, cache)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(B, K, -1)
        vocab = logp.shape[-1]
        cand = (logp + alive_logp[:, :, None]).reshape(B, K * vocab)
        cand_logp, cand_idx = jax.lax.top_k(cand, 2 * K)
        cand_beam, cand_tok = cand_idx // vocab, (cand_idx % vocab).astype(jnp.int32)
        cand_seqs = gather(seqs, cand_beam).at[:, :, step + 1].set(cand_tok)
        cand_eos = cand_tok == eos_id
        ranks = jnp.arange(2 * K)[None, :]
        counts_as_ended = cand_eos & (ranks < K) & ~done[:, None]

        # Alive: the best K candidates that did not end.
        alive_cand = jnp.where(cand_eos, NEG_INF, cand_logp)
        alive_logp, keep = jax.lax.top_k(alive_cand, K)
        new_seqs = gather(cand_seqs, keep)
        cache = gather_cache(cache, gather(cand_beam[:, :, None], keep)[:, :, 0])

        # Finished: merge the candidates that ended now with those kept so far.
        ended = jnp.where(counts_as_ended, cand_logp / length_penalty(step + 1.0, alpha), NEG_INF)
        all_scores = jnp.concatenate([fin_scores, ended], axis=1)
        all_seqs = jnp.concatenate([fin_seqs, cand_seqs], axis=1)
        all_flags = jnp.concatenate([fin_flags, counts_as_ended], axis=1)
        fin_scores, pick = jax.lax.top_k(jnp.where(all_flags, all_scores, NEG_INF), K)
        fin_seqs = gather(all_seqs, pick)
        fin_flags = gather(all_flags[:, :, None], pick)[:, :, 0]
        return step + 1, new_seqs, alive_logp, fin_seqs, fin_scores, fin_flags, cache

    seqs = jnp.full((B, K, L + 1), 0, jnp.int32).at[:, :, 0].set(start_id)
    alive_logp = jnp.tile(jnp.array([0.0] + [NEG_INF] * (K - 1), jnp.float32), (B, 1))
    init = (
        jnp.array(0, jnp.int32),
        seqs,
        alive_logp,
        jnp.zeros((B, K, L + 1), jnp.int32),
        jnp.full((B, K), NEG_INF, jnp.float32),
        jnp.zeros((B, K), bool),
        cache,
    )
    step, seqs, alive_logp, fin_seqs, fin_scores, fin_flags, _ = jax.lax.while_loop(
        cond, body, init
    )
    # Where fewer than K beams ended, fill with the best unfinished ones.
    alive_scores = alive_logp / length_penalty(step.astype(jnp.float32), alpha)
    pool_scores = jnp.concatenate(
        [jnp.where(fin_flags, fin_scores, NEG_INF), alive_scores - 1e6], 1
    )
    pool_seqs = jnp.concatenate([fin_seqs, seqs], axis=1)
    top_scores, pick = jax.lax.top_k(pool_scores, K)
    out = gather(pool_seqs, pick)[:, :, 1:]
    top_scores = jnp.where(top_scores < -1e5, top_scores + 1e6, top_scores)
    return _pad_after_eos(out, eos_id), top_scores


def expand_for_beams(tree: Any, beam_size: int) -> Any:
    """Repeats every per-example array `[B, ...]` -> `[B * beams, ...]`, example-major."""
    return _map_cache(lambda x: jnp.repeat(x, beam_size, axis=0), tree)


# --------------------------------------------------------------------------- with the model


SEARCHES = ("greedy", "beam", "sample")


def generate(
    model,
    params: Any,
    encoder_input_tokens: jax.Array,
    max_length: int,
    *,
    search: str = "greedy",
    beam_size: int = 4,
    alpha: float = 0.6,
    temperature: float = 1.0,
    top_k: int = 0,
    rng: jax.Array | None = None,
    eos_id: int = 1,
) -> jax.Array:
    """Decodes from a `Transformer` (`model`) for a batch of encoder inputs `[B, Lin]`.

    Returns `[B, max_length]` ids; for beam search the best beam per example.
    """
    if search not in SEARCHES:
        raise ValueError(f"unknown search {search!r}; valid: {', '.join(SEARCHES)}")
    batch = encoder_input_tokens.shape[0]
    variables = {"params": params}
    encoded = model.apply(
        variables, encoder_input_tokens, enable_dropout=False, method=model.encode
    )
    copies = beam_size if search == "beam" else 1
    enc_tokens = jnp.repeat(encoder_input_tokens, copies, axis=0)
    encoded = jnp.repeat(encoded, copies, axis=0)
    shape = (batch * copies, max_length)
    dummy = jnp.ones(shape, jnp.int32)
    _, init_vars = model.apply(
        variables,
        enc_tokens,
        dummy,
        dummy,
        enable_dropout=False,
        decode=True,
        mutable=["cache"],
    )

    def step_fn(ids, cache):
        logits, new_vars = model.apply(
            {"params": params, "cache": cache},
            encoded,
            enc_tokens,
            ids,
            ids,
            enable_dropout=False,
            decode=True,
            max_decode_length=max_length,
            mutable=["cache"],
            method=model.decode,
        )
        return logits[:, -1, :], new_vars["cache"]

    cache = init_vars["cache"]
    if search == "greedy":
        return greedy(step_fn, cache, batch, max_length, eos_id)
    if search == "sample":
        if rng is None:
            raise ValueError("sampling needs an rng")
        return sample(step_fn, cache, rng, batch, max_length, temperature, top_k, eos_id)
    ids, _ = beam_search(step_fn, cache, batch, max_length, beam_size, alpha, eos_id)
    return ids[:, 0]
