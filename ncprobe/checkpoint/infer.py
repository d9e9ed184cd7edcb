"""Matching a state_dict against architectures by key names and tensor shapes.

Each architecture's *signature* (key -> shape, built once per process on the meta device: no
memory, no weight init) is compared with the checkpoint's keys and shapes. The class count is
read from the classifier's weight. Families that register an inferrer (CIFAR ResNets, CIFAR
ResNet18..152, WRNs) only compare the members the inferrer proposes from block counts and widths,
so a ResNet-1202 is never built to check a ResNet-20.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..models.introspect import build_on_meta
from ..models.registry import family_inferrers, get_arch, list_archs
from ..models.spec import ArchSpec
from .state_dict import apply_aliases, shapes_of, strip_prefix_variants

Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class Signature:
    arch: str
    shapes: Shapes  # built with num_classes = base_classes
    base_classes: int
    class_keys: frozenset[str]  # keys whose first dimension is the number of classes


_SIGNATURES: dict[str, Signature] = {}


def signature(spec: ArchSpec) -> Signature:
    """Key -> shape of ``spec``'s model, built once on the meta device and cached."""
    sig = _SIGNATURES.get(spec.name)
    if sig is None:
        c = spec.default_num_classes
        model = build_on_meta(spec.builder, num_classes=c)
        shapes = shapes_of(model.state_dict())
        head = spec.head + "."
        keys = frozenset(k for k, s in shapes.items() if k.startswith(head) and len(s) >= 1 and s[0] == c)
        if spec.extra.get("accepts_num_classes") is False:
            keys = frozenset()
        sig = Signature(arch=spec.name, shapes=shapes, base_classes=c, class_keys=keys)
        _SIGNATURES[spec.name] = sig
    return sig


