"""`promot-jax tasks`: list the SeqIO registry and show rendered examples of a task or mixture.

promot-jax tasks list [REGEX]
promot-jax tasks show NAME [--split validation] [-n 3]
"""

from __future__ import annotations

import argparse
import itertools
import re

HELP = "list registered SeqIO tasks/mixtures and show rendered examples (text, token ids)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="names of registered tasks and mixtures (regex filter)")
    p.add_argument("regex", nargs="?", default="", help="re.search filter on the name")
    p = sub.add_parser("show", help="first examples of a task or mixture, rendered and tokenised")
    p.add_argument("name", help="task or mixture name (see `tasks list`)")
    p.add_argument("--split", default="validation", help="split to read (default validation)")
    p.add_argument("-n", "--num-examples", type=int, default=3, help="examples to print")
    p.add_argument("--no-ids", action="store_true", help="omit the token ids")


def _rows(pattern: str) -> list[tuple[str, str, str]]:
    import seqio

    import promot_tasks

    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"bad REGEX {pattern!r}: {e}") from None
    rows = []
    for name in sorted(seqio.MixtureRegistry.names()):
        if regex.search(name):
            mixture = seqio.MixtureRegistry.get(name)
            rows.append((name, "mixture", f"{len(mixture.tasks)} tasks"))
    for name in sorted(seqio.TaskRegistry.names()):
        if not regex.search(name):
            continue
        info = promot_tasks.CATALOGUE.get(name)
        if info is None:
            rows.append((name, "task", ""))
            continue
        parts = [info.family, f"{info.shots}-shot", f"metric={info.metric}"]
        if info.labels:
            parts.append("labels=" + "/".join(info.labels))
        if info.is_fine_tune_target:
            parts.append("fine-tune target")
        rows.append((name, "task", " ".join(parts)))
    return rows


def _list(args: argparse.Namespace) -> int:
    rows = _rows(args.regex)
    if not rows:
        print(f"no registered task or mixture matches {args.regex!r}")
        return 1
    width = max(len(r[0]) for r in rows)
    for name, kind, about in rows:
        print(f"{name:<{width}}  {kind:<7}  {about}")
    return 0


def _show(args: argparse.Namespace) -> int:
    import seqio

    from promot_tasks.mixtures import get_task_or_mixture

    provider = get_task_or_mixture(args.name)
    if args.num_examples < 1:
        raise ValueError(f"-n must be >= 1, got {args.num_examples}")
    splits = provider.splits if isinstance(provider, seqio.Task) else None
    if splits is not None and args.split not in splits:
        raise ValueError(f"{args.name!r} has no split {args.split!r}; it has {sorted(splits)}")
    kwargs = {"copy_pretokenized": True} if isinstance(provider, seqio.Mixture) else {}
    dataset = provider.get_dataset(None, split=args.split, shuffle=False, **kwargs)
    features = provider.output_features
    for i, ex in enumerate(itertools.islice(dataset.as_numpy_iterator(), args.num_examples)):
        print(f"=== {args.name} [{args.split}] example {i}")
        for key in features:
            if key not in ex:
                continue
            ids = ex[key]
            text = ex.get(f"{key}_pretokenized")
            if text is not None:
                print(f"{key} ({len(ids)} tokens): {text.decode('utf-8')}")
            else:
                print(f"{key}: {ids.tolist() if hasattr(ids, 'tolist') else ids}")
                continue
            if not args.no_ids:
                print(f"{key} ids: {ids.tolist()}")
        if "answers" in ex:
            print(f"answers: {[a.decode('utf-8') for a in ex['answers']]}")
    return 0


def run(args: argparse.Namespace) -> int:
    return _list(args) if args.action == "list" else _show(args)
