"""*Rethinking the Value of Network Pruning* (Liu et al., ICLR 2019) at small scale, in one run.

For a CIFAR-style ResNet (``--model``, default resnet20) on Fashion-MNIST at 1x28x28:

1. **The base** is trained from scratch at the comparison fidelity (``--samples`` images x
   ``--epochs``) once per seed (``autoprune.evaluators.TrainedBase``).
2. **Two pruned architectures at the same MACs** (``--macs-fraction`` of the base's):
   ``uniform`` keeps the same share of channels in every group (the widest uniform share whose
   MACs fit); ``searched`` is the best of ``--candidates`` candidates of the default space
   (widths and depth, full resolution, float; proposals repaired to the uniform one's MACs and
   kept only from ``--min-macs-share`` of them up) by validation accuracy at the *search*
   fidelity, seed 0: what a search would pick. The search fidelity is the default run's own
   evaluator and fidelity (``autoprune/configs/default.yaml``'s ``evaluator.name`` and ``training``)
   unless ``--search-evaluator``, ``--search-samples`` or ``--search-epochs`` say otherwise.
3. **Every architecture by every method**, for ``--seeds`` seeds (:data:`METHODS`): the
   paper's ``finetune`` (the trained base's L1-largest channels, fine-tuned), ``scratch-e``,
   ``scratch-b`` (the base's compute, at most 2x the epochs) and ``distill`` (from scratch, the
   base as teacher); fine-tuning from channels ranked by L2, BN scale, Taylor, APoZ or at
   random, and soft filter pruning; lottery tickets rewound to the base's initialisation or to
   its first epoch: test accuracy, mean and standard deviation over seeds.
4. **Searched vs uniform** at equal MACs, per method (the comparison AMC reports).
5. **Fidelity at equal MACs**: the Kendall tau between the search-fidelity validation accuracy
   of the candidates and their validation accuracy at the comparison fidelity (scratch-e,
   seed 0). The hard case: every candidate costs about the same, so the candidates' spread at
   the comparison fidelity is set beside its seed-to-seed spread (how much of the reference
   ranking is itself seed noise).
6. **Fidelity ladder across the space**: ``--ladder-candidates`` candidates of the same space
   spread evenly over its MACs (no budget), trained from scratch (seed 0) at each rung of
   ``--ladder`` (``[EVALUATOR:]SAMPLESxEPOCHS``, scratch-e unless named; the search fidelity is
   always one of them) and at the comparison fidelity by each evaluator the rungs use: per
   rung, the Kendall tau against each of those references and the training seconds per
   candidate. The case a Pareto search meets: candidates of every cost. (Scratch-B gives
   cheaper candidates more epochs, so its ranking differs from scratch-e's by design; which
   reference matters is the one the chosen models will be trained by.)

Every training result is cached in ``--work`` (one JSON line per training), under a folder named
by the code's key (``benchmarks/_common.py``), so an interrupted run continues where it stopped
and other code trains afresh. Test accuracies are stored per seed beside their mean. Writes
``benchmarks/results/rethinking.json`` and ``rethinking.png``. Whatever the tables show is the
finding.

Usage::

    python benchmarks/rethinking.py                       # the defaults below, about an hour
    python benchmarks/rethinking.py --samples 2000 --epochs 1 --search-samples 1000 \\
        --candidates 6 --seeds 1 --out /tmp/rethinking.json   # a smoke run, minutes
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import code_versions, keyed
from scipy.stats import kendalltau

from autoprune.config import EvaluatorConfig, TrainingConfig, load_config, parse_budget
from autoprune.evaluators import (
    DatasetSplits,
    Fidelity,
    TrainedBase,
    create_evaluator,
    evaluate_accuracy,
    load_dataset,
    macs_of,
)
from autoprune.hwprofiles import load_profile
from autoprune.search import build_space
from autoprune.search._repair import repair
from autoprune.spaces import Candidate, SearchSpace

RESULTS = Path(__file__).parent / "results" / "rethinking.json"
WORK = Path("/var/tmp/autoprune-rethinking")
#: Every method compared: a label -> (evaluator, its settings). ``finetune`` is Li et al.'s L1
#: norm; the other importance criteria, soft filter pruning and lottery tickets (rewound to the
#: initialisation, or to epoch 1 when the comparison trains for 2 epochs or more) beside it.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "finetune": ("finetune", {}),
    "finetune-l2": ("finetune", {"importance": "l2"}),
    "finetune-bn_scale": ("finetune", {"importance": "bn_scale"}),
    "finetune-taylor": ("finetune", {"importance": "taylor"}),
    "finetune-apoz": ("finetune", {"importance": "apoz"}),
    "finetune-random": ("finetune", {"importance": "random"}),
    "finetune-soft": ("finetune", {"importance": "l2", "soft": True}),
    "lottery": ("lottery", {}),
    "lottery-rewind1": ("lottery", {"rewind_epoch": 1}),
    "scratch-e": ("scratch-e", {}),
    "scratch-b": ("scratch-b", {}),
    "distill": ("distill", {}),
}
ARCHITECTURES = ("uniform", "searched")
SHAPE = (1, 28, 28)


def default_space(model: str) -> SearchSpace:
    """The embedded default's space on its target (jetson), at full resolution and in float."""
    overrides = [
        f"model.name={model}",
        "space.resolution_scales=[1.0]",
        "space.weight_bits=[32]",
        "space.activation_bits=[32]",
    ]
    config = load_config(overrides=overrides)
    return build_space(config, load_profile(config.target))


