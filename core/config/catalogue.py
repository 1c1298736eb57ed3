"""The plugin catalogue and the per-run plugin manager.

Which plugins exist is :mod:`replicator.core.lib.plugin_index` (built-ins listed explicitly in
:data:`~replicator.core.lib.plugin_index.BUILTINS`, name -> "module:Class", imported lazily;
third-party packages add theirs through the ``replicator.plugins`` entry-point group). Each run
builds a fresh :class:`pluggy.PluginManager` from the recipe's ``plugins:`` blocks and checks,
before anything heavy is loaded, that every ``@hookimpl`` names a declared hook with arguments the
hookspec has (pluggy's validation and ``check_pending``), that each ``one`` hook has exactly one
provider and that each data plugin names its files.

Every hook is called through pluggy (``pm.hook.<name>``, or a subset caller for one plugin), never
by ``getattr`` on a plugin, so ``REPLICATOR_TRACE=1`` (:func:`enable_trace`) sees every call. The
training callbacks (``on_train_step``, ``on_evaluate``, ``on_stage_end``) are called only where a plugin
implements them (:meth:`Plugins.notify`). Pluggy calls the implementation registered last first; plugins
are registered in reverse recipe order, so its call order is the recipe order.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import sys
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import pluggy

from replicator.core import hookspecs
from replicator.core.errors import RecipeError, ReplicatorError
from replicator.core.lib import plugin_index
from replicator.core.lib.plugin_index import BUILTINS as BUILTINS  # re-exported: the built-in names
from replicator.core.lib.plugin_index import ENTRY_POINT_GROUP, Catalogue
from replicator.core.params import build, did_you_mean, doc_of

#: set to 1 to log every hook call (:func:`enable_trace`)
TRACE_ENV = "REPLICATOR_TRACE"
trace_log = logging.getLogger("replicator.trace")

_IMPL = hookspecs.PROJECT + "_impl"  # the attribute pluggy's HookimplMarker sets


def catalogue() -> Catalogue:
    """Every plugin by name (:func:`replicator.core.lib.plugin_index.catalogue`), with the entry points
    of the ``replicator.plugins`` group installed."""
    return plugin_index.catalogue(entry_points(group=ENTRY_POINT_GROUP))


def hookimpls_of(cls) -> dict[str, str]:
    """attribute name -> hook name of every method of ``cls`` marked ``@hookimpl``, declared hook or not."""
    out = {}
    for attr in dir(cls):
        if attr.startswith("__"):
            continue
        opts = getattr(getattr(cls, attr, None), _IMPL, None)
        if isinstance(opts, dict):
            out[attr] = opts.get("specname") or attr
    return out


def plugin_hooks(cls) -> list[str]:
    """The declared hooks a plugin class implements, in hookspec order."""
    implemented = set(hookimpls_of(cls).values())
    return [h for h in hookspecs.HOOK_KINDS if h in implemented]


def plugin_doc(cls) -> str:
    return (cls.__doc__ or "").strip()


def _where(cls) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


@dataclasses.dataclass
class Plugins:
    """The plugins of one run, in recipe order, behind a fresh pluggy manager."""

    pm: pluggy.PluginManager
    order: list[tuple[str, Any]]  # (alias, instance)
    #: alias -> (distribution, version) of the plugin's package
    origins: dict[str, tuple[str | None, str | None]] = dataclasses.field(default_factory=dict)
    _callers: dict = dataclasses.field(default_factory=dict, repr=False)
    _untrace: Callable[[], None] | None = dataclasses.field(default=None, repr=False)

    def _hook(self, hook: str, kind: str | None = None) -> pluggy.HookCaller:
        if hook not in hookspecs.HOOK_KINDS:
            raise ValueError(f"unknown hook {hook!r}; known: {', '.join(hookspecs.HOOK_KINDS)}")
        if kind is not None and hookspecs.HOOK_KINDS[hook] != kind:
            raise ValueError(f"hook {hook!r} is a {hookspecs.HOOK_KINDS[hook]!r} hook, not {kind!r}")
        return getattr(self.pm.hook, hook)

    def _only(self, hook: str, alias: str) -> pluggy.HookCaller:
        """A caller of ``hook`` that calls only plugin ``alias`` (through pluggy, so it is traced)."""
        key = (hook, alias)
        if key not in self._callers:
            keep = self.pm.get_plugin(alias)
            others = [p for p in self.pm.get_plugins() if p is not keep]
            self._callers[key] = self.pm.subset_hook_caller(hook, others)
        return self._callers[key]

    def providers(self, hook: str) -> list[tuple[str, Any]]:
        """(alias, instance) of each plugin implementing ``hook``, in recipe order."""
        names = {impl.plugin_name for impl in self._hook(hook).get_hookimpls()}
        return [(a, p) for a, p in self.order if a in names]

    def one(self, hook: str, **kwargs):
        """The result of the single provider of a ``one`` hook (``firstresult``)."""
        return self._hook(hook, "one")(**kwargs)

    def all(self, hook: str, **kwargs) -> list:
        """The results of every provider of an ``all`` hook, in recipe order (``None`` results left out)."""
        return self._hook(hook, "all")(**kwargs)

    def notify(self, hook: str, **kwargs) -> None:
        """Call a training callback (:data:`~replicator.core.hookspecs.CALLBACKS`, an ``all`` hook) where a
        plugin implements it; nothing (no call, no trace line) where none does."""
        if hook not in hookspecs.CALLBACKS:
            raise ValueError(f"hook {hook!r} is not a callback; callbacks: {', '.join(hookspecs.CALLBACKS)}")
        if self._hook(hook, "all").get_hookimpls():
            self.all(hook, **kwargs)

    def chain(self, hook: str, value_arg: str, value, **kwargs):
        """``value`` passed through each provider of a ``chain`` hook in recipe order, as ``value_arg``."""
        self._hook(hook, "chain")
        for alias, p in self.providers(hook):
            out = self._only(hook, alias)(**{value_arg: value}, **kwargs)
            if not out:
                raise ReplicatorError(f"plugin {alias!r} ({p._use}): hook {hook!r} returned None; a chain "
                                      f"hook returns the edited {value_arg!r}")
            (value,) = out
        return value

    def data_files(self, data_dir) -> list:
        """Every file the data plugins read (for the data hash), in recipe order, without repeats."""
        out = []
        for files in self.all("data_files", data_dir=data_dir):
            for f in files:
                if f not in out:
                    out.append(f)
        return out

    def check_data(self, data_dir) -> list[tuple[str, list[str]]]:
        """(alias, problems) of each data plugin whose files are missing or unusable (``data_check``)."""
        out = []
        for alias, _ in self.providers("data_check"):
            problems = [m for found in self._only("data_check", alias)(data_dir=data_dir) for m in found]
            if problems:
                out.append((alias, problems))
        return out

    def get(self, use: str):
        """The first plugin instance of catalogue name ``use``, or None."""
        for _, p in self.order:
            if getattr(p, "_use", None) == use:
                return p
        return None

    def distributions(self) -> dict[str, dict]:
        """alias -> {use, distribution, version}: which package provides each plugin of the run."""
        out = {}
        for alias, p in self.order:
            dist, ver = self.origins.get(alias, (None, None))
            out[alias] = {"use": getattr(p, "_use", None), "distribution": dist, "version": ver}
        return out


# ---------------------------------------------------------------- registration


def _proxy(alias: str, inst):
    """What is registered with pluggy for ``inst``: an object holding its marked methods, bound.

    Pluggy refuses a plugin equal (``==``) to one already registered, as two dataclasses with the
    same parameters are, and needs plugins to be hashable, which frozen dataclasses with list
    fields are not; a proxy per block is neither.
    """
    cls = type(inst)
    proxy_cls = type(f"{cls.__name__}Hooks", (), {
        "__repr__": lambda self: f"<plugin {alias}: {getattr(inst, '_use', cls.__name__)}>"})
    proxy = proxy_cls()
    for attr in hookimpls_of(cls):
        setattr(proxy, attr, getattr(inst, attr))
    proxy.instance = inst
    return proxy


def _impl_problems(pm: pluggy.PluginManager, inst) -> list[str]:
    """What pluggy's validation refuses in ``inst``'s hookimpls, one message per hook."""
    out = []
    for attr, hook in hookimpls_of(type(inst)).items():
        caller = getattr(pm.hook, hook, None)
        if caller is None or caller.spec is None:
            continue
        spec_args = list(caller.spec.argnames) + list(caller.spec.kwargnames)
        impl_args = [n for n, prm in inspect.signature(getattr(inst, attr)).parameters.items()
                     if prm.kind not in (prm.VAR_POSITIONAL, prm.VAR_KEYWORD)]
        extra = [a for a in impl_args if a not in spec_args]
        if extra:
            out.append(f"hook {hook!r} takes argument(s) {', '.join(map(repr, extra))} that the hookspec "
                       f"{hook}({', '.join(spec_args)}) does not have")
    return out


def _register(pm: pluggy.PluginManager, alias: str, inst, file: str) -> None:
    cls, use = type(inst), inst._use
    key = f"plugins.{alias}"
    for attr, hook in hookimpls_of(cls).items():
        opts = getattr(getattr(cls, attr), _IMPL)
        special = [o for o in ("tryfirst", "trylast", "wrapper", "hookwrapper", "optionalhook")
                   if opts.get(o)]
        if special:
            raise RecipeError(file, key, f"plugin {use!r} ({_where(cls)}), hook {hook!r}: @hookimpl("
                              f"{', '.join(f'{o}=True' for o in special)}) is not supported: the recipe "
                              "order decides the call order, and every hook is declared in "
                              "replicator.core.hookspecs")
    try:
        pm.register(_proxy(alias, inst), name=alias)
    except pluggy.PluginValidationError as e:
        detail = "; ".join(_impl_problems(pm, inst)) or str(e)
        raise RecipeError(file, key, f"plugin {use!r} ({_where(cls)}) does not match the hookspecs: "
                          f"{detail}") from None


def _check_pending(pm: pluggy.PluginManager, order: list[tuple[str, Any]], file: str) -> None:
    """``pm.check_pending()``: a ``@hookimpl`` whose name is no hook (a typo) is an error naming the block."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        alias = pm.get_name(e.plugin)
        inst = dict(order)[alias]
        cls = type(inst)
        unknown = sorted({h for h in hookimpls_of(cls).values() if h not in hookspecs.HOOK_KINDS})
        hint = "".join(did_you_mean(h, hookspecs.HOOK_KINDS) for h in unknown)
        raise RecipeError(file, f"plugins.{alias}",
                          f"plugin {inst._use!r} ({_where(cls)}) implements unknown hook(s) "
                          f"{', '.join(map(repr, unknown))}{hint}; known hooks: "
                          f"{', '.join(hookspecs.HOOK_KINDS)}") from None


