"""Names are data: one table from every framework's name for a loss to its crossent function.

The table exists because the same loss goes by many names ("Softmax Loss", "Categorical
Cross-Entropy", Caffe's ``SoftmaxWithLoss``, PyTorch's ``CrossEntropyLoss``, TensorFlow's
``softmax_cross_entropy_with_logits``...) while one name can mean different losses in different
frameworks. This module holds that map as data, with the semantic differences that matter when
moving code between frameworks (argument order, probabilities vs logits, what "mean" divides
by, default hyper-parameters). ``crossent explain NAME`` prints it.

Lookup rules of :func:`get` (all deterministic):

1. Case, spaces and punctuation (``-``, ``_``, ``.``, parentheses...) are ignored:
   ``"Softmax-With-Loss"``, ``"softmaxwithloss"`` and ``"SoftmaxWithLoss()"`` are one name.
2. A known module prefix names the framework and is stripped: ``"torch.nn.CrossEntropyLoss"``,
   ``"F.cross_entropy"``, ``"tf.nn.sigmoid_cross_entropy_with_logits"``,
   ``"keras.losses.CategoricalCrossentropy"``, ``"optax.softmax_cross_entropy"``. The rest is
   looked up among *that framework's* names first, so ``"F.cross_entropy"`` is PyTorch's
   softmax cross-entropy; if the framework has no such name, the bare-name rules apply to the
   rest (``"torch.nn.SoftmaxWithLoss"`` still finds Caffe's name).
3. A bare name: crossent's own function names win over every alias. So ``"cross_entropy"`` is
   crossent's ``cross_entropy(p, q)`` (``H(p, q)`` on probabilities), not PyTorch's
   ``F.cross_entropy`` (which is :func:`crossent.softmax_cross_entropy`); write the prefix to
   get the framework's meaning. Two aliases are shadowed this way (:data:`SHADOWED_ALIASES`):
   ``cross_entropy`` (PyTorch, PaddlePaddle) and ``sparsemax_loss`` (Optax's binary one,
   crossent's ``binary_sparsemax_loss``; crossent's ``sparsemax_loss`` is multi-class).
4. Otherwise the alias table, in which no name may map to two different functions (checked
   when this module is imported).
5. An unknown dotted name is retried with its last component (``mylib.CrossEntropyLoss``).

An unknown name raises :class:`UnknownLossName` (a ``KeyError``) whose message suggests the
closest known names.

The loss functions are referenced lazily by ``"crossent.<module>:<function>"`` strings and
imported on first access of :attr:`LossSpec.fn`, so importing this module imports no loss
module (``crossent explain`` stays cheap, and there are no import cycles).
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

__all__ = [
    "FAMILIES",
    "FRAMEWORKS",
    "LossSpec",
    "Resolution",
    "SHADOWED_ALIASES",
    "UnknownLossName",
    "aliases_of",
    "catalog",
    "families",
    "frameworks",
    "get",
    "known_names",
    "normalize",
    "resolve",
]

#: Frameworks in display order. "common" holds paper / textbook / colloquial names.
from . import LOSS_MODULES as _LOSS_MODULES
from ._loss_table import ENTRIES, FAMILIES, FRAMEWORKS, PREFIXES, TORCH_ENTRY_POINTS


class UnknownLossName(KeyError):
    """A name that is in no framework's table; the message suggests the closest names."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class LossSpec:
    """Everything crossent knows about one loss: its function, math, and names elsewhere.

    Attributes:
        name: the crossent function name, e.g. ``"softmax_cross_entropy"``.
        target: where the function lives, ``"crossent.<module>:<function>"``; imported on
            first access of :attr:`fn`.
        family: ``"softmax"``, ``"sigmoid"``, ``"focal"``, ``"information"``,
            ``"distillation"``, ``"extended"``, ``"margin"``, ``"ranking"`` or
            ``"counter-example"``.
        inputs: what the function takes, e.g. ``"logits + integer labels or probabilities"``.
        formula: the loss in plain text / unicode.
        gradient: its gradient w.r.t. the first (prediction) argument, in text.
        aliases: framework -> the names that framework uses for this loss.
        notes: semantic differences between the frameworks' versions and crossent's.
        references: papers and documentation.
        task: ``"multiclass"`` (logits + integer labels), ``"multilabel"`` (one independent
            score per class) or None (distributions, embeddings, pairs...).
        sample: the kind of example inputs it takes (a key of ``crossent._samples.MAKERS``).
        differentiable: False for a piecewise-constant loss (no gradient to train with).
        torch_entry_points: dotted names of its PyTorch functions and Modules besides the
            generic function (fused, chunked, distributed, drop-in Modules).
    """

    name: str
    target: str
    family: str
    inputs: str
    formula: str
    gradient: str
    aliases: Mapping[str, tuple[str, ...]] = field(hash=False)
    notes: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    task: str | None = None
    sample: str = ""
    differentiable: bool = True
    torch_entry_points: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        """The module that defines the function, e.g. ``"crossent.classification"``."""
        return self.target.partition(":")[0]

    @property
    def fn(self) -> Callable[..., Any]:
        """The crossent function (its module is imported on first access).

        Raises:
            ImportError: the module defining it is not available.
        """
        return _load(self.target)

    @property
    def available(self) -> bool:
        """Whether :attr:`fn` can be imported in this installation."""
        try:
            _load(self.target)
        except ImportError:
            return False
        return True

    @property
    def grad(self) -> Callable[..., Any] | None:
        """``crossent.grad(fn)``, the closed-form gradient, or None when autodiff-only."""
        from .gradients import grad, has_closed_form

        fn = self.fn  # importing the module registers its closed forms
        return grad(fn) if has_closed_form(fn) else None

    def names(self) -> tuple[str, ...]:
        """Every name of this loss: its crossent name, then each framework's, in order."""
        out = [self.name]
        for names in self.aliases.values():
            out.extend(n for n in names if n not in out)
        return tuple(out)


