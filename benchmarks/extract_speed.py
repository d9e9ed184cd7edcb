"""Extraction overhead: images/s of a bare `model(x)` loop vs ncprobe's all-layer extraction.

Same model, same batches, same device, one run. Baseline: a loop that preprocesses each batch and
calls model(x) under inference_mode, nothing else. Target: ratio (ncprobe / bare) >= 0.9 with the
default probe points, reported also for --layers all. TorchScript row: the model scripted and saved,
then `load_checkpoint(file)` + extraction with the default probes against a bare
`torch.jit.load(file)(x)` loop over the same batches; target ratio >= 0.67.

    python benchmarks/extract_speed.py [--arch cifar_resnet56] [--n 2048] [--batch-size 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ncprobe.checkpoint.loaded import LoadedCheckpoint
from ncprobe.data.batches import batch_loader
from ncprobe.data.source import DataSource
from ncprobe.data.transforms import Preprocess
from ncprobe.device import resolve_device
from ncprobe.features import extract_features
from ncprobe.models.registry import create_model, get_arch


def bare_loop(model, source, batch_size, dev, preprocess):
    with torch.inference_mode():
        for images, _ in batch_loader(source, batch_size):
            model(preprocess(images.to(dev)))
    if dev.type == "cuda":
        torch.cuda.synchronize()


def best_of_round_robin(fns, repeats):
    """Best time of each function over ``repeats`` rounds, the functions interleaved in every
    round so that all of them see the same machine load."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--arch", default="cifar_resnet56")
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()

    dev = resolve_device(args.device)
    spec = get_arch(args.arch)
    torch.manual_seed(0)
    model = create_model(args.arch, num_classes=10).eval().to(dev)
    c, h, w = spec.input_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.n, h, w, c), dtype=np.uint8)
    source = DataSource(
        name="random",
        spec="random",
        labels=np.zeros(args.n, dtype=np.int64),
        fingerprint="bench",
        images=images,
    )
    ckpt = LoadedCheckpoint(
        model=model,
        arch=args.arch,
        num_classes=10,
        head_name=spec.head,
        input_size=spec.input_size,
        mean=spec.mean,
        std=spec.std,
        sha256="bench",
        source="bench",
        name=args.arch,
        probe_layers=list(spec.probe_layers),
    )
    preprocess = Preprocess(spec.mean, spec.std, (h, w)).to(dev)
    bare_loop(model, source, args.batch_size, dev, preprocess)  # warm-up

    def ours(layers):
        return lambda: extract_features(
            ckpt,
            source,
            layers=layers,
            device=dev,
            batch_size=args.batch_size,
            use_cache=False,
            progress=False,
            amp=False,
        )

    t_bare, t_default, t_all = best_of_round_robin(
        [lambda: bare_loop(model, source, args.batch_size, dev, preprocess), ours(None), ours("all")],
        args.repeats,
    )
    n_all = len(
        extract_features(
            ckpt,
            source,
            layers="all",
            device=dev,
            batch_size=args.batch_size,
            use_cache=False,
            progress=False,
            amp=False,
        ).layers
    )
    ips = lambda t: args.n / t  # noqa: E731
    print(
        f"device {dev}, {args.arch}, {args.n} images, batch {args.batch_size}, best of {args.repeats}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"  bare model(x) loop          {ips(t_bare):9.1f} img/s   (baseline)")
    print(
        f"  ncprobe, default probes     {ips(t_default):9.1f} img/s   ratio {t_bare / t_default:.3f}"
        f"   ({len(spec.probe_layers) + 2} layers)"
    )
    print(
        f"  ncprobe, --layers all       {ips(t_all):9.1f} img/s   ratio {t_bare / t_all:.3f}   ({n_all} layers)"
    )
    ok = t_bare / t_default >= 0.9
    print(f"target: default-probe ratio >= 0.9 -> {'met' if ok else 'NOT met'}")

    # TorchScript: ncprobe reads the archive's tensors into its eager model (no scripted code runs)
    import tempfile
    import warnings

    from ncprobe.checkpoint import load_checkpoint

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = f"{tmp}/scripted.pt"
        torch.jit.save(torch.jit.script(model.cpu()), path)
        model.to(dev)
        scripted = torch.jit.load(path, map_location=dev).eval()
        loaded = load_checkpoint(path, mean=spec.mean, std=spec.std, input_size=spec.input_size)
        bare_loop(scripted, source, args.batch_size, dev, preprocess)  # warm-up (profiling runs)

        def ours_scripted():
            return extract_features(loaded, source, device=dev, batch_size=args.batch_size, use_cache=False,
                                    progress=False, amp=False)

        t_script, t_ours_script = best_of_round_robin(
            [lambda: bare_loop(scripted, source, args.batch_size, dev, preprocess), ours_scripted], args.repeats)
        fs = ours_scripted()
    print(f"  bare torch.jit.load loop    {ips(t_script):9.1f} img/s   (TorchScript baseline)")
    print(f"  ncprobe on the .pt archive  {ips(t_ours_script):9.1f} img/s   ratio {t_script / t_ours_script:.3f}"
          f"   ({len(fs.layers)} layers; loaded as {loaded.arch}, origin {loaded.origin['arch']})")
    ok = t_script / t_ours_script >= 0.67
    print(f"target: TorchScript ratio >= 0.67 -> {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
