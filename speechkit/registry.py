"""Plugin registry: one :class:`Registry` per stage kind, bound to Hydra's ConfigStore.

A plugin is a class plus a dataclass of its parameters::

    @dataclass
    class MyConfig:
        n_bins: int = 40

    @register("frontend", "my_frontend", MyConfig)
    class MyFrontend(torch.nn.Module):
        def __init__(self, cfg: MyConfig, **context): ...

Registering stores the class here and the dataclass (plus a ``name`` field holding the
plugin's name) in Hydra's ConfigStore under the kind's group, so
``frontend=my_frontend frontend.n_bins=64`` is type-checked and a misspelt key is an error.

Plugins from other packages are found through the entry-point group ``speechkit.plugins``:
each entry point names a module (or a callable) whose import registers its plugins.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "speechkit.plugins"

#: Stage kinds and the Hydra config group each one is stored under.
KINDS: dict[str, str] = {
    "frontend": "frontend",
    "augment": "augment",
    "encoder": "encoder",
    "loss": "loss",
    "decoder": "decoder",
    "lm": "lm",
    "tokenizer": "tokenizer",
}

#: Further groups a kind's configs are stored under: an LM is chosen inside the beam
#: decoder's config (``decoder.lm=ngram decoder.lm.path=…``) as well as on its own (``lm=…``).
EXTRA_GROUPS: dict[str, tuple[str, ...]] = {"lm": ("decoder/lm",)}

#: Kinds whose group takes a list of options, run in order (``augment=[speed,specaugment]``; Hydra's
#: "selecting multiple configs from a config group"). Each option is stored under its own name, so the
#: composed node maps stage name → parameters: ``augment.speed.factors``, ``augment.specaugment.time_masks``.
LIST_KINDS = ("augment",)

#: Built-in modules whose import registers speechkit's own plugins.
BUILTIN_MODULES = (
    "speechkit.frontends",
    "speechkit.augment",
    "speechkit.encoders",
    "speechkit.losses",
    "speechkit.decoders",
    "speechkit.lm",
    "speechkit.data.tokenizer",
    "speechkit.data.bpe",
)


class PluginError(LookupError):
    """An unknown plugin name, an unknown parameter, or a plugin that cannot be registered."""


@dataclass
class Plugin:
    kind: str
    name: str
    cls: type
    config: type  # the plugin's own parameter dataclass
    node: type  # the dataclass stored in Hydra's ConfigStore (config + ``name``)
    module: str = ""

    def parameters(self) -> list[tuple[str, str, Any]]:
        """(name, type, default) of every parameter, in declaration order."""
        out = []
        for f in dataclasses.fields(self.config):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
            else:
                default = "???"
            tname = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            out.append((f.name, tname, default))
        return out


@dataclass
class Registry:
    """The plugins of one stage kind, by name."""

    kind: str
    group: str
    plugins: dict[str, Plugin] = field(default_factory=dict)

    def add(self, name: str, cls: type, config: type) -> Plugin:
        if not dataclasses.is_dataclass(config):
            raise PluginError(f"{self.kind} plugin {name!r}: its config {config!r} is not a dataclass")
        if "name" in {f.name for f in dataclasses.fields(config)}:
            raise PluginError(
                f"{self.kind} plugin {name!r}: 'name' is reserved for the plugin's name; "
                f"rename that field of {config.__name__}"
            )
        old = self.plugins.get(name)
        if old is not None and (old.cls.__module__, old.cls.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise PluginError(
                f"{self.kind} plugin {name!r} is registered twice: by "
                f"{old.cls.__module__}.{old.cls.__qualname__} and {cls.__module__}.{cls.__qualname__}"
            )
        node = dataclasses.make_dataclass(
            config.__name__,
            [("name", str, field(default=name))],
            bases=(config,),
        )
        node.__module__ = config.__module__
        plugin = Plugin(self.kind, name, cls, config, node, cls.__module__)
        self.plugins[name] = plugin
        for group in (self.group, *EXTRA_GROUPS.get(self.kind, ())):
            # a list kind's option goes under its own name (augment.speed); others at the group (encoder)
            package = f"{group.replace('/', '.')}.{name}" if self.kind in LIST_KINDS else None
            _store(group, name, node, package)
        return plugin

    def get(self, name: str) -> Plugin:
        load_plugins()
        try:
            return self.plugins[name]
        except KeyError:
            raise PluginError(
                f"unknown {self.kind} plugin {name!r}; valid choices: {', '.join(sorted(self.plugins))}"
            ) from None

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self.plugins)


REGISTRIES: dict[str, Registry] = {kind: Registry(kind, group) for kind, group in KINDS.items()}


def registry(kind: str) -> Registry:
    try:
        return REGISTRIES[kind]
    except KeyError:
        raise PluginError(f"unknown plugin kind {kind!r}; valid kinds: {', '.join(REGISTRIES)}") from None


def register(kind: str, name: str, config: type) -> Callable[[type], type]:
    """Class decorator: register ``cls`` as the ``kind`` plugin ``name`` with parameters ``config``."""

    def wrap(cls: type) -> type:
        registry(kind).add(name, cls, config)
        cls.Config = config  # type: ignore[attr-defined]
        cls.plugin_name = name  # type: ignore[attr-defined]
        return cls

    return wrap


def _store(group: str, name: str, node: type, package: str | None = None) -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group=group, name=name, node=node, package=package)


_loaded = False


def load_plugins() -> None:
    """Import the built-in plugins, then every entry point of the group ``speechkit.plugins``."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if callable(obj) and not inspect.ismodule(obj) and not inspect.isclass(obj):
                obj()
        except Exception as e:  # a broken third-party plugin must say which one it is
            raise PluginError(
                f"the plugin entry point {ep.name!r} = {ep.value!r} (group {ENTRY_POINT_GROUP}) "
                f"failed to load: {type(e).__name__}: {e}. Fix or uninstall that package."
            ) from e
        log.debug("loaded plugin entry point %s = %s", ep.name, ep.value)