def uniform(space: SearchSpace, macs_limit: float) -> Candidate:
    """Every block kept, every channel group at the widest common share within ``macs_limit``."""
    widths = [d for d in space.decisions if d.name.startswith("width/")]
    for index in reversed(range(len(widths[0].choices))):
        params = {d.name: max(d.choices) for d in space.decisions}
        for decision in widths:
            params[decision.name] = sorted(decision.choices)[index]
        candidate = space.candidate(params)
        if macs_of(candidate) <= macs_limit:
            return candidate
    raise SystemExit(f"no uniform width fits {macs_limit:.0f} MACs; raise --macs-fraction")


def proposals(space: SearchSpace, macs: int, count: int, min_share: float) -> list[Candidate]:
    """``count`` distinct random candidates repaired to ``macs``, each at least ``min_share``
    of it (a seeded draw: the same list every run)."""
    rng = random.Random(0)
    budget = parse_budget(f"{macs / 1e6:.6f}mflops")
    found: dict[str, Candidate] = {}
    for _ in range(200 * count):
        params = {d.name: rng.choice(d.choices) for d in space.decisions}
        fitted, _ = repair(space, params, [budget])
        candidate = space.candidate(fitted)
        if min_share * macs <= macs_of(candidate) <= macs:
            found.setdefault(candidate.hash, candidate)
        if len(found) == count:
            return list(found.values())
    raise SystemExit(f"found only {len(found)} of {count} candidates; lower --min-macs-share")


def spread(space: SearchSpace, count: int, draws: int = 2000) -> list[Candidate]:
    """``count`` distinct candidates whose MACs are spread evenly between the smallest and
    largest of ``draws`` seeded random proposals: one nearest each of ``count`` evenly spaced
    MACs targets."""
    rng = random.Random(1)
    pool: dict[str, Candidate] = {}
    for _ in range(draws):
        candidate = space.candidate({d.name: rng.choice(d.choices) for d in space.decisions})
        pool.setdefault(candidate.hash, candidate)
    macs = {h: macs_of(c) for h, c in pool.items()}  # counted once: ms each on the meta device
    low, high = min(macs.values()), max(macs.values())
    chosen: list[Candidate] = []
    for k in range(count):
        target = low + (high - low) * k / max(count - 1, 1)
        rest = [h for h in pool if pool[h] not in chosen]
        chosen.append(pool[min(rest, key=lambda h: abs(macs[h] - target))])
    return chosen