def build_plugins(blocks: dict[str, dict], file: str, cat: dict | None = None, trace: bool | None = None,
                  unused: tuple[str, ...] = ()) -> Plugins:
    """Instantiate and register the recipe's plugin blocks; check hooks, signatures and cardinality.

    ``unused``: ``one`` hooks the stage never calls (:attr:`StageConfig.unused_hooks`: a baseline
    or frozen-feature stage has no prompt, head or loss): zero plugins is fine there, two is not.

    ``trace``: log every hook call (:func:`enable_trace`); None reads ``REPLICATOR_TRACE``.
    """
    plugin_catalogue = catalogue() if cat is None else cat
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    order = []
    for alias, block in (blocks or {}).items():
        key = f"plugins.{alias}"
        if not isinstance(block, dict) or "use" not in block:
            raise RecipeError(file, key, "a plugin block needs `use: <plugin name>` and its parameters")
        use = block["use"]
        if use not in plugin_catalogue:
            raise RecipeError(file, f"{key}.use", f"unknown plugin {use!r}"
                              f"{did_you_mean(str(use), plugin_catalogue)}; `replicate plugins` lists them")
        inst = build(plugin_catalogue[use], block, file, key, ignore=("use",))
        object.__setattr__(inst, "_use", use)
        order.append((alias, inst))
    for alias, inst in reversed(order):  # pluggy calls the last registered first: recipe order
        _register(pm, alias, inst, file)
    _check_pending(pm, order, file)
    origin = getattr(plugin_catalogue, "origin", lambda name: (None, None))
    plugins = Plugins(pm, order, {alias: origin(inst._use) for alias, inst in order})
    for hook, kind in hookspecs.HOOK_KINDS.items():
        provs = plugins.providers(hook)
        if kind == "one" and len(provs) != 1 and not (hook in unused and not provs):
            names = ", ".join(f"{a} ({p._use})" for a, p in provs) or "none"
            raise RecipeError(file, "plugins", f"hook {hook!r} needs exactly one plugin, found {len(provs)}: "
                              f"{names}")
    if not plugins.providers("data_sources"):
        raise RecipeError(file, "plugins", "no data_sources plugin: add one, e.g. `data: {use: kaggle_csv}`")
    with_files = {a for a, _ in plugins.providers("data_files")}
    for alias, p in plugins.providers("data_sources"):
        if alias not in with_files:
            raise RecipeError(file, f"plugins.{alias}", f"plugin {p._use!r} ({_where(type(p))}) implements "
                              "data_sources but not data_files: the run id must cover the files it reads")
    if trace is None:
        trace = trace_requested()
    if trace:
        enable_trace(plugins)
    return plugins