def as_params(node: Any) -> dict[str, Any]:
    """A plugin's config node as plain parameters: a DictConfig (interpolations resolved), a
    dict, or a dataclass instance. The one conversion from config to plugin parameters."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return OmegaConf.to_container(OmegaConf.structured(node), resolve=True)  # type: ignore[return-value]
    if isinstance(node, dict):
        return dict(node)
    raise PluginError(f"expected a plugin config (a mapping with a 'name'), got {type(node).__name__}")


def build(kind: str, node: Any = None, /, **context: Any) -> Any:
    """Build a ``kind`` plugin: ``build(kind, node, **context)`` or ``build(kind, name, **params)``.

    ``node`` is the plugin's config — ``cfg.frontend`` (DictConfig), a dict or a dataclass — with
    its ``name``; ``context`` is what the plugin needs besides its config (an encoder's
    ``input_size``, a decoder's ``tokens``) and goes straight to its constructor. With a ``name``
    instead of a node, the keyword arguments that are fields of the plugin's config dataclass
    configure it and the rest are context: ``build("decoder", "beam", tokens=…, beam_size=16)``.
    """
    if node is None or isinstance(node, str):
        params = {"name": node, **context} if node is not None else dict(context)
    else:
        params = {**as_params(node), **context}
    name = params.pop("name", None)
    if name is None:
        raise PluginError(f"build({kind!r}): no plugin name given")
    plugin = registry(kind).get(name)
    fields = {f.name for f in dataclasses.fields(plugin.config)}
    cfg = plugin.config(**{k: v for k, v in params.items() if k in fields})
    extra = {k: v for k, v in params.items() if k not in fields}
    try:
        return plugin.cls(cfg, **extra)
    except TypeError as e:  # a keyword that is neither a config field nor context it takes
        bad = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if bad is None or bad.group(1) not in extra:
            raise
        raise PluginError(
            f"{kind} plugin {name!r} has no parameter {bad.group(1)!r}; "
            f"valid parameters: {', '.join(sorted(fields))}"
        ) from None


def _first_sentence(cls: type) -> str:
    """The first sentence of ``cls``'s own docstring (not a base class's), its lines joined."""
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    paragraph = " ".join(doc.split("\n\n")[0].split())
    # a full stop ends the sentence where the next one starts with a capital (not "e.g. the")
    end = re.search(r"[.!?](?=\s+[A-Z`(\"])", paragraph)
    return paragraph[: end.end()] if end else paragraph


def field_help(config: type) -> dict[str, str]:
    """Each field of a config dataclass → its help: ``metadata["help"]``, else the ``# …`` comment on
    its line in the source, with the comment-only lines that continue it, joined into one line."""
    import ast
    import io
    import textwrap
    import tokenize

    helps: dict[str, str] = {}
    for klass in reversed([c for c in config.__mro__ if dataclasses.is_dataclass(c)]):
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # no source (built at run time, or a frozen module)
            continue
        comments: dict[int, str] = {}  # line → the comment on it
        code_lines: set[int] = set()
        try:
            for tok in tokenize.generate_tokens(io.StringIO(source).readline):
                if tok.type == tokenize.COMMENT:
                    comments[tok.start[0]] = tok.string.lstrip("#").strip()
                elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
                    code_lines.update(range(tok.start[0], tok.end[0] + 1))
            body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        except (SyntaxError, tokenize.TokenError, IndexError, AttributeError):
            continue
        for node in body:
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            lines = range(node.lineno, (node.end_lineno or node.lineno) + 1)
            parts = [comments[n] for n in lines if n in comments]
            n = lines[-1] + 1
            while parts and n in comments and n not in code_lines and not comments[n].startswith(("-", "=")):
                parts.append(comments[n])  # a comment-only line that goes on with the field's comment
                n += 1
            if parts:
                helps[node.target.id] = " ".join(parts)
    for f in dataclasses.fields(config):
        if f.metadata.get("help"):
            helps[f.name] = str(f.metadata["help"])
    return helps


def describe(kind: str | None = None) -> str:
    """The registered plugins of ``kind`` (default: every kind), each with a one-sentence description
    and its parameters, their types, defaults and help (for ``speechkit-plugins [KIND]``)."""
    load_plugins()
    kinds = [registry(kind).kind] if kind is not None else list(REGISTRIES)
    lines = []
    for k in kinds:
        reg = REGISTRIES[k]
        chain = f"  (one, or a list run in order: {k}=[a,b]; parameters {k}.NAME.KEY=…)"
        lines.append(f"{k}:" + (chain if k in LIST_KINDS else ""))
        if not reg.plugins:
            lines.append("  (none)")
        for name in sorted(reg.plugins):
            p = reg.plugins[name]
            doc = _first_sentence(p.cls)
            lines.append(f"  {name:<16} {p.module}.{p.cls.__name__}" + (f"  — {doc}" if doc else ""))
            helps = field_help(p.config)
            for pname, ptype, default in p.parameters():
                about = helps.get(pname)
                lines.append(f"      {pname}: {ptype} = {default!r}" + (f"  # {about}" if about else ""))
    return "\n".join(lines)