def parse_rung(text: str) -> tuple[str, TrainingConfig]:
    """``"20000x2"`` -> scratch-e at 20000 samples x 2 epochs; ``"scratch-b:20000x1"`` ->
    scratch-b at 20000 x 1."""
    evaluator, _, fidelity = text.rpartition(":")
    samples, _, epochs = fidelity.partition("x")
    return evaluator or "scratch-e", TrainingConfig(samples=int(samples), epochs=int(epochs))


def rung_label(evaluator: str, samples: int, epochs: int) -> str:
    """The inverse of :func:`parse_rung`: scratch-e's rungs carry no evaluator name."""
    fidelity = f"{samples}x{epochs}"
    return fidelity if evaluator == "scratch-e" else f"{evaluator}:{fidelity}"


def describe(evaluator: str, samples: int, epochs: int) -> str:
    """``'scratch-b, 20000 samples x 1 epoch @ 28x28'``: a fidelity for the results."""
    return f"{evaluator}, {Fidelity(samples=samples, epochs=epochs).describe(SHAPE[1:])}"


class Trainings:
    """Every training of the run, cached as JSON lines keyed by what determines the result."""

    def __init__(self, work: Path, data: DatasetSplits) -> None:
        self.path = work / "trainings.jsonl"
        self.data = data
        self.done: dict[str, dict[str, Any]] = {}
        self.used: dict[str, dict[str, Any]] = {}  # the rows this invocation's tables rest on
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                row = json.loads(line)
                self.done[row["key"]] = row

    def run(
        self,
        key: str,
        train: Callable[[], tuple[torch.nn.Module, Any]],
        *,
        resolution_scale: float = 1.0,
    ) -> dict[str, Any]:
        if key in self.done:
            self.used[key] = self.done[key]
            return self.done[key]
        started = time.perf_counter()
        model, result = train()
        test = evaluate_accuracy(
            model, self.data, split="test", input_shape=SHAPE, resolution_scale=resolution_scale
        )
        row = {
            "key": key,
            "val_accuracy": result.accuracy,
            "test_accuracy": test,
            "epochs": result.epochs,
            "samples": result.samples,
            "seconds": time.perf_counter() - started,
        }
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        self.done[key] = self.used[key] = row
        print(
            f"{key:60s} val {100 * row['val_accuracy']:6.2f} %  test "
            f"{100 * test:6.2f} %  {row['seconds']:6.1f} s",
            flush=True,
        )
        return row