class Resolution(NamedTuple):
    """How :func:`resolve` read a name: the spec, the spelling matched, and whose it is."""

    spec: LossSpec
    matched: str
    frameworks: tuple[str, ...]


# --- lazy import ----------------------------------------------------------------------------


def _load(target: str) -> Callable[..., Any]:
    module, _, attr = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as first:
        fn = _search(attr)
        if fn is None:
            raise ImportError(
                f"crossent function {attr!r} is not available: {target} could not be loaded "
                f"({type(first).__name__}: {first})"
            ) from first
    if not callable(fn):
        raise ImportError(f"{target} is not callable")
    return fn


def _search(attr: str) -> Callable[..., Any] | None:
    """Find ``attr`` in the package or its loss modules when its declared module lacks it."""
    import crossent

    fn = getattr(crossent, attr, None)
    if callable(fn):
        return fn
    for mod in _LOSS_MODULES:
        try:
            fn = getattr(importlib.import_module(f"crossent.{mod}"), attr, None)
        except ImportError:
            continue
        if callable(fn):
            return fn
    return None


# --- the table (data in crossent._loss_table) -------------------------------------------------

_SPECS: dict[str, LossSpec] = {}
for _e in ENTRIES:
    _unknown = set(_e["aliases"]) - set(FRAMEWORKS)
    if _unknown:
        raise RuntimeError(f"{_e['name']}: unknown framework(s) {sorted(_unknown)}")
    if _e["family"] not in FAMILIES:
        raise RuntimeError(f"{_e['name']}: unknown family {_e['family']!r}")
    _SPECS[_e["name"]] = LossSpec(
        name=_e["name"], target=f"crossent.{_e['module']}:{_e['name']}", family=_e["family"],
        inputs=_e["inputs"], formula=_e["formula"], gradient=_e["gradient"],
        aliases=MappingProxyType({fw: tuple(_e["aliases"][fw]) for fw in FRAMEWORKS
                                  if _e["aliases"].get(fw)}),
        notes=_e["notes"], references=_e["references"], task=_e["task"],
        sample=_e["sample"], differentiable=_e["differentiable"],
        torch_entry_points=TORCH_ENTRY_POINTS.get(_e["name"], ()))
del _e, _unknown
_stray = set(TORCH_ENTRY_POINTS) - set(_SPECS)
if _stray:
    raise RuntimeError(f"torch entry points for unknown losses {sorted(_stray)}")
del _stray


# --- the index ------------------------------------------------------------------------------

_WORD = re.compile(r"[\W_]+")


def normalize(name: str) -> str:
    """The lookup key of a name: lower case, without spaces or punctuation.

    Example:
        >>> normalize("Softmax-With_Loss ()"), normalize("tf.nn.log_loss")
        ('softmaxwithloss', 'tfnnlogloss')
    """
    return _WORD.sub("", name.casefold())