# ---------------------------------------------------------------- tracing


def trace_requested() -> bool:
    """Whether ``REPLICATOR_TRACE`` asks for the hook-call trace (1, true, yes or on)."""
    return os.environ.get(TRACE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _size(result) -> str:
    try:
        return str(len(result))
    except TypeError:
        return type(result).__name__


def enable_trace(plugins: Plugins) -> Callable[[], None]:
    """Log every hook call of ``plugins`` to the ``replicator.trace`` logger at INFO; returns the undo.

    One line per call: ``hook=<name> plugin=<alias>[,<alias>...] ms=<duration> size=<result size>``
    (aliases in call order; size is ``len()`` of each plugin's result where it has one, else its
    type; ``raised=<error>`` instead of size when the call failed). The logger gets INFO level, and
    a stderr handler when logging is not configured, so ``REPLICATOR_TRACE=1`` always shows.
    """
    if plugins._untrace is not None:
        return plugins._untrace
    if not trace_log.isEnabledFor(logging.INFO):
        trace_log.setLevel(logging.INFO)
    if not trace_log.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        trace_log.addHandler(handler)
    starts: list[float] = []

    def before(hook_name, impls, kwargs):
        starts.append(time.perf_counter())

    def after(outcome, hook_name, impls, kwargs):
        ms = (time.perf_counter() - starts.pop()) * 1000.0
        aliases = ",".join(i.plugin_name for i in reversed(impls))  # pluggy calls the list from its end
        if outcome.exception is not None:
            trace_log.info("hook=%s plugin=%s ms=%.3f raised=%s", hook_name, aliases, ms,
                           type(outcome.exception).__name__)
            return
        result = outcome.get_result()
        spec = getattr(plugins.pm.hook, hook_name).spec
        results = [result] if spec is not None and spec.opts.get("firstresult") else result
        trace_log.info("hook=%s plugin=%s ms=%.3f size=%s", hook_name, aliases, ms,
                       ",".join(_size(r) for r in results) or "-")

    undo = plugins.pm.add_hookcall_monitoring(before, after)

    def untrace() -> None:
        undo()
        plugins._untrace = None

    plugins._untrace = untrace
    return untrace


# ---------------------------------------------------------------- catalogue listing


def describe(cat: dict | None = None) -> list[dict]:
    """Catalogue entries for `replicate plugins`: name, distribution, version, hooks, doc, parameters."""
    plugin_catalogue = catalogue() if cat is None else cat
    origin = getattr(plugin_catalogue, "origin", lambda name: (None, None))
    out = []
    for name, cls in plugin_catalogue.items():
        dist, ver = origin(name)
        out.append({"name": name, "distribution": dist, "version": ver, "hooks": plugin_hooks(cls),
                    "doc": plugin_doc(cls), "params": doc_of(cls)})
    return out