def _mean_std(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation and the values themselves, in seed order."""
    return {
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
        "per_seed": list(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--samples", type=int, default=20000, help="comparison fidelity")
    parser.add_argument("--epochs", type=int, default=3, help="comparison fidelity")
    parser.add_argument(
        "--search-evaluator", help="search fidelity's evaluator (default: the default run's)"
    )
    parser.add_argument("--search-samples", type=int, help="search fidelity (the default run's)")
    parser.add_argument("--search-epochs", type=int, help="search fidelity (the default run's)")
    parser.add_argument("--macs-fraction", type=float, default=0.5)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--min-macs-share", type=float, default=0.9)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ladder-candidates", type=int, default=20)
    parser.add_argument(
        "--ladder",
        nargs="*",
        default=["5000x1", "10000x1", "20000x1", "20000x2", "scratch-b:20000x1"],
        help="fidelity rungs [EVALUATOR:]SAMPLESxEPOCHS (scratch-e unless named), ranked "
        "against the comparison fidelity; the search fidelity is added if missing",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    default_run = load_config()
    args.search_evaluator = args.search_evaluator or default_run.evaluator.name
    args.search_samples = args.search_samples or default_run.training.samples
    args.search_epochs = args.search_epochs or default_run.training.epochs
    search_rung = rung_label(args.search_evaluator, args.search_samples, args.search_epochs)
    if search_rung not in args.ladder:
        args.ladder.append(search_rung)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    data = load_dataset("fashion-mnist", val_samples=5000, seed=0)
    space = default_space(args.model)
    training = TrainingConfig(samples=args.samples, epochs=args.epochs)
    search_training = TrainingConfig(samples=args.search_samples, epochs=args.search_epochs)
    tag = f"{args.model}-{args.samples}x{args.epochs}"
    work = keyed(args.work) / tag  # trainings by other code are never read back
    work.mkdir(parents=True, exist_ok=True)
    trainings = Trainings(work, data)

    base_macs = macs_of(space.largest())
    flat = uniform(space, args.macs_fraction * base_macs)
    candidates = proposals(space, macs_of(flat), args.candidates, args.min_macs_share)
    print(
        f"base {base_macs / 1e6:.2f} MMACs; uniform {macs_of(flat) / 1e6:.2f} MMACs; "
        f"{len(candidates)} candidates {min(map(macs_of, candidates)) / 1e6:.2f}-"
        f"{max(map(macs_of, candidates)) / 1e6:.2f} MMACs",
        flush=True,
    )

    methods = [m for m in METHODS if m != "lottery-rewind1" or args.epochs >= 2]

    def bases(seed: int) -> TrainedBase:
        return TrainedBase(
            space.largest(),
            data=lambda: data,
            training=training,
            seed=seed,
            folder=work / f"base-seed{seed}",
            snapshots=(1,) if args.epochs >= 2 else (),  # lottery-rewind1's start
        )

    def method(name: str, seed: int, fidelity: TrainingConfig = training):
        """The evaluator of a method label (or of an evaluator name, for the ladder)."""
        evaluator, settings = METHODS.get(name, (name, {}))
        return create_evaluator(
            EvaluatorConfig(name=evaluator, settings={evaluator: settings}),
            data=lambda: data,
            training=fidelity,
            base=bases(seed),
        )

    # Search: low fidelity picks the searched architecture; the comparison fidelity ranks again.
    search_rows, high_rows = [], []
    for candidate in candidates:
        evaluator = method(args.search_evaluator, 0, search_training)
        search_rows.append(
            trainings.run(
                f"search {candidate.hash} {search_rung}",
                lambda c=candidate, e=evaluator: e.evaluate(c, seed=0),
            )
        )
    searched = candidates[max(range(len(candidates)), key=lambda i: search_rows[i]["val_accuracy"])]
    for candidate in candidates:
        high_rows.append(
            trainings.run(
                f"scratch-e {candidate.hash} seed 0",
                lambda c=candidate: method("scratch-e", 0).evaluate(c, seed=0),
            )
        )
    low = [r["val_accuracy"] for r in search_rows]
    high = [r["val_accuracy"] for r in high_rows]
    tau = kendalltau(low, high)

    # The comparison: base, and each architecture by each method, per seed.
    table: dict[str, list[dict[str, Any]]] = {"base": []}  # training rows per seed
    for seed in range(args.seeds):
        base = bases(seed)
        table["base"].append(trainings.run(f"base seed {seed}", base.get))
        for arch_name, arch in (("uniform", flat), ("searched", searched)):
            for name in methods:
                row = trainings.run(
                    f"{name} {arch.hash} seed {seed}",
                    lambda a=arch, n=name, s=seed: method(n, s).evaluate(a, seed=s),
                )
                table.setdefault(f"{arch_name} {name}", []).append(row)

    # The ladder: candidates of every cost, each rung ranked against every rung evaluator's
    # reference at the comparison fidelity (scratch-e's is always one).
    ladder_candidates = spread(space, args.ladder_candidates)
    comparison_rung = rung_label("scratch-e", args.samples, args.epochs)

    def ladder_rows(rung: str) -> list[dict[str, Any]]:
        evaluator_name, fidelity = parse_rung(rung)
        return [
            trainings.run(
                # the comparison fidelity's rows are the equal-MACs step's, under its keys
                f"scratch-e {c.hash} seed 0"
                if rung == comparison_rung
                else f"search {c.hash} {rung}",
                lambda c=c, e=evaluator_name, f=fidelity: method(e, 0, f).evaluate(c, seed=0),
            )
            for c in ladder_candidates
        ]

    evaluators = dict.fromkeys(parse_rung(rung)[0] for rung in args.ladder)
    references = {e: rung_label(e, args.samples, args.epochs) for e in ["scratch-e", *evaluators]}
    rows_of = {rung: ladder_rows(rung) for rung in [*args.ladder, *references.values()]}
    accuracy_of = {rung: [r["val_accuracy"] for r in rows] for rung, rows in rows_of.items()}
    ladder: dict[str, Any] = {}
    for rung, rows in rows_of.items():
        taus = {
            reference: kendalltau(accuracy_of[rung], accuracy_of[reference])
            for reference in references.values()
        }
        ladder[rung] = {
            "tau": float(taus[comparison_rung].statistic),
            "p_value": float(taus[comparison_rung].pvalue),
            "tau_against": {
                reference: {"tau": float(t.statistic), "p_value": float(t.pvalue)}
                for reference, t in taus.items()
            },
            "seconds_per_candidate": statistics.mean(r["seconds"] for r in rows),
            "epochs": [r["epochs"] for r in rows],
            "val_accuracy": accuracy_of[rung],
        }

    summary = {key: _mean_std([r["test_accuracy"] for r in rows]) for key, rows in table.items()}
    # How much of the equal-MACs reference ranking is seed noise: the candidates' spread in
    # validation accuracy at the comparison fidelity beside one architecture's spread over seeds.
    seed_std = statistics.mean(
        _mean_std([r["val_accuracy"] for r in table[f"{arch} scratch-e"]])["std"]
        for arch in ARCHITECTURES
    )
    gaps = {
        name: summary[f"searched {name}"]["mean"] - summary[f"uniform {name}"]["mean"]
        for name in methods
    }
    payload = {
        "benchmark": "rethinking",
        "code": code_versions(),
        "model": args.model,
        "dataset": "fashion-mnist (val 5000 carved from train; test = the published test set)",
        "comparison_fidelity": describe("scratch-e", args.samples, args.epochs),
        "search_fidelity": describe(args.search_evaluator, args.search_samples, args.search_epochs),
        "seeds": args.seeds,
        "methods": {m: {"evaluator": METHODS[m][0], "settings": METHODS[m][1]} for m in methods},
        "base_macs": base_macs,
        "uniform": {"hash": flat.hash, "macs": macs_of(flat), "candidate": flat.to_dict()},
        "searched": {
            "hash": searched.hash,
            "macs": macs_of(searched),
            "candidate": searched.to_dict(),
        },
        "test_accuracy": summary,
        "searched_minus_uniform": gaps,
        "fidelity_kendall_tau": {
            "tau": float(tau.statistic),
            "p_value": float(tau.pvalue),
            "candidates": len(candidates),
            "search_val_accuracy": low,
            "comparison_val_accuracy": high,
            "macs": [macs_of(c) for c in candidates],
            "comparison_std_across_candidates": statistics.stdev(high),
            "comparison_std_across_seeds": seed_std,
        },
        "fidelity_ladder": {
            "candidates": len(ladder_candidates),
            "macs": [macs_of(c) for c in ladder_candidates],
            "references": list(references.values()),
            "rungs": ladder,
        },
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "trainings": len(trainings.used),
        "training_seconds": sum(row["seconds"] for row in trainings.used.values()),
        "invocation_seconds": time.perf_counter() - started,  # less where trainings were cached
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    _plot(args.out.with_suffix(".png"), payload)

    print(
        f"\ntest accuracy (%), mean +- std over {args.seeds} seeds, "
        f"{payload['comparison_fidelity']}"
    )
    base = summary["base"]
    print(f"  base (unpruned)        {100 * base['mean']:6.2f} +- {100 * base['std']:.2f}")
    for arch_name, arch in (("uniform", flat), ("searched", searched)):
        print(f"  {arch_name} ({macs_of(arch) / 1e6:.2f} MMACs)")
        for name in methods:
            cell = summary[f"{arch_name} {name}"]
            print(f"    {name:18s} {100 * cell['mean']:6.2f} +- {100 * cell['std']:.2f}")
    print(
        "searched - uniform (points): " + ", ".join(f"{n} {100 * g:+.2f}" for n, g in gaps.items())
    )
    print(
        f"Kendall tau, search fidelity vs comparison fidelity, {len(candidates)} candidates: "
        f"{tau.statistic:.3f} (p {tau.pvalue:.3g}); at the comparison fidelity the candidates "
        f"spread {100 * statistics.stdev(high):.2f} points (std), one architecture over seeds "
        f"{100 * seed_std:.2f}"
    )
    macs = payload["fidelity_ladder"]["macs"]
    print(
        f"fidelity ladder, {len(ladder_candidates)} candidates {min(macs) / 1e6:.2f}-"
        f"{max(macs) / 1e6:.2f} MMACs, Kendall tau against each evaluator at the comparison "
        f"fidelity:"
    )
    for rung, row in ladder.items():
        against = "  ".join(
            f"{reference} {t['tau']:.3f} (p {t['p_value']:.2g})"
            for reference, t in row["tau_against"].items()
        )
        print(f"  {rung:>17s}  {row['seconds_per_candidate']:6.1f} s per candidate  tau: {against}")


def _plot(path: Path, payload: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, scatter, rungs) = plt.subplots(1, 3, figsize=(16, 4), constrained_layout=True)
    summary = payload["test_accuracy"]
    methods = list(payload["methods"])
    for offset, arch in zip((-0.2, 0.2), ARCHITECTURES, strict=True):
        means = [100 * summary[f"{arch} {m}"]["mean"] for m in methods]
        stds = [100 * summary[f"{arch} {m}"]["std"] for m in methods]
        bars.bar([i + offset for i in range(len(methods))], means, 0.4, yerr=stds, label=arch)
    bars.axhline(100 * summary["base"]["mean"], color="0.3", ls="--", lw=1, label="base")
    bars.set_xticks(range(len(methods)), methods, rotation=60, ha="right", fontsize=7)
    low = min(100 * v["mean"] for v in summary.values())
    high = max(100 * (v["mean"] + v["std"]) for v in summary.values())
    bars.set_ylim(low - 3, high + 1)
    bars.set_ylabel("test accuracy (%)")
    amount = payload["comparison_fidelity"].removeprefix("scratch-e, ")
    bars.set_title(f"{payload['model']}, every method at {amount}", fontsize=9)
    bars.legend(fontsize=8)
    tau = payload["fidelity_kendall_tau"]
    scatter.scatter(
        [100 * a for a in tau["search_val_accuracy"]],
        [100 * a for a in tau["comparison_val_accuracy"]],
    )
    scatter.set_xlabel(f"val accuracy (%), search fidelity {payload['search_fidelity']}")
    scatter.set_ylabel("val accuracy (%), comparison fidelity")
    scatter.set_title(
        f"equal MACs: Kendall tau {tau['tau']:.3f} over {tau['candidates']} candidates",
        fontsize=9,
    )
    ladder = payload["fidelity_ladder"]
    for marker, reference in zip("os^v", ladder["references"], strict=False):
        rows = ladder["rungs"].values()
        seconds = [row["seconds_per_candidate"] for row in rows]
        taus = [row["tau_against"][reference]["tau"] for row in rows]
        rungs.scatter(seconds, taus, marker=marker, label=f"against {reference}")
    for rung, row in ladder["rungs"].items():
        rungs.annotate(rung, (row["seconds_per_candidate"], row["tau"]), fontsize=7)
    rungs.legend(fontsize=8, loc="lower right")
    rungs.set_xlabel("training seconds per candidate")
    rungs.set_ylabel("Kendall tau")
    lowest = min(t["tau"] for row in ladder["rungs"].values() for t in row["tau_against"].values())
    rungs.set_ylim(min(0.0, lowest) - 0.05, 1.05)
    rungs.set_title(f"fidelity ladder, {ladder['candidates']} candidates of every cost", fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