# Module prefixes (lower case) -> the frameworks whose names follow them. Longest first.
_PREFIXES: dict[str, tuple[str, ...]] = {p: fw for fw, ps in PREFIXES.items() for p in ps}
_PREFIX_ORDER = sorted(_PREFIXES, key=len, reverse=True)


_Spellings = dict[str, dict[str, tuple[str, str]]]  # key -> framework -> (spelling, function)


def _build_index() -> tuple[dict[str, str], dict[str, str], _Spellings, frozenset[str]]:
    """Own names, the alias table, and its per-key spellings; raises on a conflict."""
    own: dict[str, str] = {}
    for name in _SPECS:
        key = normalize(name)
        if key in own:
            raise RuntimeError(f"crossent names {own[key]!r} and {name!r} normalise alike")
        own[key] = name
    alias: dict[str, str] = {}
    spelled: _Spellings = {}
    conflicts = []
    for spec in _SPECS.values():
        for fw, names in spec.aliases.items():
            for n in names:
                key = normalize(n)
                if not key:
                    raise RuntimeError(f"{spec.name}: empty alias {n!r} ({fw})")
                if alias.setdefault(key, spec.name) != spec.name:
                    conflicts.append(f"{n!r} ({fw}) -> {spec.name} and {alias[key]}")
                spelled.setdefault(key, {}).setdefault(fw, (n, spec.name))
    if conflicts:
        raise RuntimeError("aliases mapped to two different functions: " + "; ".join(conflicts))
    shadowed = frozenset(k for k, target in alias.items() if own.get(k, target) != target)
    return own, alias, spelled, shadowed


_OWN, _ALIAS, _SPELLED, _SHADOWED = _build_index()

#: Normalised aliases that are also crossent's own name of a *different* function; the bare
#: name resolves to crossent's function, the prefixed one (``F.cross_entropy``) to the alias.
SHADOWED_ALIASES: frozenset[str] = _SHADOWED


# --- lookup ---------------------------------------------------------------------------------


def _split_prefix(name: str) -> tuple[tuple[str, ...], str]:
    low = name.casefold()
    for p in _PREFIX_ORDER:
        if low.startswith(p) and len(name) > len(p):
            return _PREFIXES[p], name[len(p):]
    return (), name


def _bare(key: str) -> Resolution | None:
    if key in _OWN:
        return Resolution(_SPECS[_OWN[key]], _OWN[key], ("crossent",))
    if key in _ALIAS:
        spellings = _SPELLED[key]
        first = next(iter(spellings.values()))[0]
        return Resolution(_SPECS[_ALIAS[key]], first, tuple(spellings))
    return None