@dataclass
class Match:
    """How a checkpoint's keys/shapes compare with one architecture."""

    arch: str
    state_dict: dict = field(repr=False)  # the key variant compared (prefixes stripped, aliases applied)
    stripped: tuple[str, ...] = ()
    aliased: bool = False
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # key, file, model
    num_classes: int | None = None
    file_keys: int = 0  # tensors in the file, BatchNorm counters aside
    duplicates: tuple[str, ...] = ()  # keys dropped: the same tensor as another key's (a head saved twice)

    @property
    def exact(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def shares_keys(self) -> bool:
        """Whether any key name is common to the file and the architecture."""
        return self.file_keys - len(self.unexpected) > 0

    @property
    def cost(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.mismatched)

    def describe(self) -> str:
        """'2 missing keys (e.g. a), 0 unexpected keys, 1 shape mismatch (k: file (7, 64) vs model (10, 64))'."""
        parts = []
        n = len(self.missing)
        parts.append(f"{n} missing key{'s' if n != 1 else ''}" + (f" (e.g. '{self.missing[0]}')" if n else ""))
        n = len(self.unexpected)
        parts.append(f"{n} unexpected key{'s' if n != 1 else ''}" + (f" (e.g. '{self.unexpected[0]}')" if n else ""))
        if self.mismatched:
            k, got, want = self.mismatched[0]
            n = len(self.mismatched)
            parts.append(
                f"{n} shape mismatch{'es' if n != 1 else ''} (e.g. '{k}': file {tuple(got)} vs model {tuple(want)})"
            )
        return ", ".join(parts)


def compare(sig: Signature, sd: dict, num_classes: int | None = None) -> Match:
    """Compare ``sd`` with a signature; ``num_classes`` fixes the class count, else it is read
    from the classifier's weight."""
    got = shapes_of(sd)
    m = Match(arch=sig.arch, state_dict=sd, file_keys=len(got))
    m.missing = [k for k in sig.shapes if k not in got]
    m.unexpected = [k for k in got if k not in sig.shapes]
    classes = num_classes
    if classes is None:
        seen = {got[k][0] for k in sig.class_keys if k in got and len(got[k]) >= 1}
        classes = seen.pop() if len(seen) == 1 else None
    m.num_classes = classes if sig.class_keys else sig.base_classes
    for key, want in sig.shapes.items():
        if key not in got:
            continue
        if key in sig.class_keys:
            want = (classes if classes is not None else -1,) + want[1:]
        if got[key] != want:
            m.mismatched.append((key, got[key], want))
    return m


def _same_tensor(a, b) -> bool:
    """The same storage, offset and strides: one tensor saved under two names (not merely equal values,
    so that e.g. two zero biases never make a wrong architecture match)."""
    if a.is_meta or b.is_meta or a.numel() == 0 or a.shape != b.shape or a.dtype != b.dtype:
        return False
    return (a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
            and a.storage_offset() == b.storage_offset() and a.stride() == b.stride())


def drop_duplicates(m: Match) -> dict | None:
    """``m.state_dict`` without the unexpected keys that alias an expected key's tensor (a module
    registered under two names, e.g. ``fc`` and ``classifier``); None when there are none."""
    if not m.unexpected:
        return None
    sd, unexpected = m.state_dict, set(m.unexpected)
    by_shape: dict[tuple, list[str]] = {}
    for k, v in sd.items():
        if k not in unexpected:
            by_shape.setdefault(tuple(v.shape), []).append(k)
    dup = {u for u in m.unexpected if any(_same_tensor(sd[u], sd[e]) for e in by_shape.get(tuple(sd[u].shape), ()))}
    return {k: v for k, v in sd.items() if k not in dup} if dup else None


def key_variants(sd: dict, spec: ArchSpec | None = None) -> list[tuple[tuple[str, ...], bool, dict]]:
    """(stripped prefixes, aliased?, state_dict) to try, best guess first."""
    out = []
    aliases = (spec.extra.get("key_aliases") if spec is not None else None) or {}
    for stripped, variant in strip_prefix_variants(sd):
        out.append((stripped, False, variant))
        if aliases:
            renamed = apply_aliases(variant, aliases)
            if renamed is not None:
                out.append((stripped, True, renamed))
    return out


def best_match(spec: ArchSpec, sd: dict, num_classes: int | None = None) -> Match:
    """The first exact match over the key variants of ``sd``, else the closest one."""
    sig = signature(spec)
    best = None
    for stripped, aliased, variant in key_variants(sd, spec):
        m = compare(sig, variant, num_classes)
        deduped = drop_duplicates(m)
        if deduped is not None:
            kept = compare(sig, deduped, num_classes)
            kept.duplicates = tuple(k for k in variant if k not in deduped)
            m = kept
        m.stripped, m.aliased = stripped, aliased
        if m.exact:
            return m
        if best is None or m.cost < best.cost:
            best = m
    return best


@dataclass
class Inference:
    match: Match | None  # the exact match, or None
    closest: list[Match]  # near misses, best first (when no exact match)
    ambiguous: list[str]  # other architectures that also match exactly
    checked: list[str]
    seconds: float


def _candidates(sd: dict) -> list[str]:
    """Names to compare: the members each family's inferrer proposes, plus every registered
    architecture of a family without an inferrer."""
    inferrers = family_inferrers()
    names: list[str] = []
    for _, _, variant in key_variants(sd):
        shapes = shapes_of(variant)
        for fn in inferrers.values():
            for name in fn(shapes):
                if name not in names:
                    names.append(name)
    for name in list_archs(registration_order=True):
        if get_arch(name).family not in inferrers and name not in names:
            names.append(name)
    return names


def infer_arch(sd: dict, num_classes: int | None = None) -> Inference:
    """Find the registered architecture whose keys and shapes fit ``sd`` exactly."""
    t0 = time.perf_counter()
    names = _candidates(sd)
    checked, exact, near = [], [], []

    def check(name: str) -> None:
        try:
            spec = get_arch(name)
            m = best_match(spec, sd, num_classes)
        except Exception:  # a broken third-party builder must not break inference
            return
        checked.append(name)
        (exact if m.exact else near).append(m)

    for name in names:
        check(name)
    if not exact:
        # rank near misses against one representative of each inferrer family it did not propose
        families = {get_arch(n).family for n in checked}
        for name in list_archs(registration_order=True):  # the smallest member of each family
            fam = get_arch(name).family
            if fam in family_inferrers() and fam not in families:
                families.add(fam)
                check(name)
    near = [m for m in near if m.shares_keys]
    near.sort(key=lambda m: (m.cost, len(m.missing)))
    return Inference(
        match=exact[0] if exact else None,
        closest=near[:3] if not exact else [],
        ambiguous=[m.arch for m in exact[1:]],
        checked=checked,
        seconds=time.perf_counter() - t0,
    )


def clear_cache() -> None:
    _SIGNATURES.clear()


__all__ = ["Match", "Inference", "Signature", "best_match", "compare", "infer_arch", "signature", "key_variants"]
