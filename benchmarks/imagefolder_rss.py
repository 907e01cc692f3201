"""Peak memory of one epoch on an image folder of N and of 10 N images, streamed and in memory.

Generates two folders of ``--n`` and ``10 * --n`` JPEG images (``--size`` pixels square, 4
classes, 10 % of them in ``val/``) and, for each folder and each ``data.cache`` mode
(``stream``, ``memory``), runs in a fresh process: ``load_dataset("imagefolder", ...)`` at
``3 x size x size`` with ``--val-samples`` validation images carved from ``train/`` (the same
for both folders, as ``data.val_samples`` is a setting, not a share: the validation pass's
batch, up to 512 images, does not grow with the folder either), then one epoch of a small CNN
over every other training image (batch 64, 2 threads, ``--workers`` DataLoader processes) and
the validation pass. Each process records:

- ``peak_rss_mib``: its own peak resident set (``getrusage``'s ``ru_maxrss``);
- ``peak_worker_rss_mib``: the largest peak of its finished children (the DataLoader workers);
- ``peak_total_pss_mib``: the peak, sampled every 0.1 s, of the proportional set size of the
  process and its live children together (shared pages counted once).

Streamed, the figures must not grow with the folder; in memory they grow by the decoded images
(``N x 3 x size x size`` bytes, held twice while the validation split is carved). Writes
``benchmarks/results/imagefolder_rss.json``.

Usage::

    .venv/bin/python benchmarks/imagefolder_rss.py            # N = 300 and 3,000
    .venv/bin/python benchmarks/imagefolder_rss.py --n 100    # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "imagefolder_rss.json"
CLASSES = 4


def generate(root: Path, n: int, size: int) -> None:
    """``n`` JPEG images in ``root/train/<class>`` (90 %) and ``root/val/<class>`` (10 %)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 200, size=(CLASSES, 8, 8, 3)).astype(np.uint8)
    for i in range(n):
        split = "val" if i % 10 == 0 else "train"
        k = i % CLASSES
        folder = root / split / f"class{k}"
        folder.mkdir(parents=True, exist_ok=True)
        pattern = Image.fromarray(base[k]).resize((size, size), Image.Resampling.BILINEAR)
        noise = rng.integers(0, 56, size=(size, size, 3), dtype=np.uint8)
        pixels = np.asarray(pattern, dtype=np.uint8) + noise
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)


def _pss_sampler(stop: threading.Event, peak: list[float]) -> None:
    import psutil

    me = psutil.Process()
    while not stop.is_set():
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        peak[0] = max(peak[0], total / 2**20)
        stop.wait(0.1)


def child(
    root: Path, mode: str, size: int, workers: int, val_samples: int, cache_dir: Path
) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    import torch
    from torch import nn

    from autoprune.evaluators import Fidelity, load_dataset, train_model

    torch.set_num_threads(2)
    stop, peak = threading.Event(), [0.0]
    sampler = threading.Thread(target=_pss_sampler, args=(stop, peak), daemon=True)
    sampler.start()
    started = time.perf_counter()
    data = load_dataset(
        "imagefolder",
        root=root,
        val_samples=val_samples,
        seed=0,
        input_shape=(3, size, size),
        num_workers=workers,
        cache_dir=cache_dir,
        cache=mode,
    )
    loaded = time.perf_counter() - started
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 7, stride=4, padding=3),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, data.num_classes),
    )
    result = train_model(
        model,
        data,
        fidelity=Fidelity(samples=None, epochs=1, batch_size=64),
        input_shape=(3, size, size),
        seed=0,
        device="cpu",
    )
    stop.set()
    sampler.join()
    kib = 1024  # ru_maxrss is in KiB on Linux
    return {
        "mode": mode,
        "streamed": data.streamed,
        "train_images": len(data.train),
        "val_images": len(data.val),
        "load_seconds": round(loaded, 2),
        "train_seconds": round(result.train_seconds, 2),
        "images_per_second": round(result.images_per_second, 1),
        "val_accuracy": result.accuracy,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib, 1),
        "peak_worker_rss_mib": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib, 1
        ),
        "peak_total_pss_mib": round(peak[0], 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="images in the smaller folder")
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--val-samples", type=int, default=128)
    parser.add_argument("--modes", nargs="+", default=["stream", "memory"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--child", nargs=3, metavar=("ROOT", "MODE", "CACHE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        root, mode, cache = args.child
        record = child(Path(root), mode, args.size, args.workers, args.val_samples, Path(cache))
        print(json.dumps(record))
        return
    records = []
    with tempfile.TemporaryDirectory(prefix="imagefolder-rss-") as tmp:
        for n in (args.n, args.factor * args.n):
            root = Path(tmp) / f"folder-{n}"
            started = time.perf_counter()
            generate(root, n, args.size)
            print(f"generated {n} images in {time.perf_counter() - started:.1f} s", flush=True)
            for mode in args.modes:
                command = [
                    sys.executable, __file__, "--size", str(args.size), "--workers",
                    str(args.workers), "--val-samples", str(args.val_samples),
                    "--child", str(root), mode, str(Path(tmp) / f"cache-{n}"),
                ]  # fmt: skip
                env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
                done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
                record = {"images": n, **json.loads(done.stdout.strip().splitlines()[-1])}
                print(json.dumps(record), flush=True)
                records.append(record)
    growth = {}
    for mode in args.modes:
        small, large = (r for r in records if r["mode"] == mode)
        growth[mode] = {
            key: round(large[key] - small[key], 1)
            for key in ("peak_rss_mib", "peak_worker_rss_mib", "peak_total_pss_mib")
        }
    out = {
        "benchmark": "imagefolder_rss",
        "input_shape": [3, args.size, args.size],
        "decoded_mib_per_1000_images": round(1000 * 3 * args.size**2 / 2**20, 1),
        "workers": args.workers,
        "val_samples": args.val_samples,
        "threads": 2,
        "fidelity": "all training images x 1 epoch, batch 64, then the validation pass",
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "runs": records,
        "growth_from_n_to_10n_mib": growth,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(growth, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