def resolve(name: str) -> Resolution:
    """Look a name up, telling which spelling and whose name it was.

    Same rules as :func:`get`; ``frameworks`` is ``("crossent",)`` for crossent's own names.

    Example:
        >>> r = resolve("torch.nn.functional.cross_entropy")
        >>> r.spec.name, r.matched, r.frameworks
        ('softmax_cross_entropy', 'cross_entropy', ('PyTorch',))
        >>> resolve("cross_entropy").spec.name
        'cross_entropy'
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    text = name.strip()
    fws, rest = _split_prefix(text)
    if fws:
        key = normalize(rest)
        if fws == ("crossent",):
            if key in _OWN:
                return _bare(key)  # type: ignore[return-value]
        elif key in _ALIAS:
            mine = tuple(fw for fw in fws if fw in _SPELLED[key])
            if mine:
                spelling = _SPELLED[key][mine[0]][0]
                return Resolution(_SPECS[_ALIAS[key]], spelling, mine)
        found = _bare(key)
        if found is not None:
            return found
    found = _bare(normalize(text))
    if found is None and "." in text:
        found = _bare(normalize(text.rsplit(".", 1)[1]))
    if found is None:
        raise UnknownLossName(_unknown_message(name))
    return found


def get(name: str) -> LossSpec:
    """The :class:`LossSpec` of any framework's name for a loss.

    Case, spaces and punctuation are ignored; known module prefixes (``torch.nn.``, ``F.``,
    ``tf.nn.``, ``keras.losses.``, ``optax.``, ``paddle.nn.functional.``...) select that
    framework's meaning; for a bare name crossent's own function names win over aliases
    (``"cross_entropy"`` is ``H(p, q)``, ``"F.cross_entropy"`` is softmax cross-entropy).

    Args:
        name: e.g. ``"SoftmaxWithLoss"``, ``"Categorical Cross-Entropy"``,
            ``"torch.nn.BCEWithLogitsLoss"``, ``"softmax_cross_entropy"``.

    Returns:
        The loss's :class:`LossSpec`.

    Raises:
        UnknownLossName: (a ``KeyError``) the name is unknown; the message lists the closest
            known names.
        TypeError: ``name`` is not a string.

    Example:
        >>> get("SoftmaxWithLoss").name
        'softmax_cross_entropy'
        >>> get("tf.nn.sigmoid_cross_entropy_with_logits").name
        'sigmoid_cross_entropy'
        >>> get("Multinomial Logistic Loss").name
        'cross_entropy'
    """
    return resolve(name).spec


def _unknown_message(name: str) -> str:
    fws, rest = _split_prefix(name.strip())
    keys = list(_OWN) + [k for k in _ALIAS if k not in _OWN]
    seen: list[str] = []
    for query in dict.fromkeys((normalize(name), normalize(rest))):
        if not query:
            continue
        for k in difflib.get_close_matches(query, keys, n=6, cutoff=0.6):
            if k not in seen:
                seen.append(k)
    shown = []
    for k in seen[:6]:
        if k in _OWN:
            shown.append(f"{_OWN[k]} (crossent)")
        else:
            # the spelling of the framework the prefix named, if it has one
            fw = next((f for f in fws if f in _SPELLED[k]), next(iter(_SPELLED[k])))
            spelling, target = _SPELLED[k][fw]
            shown.append(f"{spelling} ({fw}: {target})")
    hint = ("; did you mean: " + ", ".join(shown)) if shown else (
        "; `crossent list` shows every loss and its names")
    return f"unknown loss name {name!r}{hint}"


def catalog(family: str | None = None) -> list[LossSpec]:
    """Every loss crossent knows, in a stable order: by family (:data:`FAMILIES`), then name.

    Args:
        family: only this family (e.g. ``"focal"``).

    Raises:
        ValueError: unknown family.

    Example:
        >>> [s.name for s in catalog("focal")]
        ['sigmoid_focal_loss', 'softmax_focal_loss']
    """
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    specs = (s for s in _SPECS.values() if family is None or s.family == family)
    return sorted(specs, key=lambda s: (FAMILIES.index(s.family), s.name))


def aliases_of(fn_or_name: Any) -> Mapping[str, tuple[str, ...]]:
    """Framework -> names of a loss, given the crossent function, a spec, or any of its names.

    Example:
        >>> import crossent
        >>> aliases_of(crossent.softmax_cross_entropy)["Caffe"]
        ('SoftmaxWithLoss', 'SoftmaxWithLossLayer')
        >>> aliases_of("BCELoss")["PyTorch"]
        ('BCELoss', 'binary_cross_entropy')
    """
    if isinstance(fn_or_name, LossSpec):
        return fn_or_name.aliases
    if isinstance(fn_or_name, str):
        return get(fn_or_name).aliases
    if callable(fn_or_name):
        target = f"{getattr(fn_or_name, '__module__', '')}:{getattr(fn_or_name, '__name__', '')}"
        for spec in _SPECS.values():
            if spec.target == target:
                return spec.aliases
        name = getattr(fn_or_name, "__name__", None)
        by_name = _SPECS.get(name) if isinstance(name, str) else None
        if by_name is not None and by_name.available and by_name.fn is fn_or_name:
            return by_name.aliases
        raise UnknownLossName(f"{fn_or_name!r} is not a crossent loss in the names table")
    raise TypeError(f"expected a crossent loss function or a name, got "
                    f"{type(fn_or_name).__name__}")


def frameworks() -> tuple[str, ...]:
    """The frameworks that have at least one name in the table, in :data:`FRAMEWORKS` order."""
    used = {fw for s in _SPECS.values() for fw in s.aliases}
    return tuple(fw for fw in FRAMEWORKS if fw in used)


def families() -> tuple[str, ...]:
    """The families present in the table, in catalog order."""
    used = {s.family for s in _SPECS.values()}
    return tuple(f for f in FAMILIES if f in used)


def known_names() -> list[str]:
    """Every name :func:`get` accepts without a prefix (one spelling per key), sorted."""
    names = {normalize(n): n for n in _SPECS}
    for key, spellings in _SPELLED.items():
        names.setdefault(key, next(iter(spellings.values()))[0])
    return sorted(names.values(), key=str.casefold)
