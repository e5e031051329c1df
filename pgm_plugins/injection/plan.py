"""``plan``: everything ``inject`` will do, resolved and validated, before the model is touched.

A :class:`Plan` names each site's layer, width, layout, where the width came from and where the
site came from (the adapter, the user, or the user over the adapter's), the mode, the block's
configuration and parameter count, and the host parameters it freezes. ``print(plan)`` shows it;
``plan.apply()`` is what ``inject`` runs. Validation collects every problem before raising, so one
error lists all sites that do not match.

A block needs two or more modalities: the paired-modal learner has no partner otherwise. A plan
that finds fewer is an error naming what was found and how to add the rest, unless the caller
passes ``allow_single=True`` (a block of uni-modal learners on one modality).
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from pgm_plugins._text import format_table
from pgm_plugins.block import PgMBlock, PgMConfig
from pgm_plugins.errors import InjectionError, SiteError
from pgm_plugins.injection.adapter import Adapter
from pgm_plugins.injection.freeze import FreezeSpec, resolve_freeze
from pgm_plugins.injection.probe import ProbeResult, SiteProbe, probe_sites
from pgm_plugins.injection.site import Junction, Site, feature_axis

if TYPE_CHECKING:
    from pgm_plugins.injection.handle import PgMHandle

__all__ = ["Plan", "ResolvedSite", "build_plan", "host_fingerprint"]

DEFAULT_PREFIX = "pgm_block"


@dataclass
class ResolvedSite:
    key: str  #: modality name (or the junction's layer for a junction)
    site: Site
    module: nn.Module = field(repr=False)
    width: int
    layout: str | None  #: None: decided per call (2-D -> BD, 3-D -> BTD)
    width_from: str  #: "layer", "dry run" or "dim="
    #: where the site came from: "adapter 'name'", "user" or "user, over adapter 'name'"
    origin: str = "user"


@dataclass
class Plan:
    """What ``inject`` will do. Build it with :func:`pgm_plugins.plan`."""

    model: nn.Module = field(repr=False)
    sites: dict[str, ResolvedSite]
    junction: Junction | None
    mode: str
    config: PgMConfig
    block: nn.Module = field(repr=False)
    adapter: str | None
    prefix: str
    order: list[str]  #: arrival order seen in the dry run (else the sites' order)
    read_check: str  #: "passed in the dry run", "on the first forward" or "not needed"
    spelled: dict[str, Any]  #: the sites as the user spelled them (saved in checkpoints)
    #: the host parameters ``apply()`` freezes (``freeze_host``), by name
    freeze: tuple[str, ...] = ()

    @property
    def block_parameters(self) -> int:
        return sum(p.numel() for p in self.block.parameters())

    def __str__(self) -> str:
        lines = [
            f"PgM injection plan ({self.mode} mode"
            + (f", adapter {self.adapter!r}" if self.adapter else "")
            + ")"
        ]
        rows = [("modality", "site", "layer type", "width", "layout", "width from", "site from")]
        if self.junction is not None:
            rs = next(iter(self.sites.values()))
            for m, w in self.junction.widths.items():
                rows.append(
                    (
                        m,
                        f"{rs.site.describe()} (junction)",
                        type(rs.module).__name__,
                        str(w),
                        rs.layout or "auto",
                        rs.width_from,
                        rs.origin,
                    )
                )
        else:
            for rs in self.sites.values():
                rows.append(
                    (
                        rs.key,
                        rs.site.describe(),
                        type(rs.module).__name__,
                        str(rs.width),
                        rs.layout or "auto",
                        rs.width_from,
                        rs.origin,
                    )
                )
        lines += format_table(rows, indent="  ")
        cfg = self.config
        lines.append(
            f"  block: partitioner={cfg.partitioner}, paired={cfg.paired}, mix={cfg.mix}, "
            f"task={cfg.task}, {self.block_parameters:,} parameters, attached as "
            f"model.{self.prefix}"
        )
        if self.mode == "joint" and self.junction is None:
            if self.read_check == "passed in the dry run":
                when = (
                    f"arrival order: {' -> '.join(self.order)}; the block runs when "
                    f"{self.order[-1]!r} arrives"
                )
            else:
                when = "the block runs when the last of the modalities arrives"
            lines.append(f"  {when}; read check: {self.read_check}")
        if len(self.config.modalities) < 2:
            lines.append(
                "  one modality (allow_single=True): uni-modal learners only, no paired partner"
            )
        if self.freeze:
            from pgm_plugins.injection.freeze import host_parameters

            host = host_parameters(self.model, self.prefix)
            frozen = sum(host[n].numel() for n in self.freeze if n in host)
            total = sum(p.numel() for p in host.values())
            lines.append(
                f"  freeze_host: {len(self.freeze)} host tensors, {frozen:,} of {total:,} host "
                "parameters stop training (remove() lets them train again)"
            )
        return "\n".join(lines)

    def apply(self) -> PgMHandle:
        """Carry the plan out: attach the block, register the hooks, return the handle."""
        from pgm_plugins.injection.engine import PgMInjection, SiteSlot
        from pgm_plugins.injection.handle import PgMHandle

        if hasattr(self.model, self.prefix):
            raise InjectionError(
                f"the model already has an attribute {self.prefix!r}; this plan "
                "was applied already (or another block is injected)."
            )
        injection = PgMInjection(
            self.block,
            {k: SiteSlot(k, rs.site, rs.layout, rs.width) for k, rs in self.sites.items()},
            mode=self.mode,
            junction=self.junction,
            prefix=self.prefix,
            order=self.order,
            read_check_pending=self.read_check == "on the first forward",
            adapter=self.adapter,
            spelled=self.spelled,
        )
        modules = {k: rs.module for k, rs in self.sites.items()}
        layers = dict(self.model.named_modules())
        for k, rs in self.sites.items():
            token = rs.site.token
            if token is not None and not isinstance(token, int):
                modules[f"token source:{k}"] = layers[token.layer]
        injection.attach(self.model, modules)
        injection.freeze(self.model, self.freeze)
        return PgMHandle(self.model, injection, self)


def host_fingerprint(model: nn.Module, skip_prefix: str = DEFAULT_PREFIX) -> str:
    """A short hash of the host's architecture: module types, parameter and buffer shapes."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper is not architecture
    h = hashlib.sha256()
    for name, module in model.named_modules():
        if name == skip_prefix or name.startswith(skip_prefix + "."):
            continue
        h.update(f"{name}:{type(module).__qualname__};".encode())
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if not name.startswith(skip_prefix + "."):
            h.update(f"{name}:{tuple(t.shape)};".encode())  # dtype is not architecture
    return h.hexdigest()[:16]


def _near(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
    if not close:
        tail = name.rsplit(".", 1)[-1]
        close = [n for n in names if n.rsplit(".", 1)[-1] == tail][:3]
    return f" (near: {', '.join(map(repr, close))})" if close else ""


def _static_width(module: nn.Module, site: Site) -> int | None:
    """The feature width a layer states for its output (or input), if it states one."""
    out = site.at == "output"
    if isinstance(module, nn.Linear):
        return module.out_features if out else module.in_features
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        return module.out_channels if out else module.in_channels
    if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
        return module.num_features
    if isinstance(module, nn.LayerNorm) and module.normalized_shape:
        return int(module.normalized_shape[-1])
    if isinstance(module, nn.Embedding) and out:
        return module.embedding_dim
    if isinstance(module, nn.MultiheadAttention):
        return module.embed_dim
    if isinstance(module, nn.RNNBase) and out and site.index == 0:
        return module.hidden_size * (2 if module.bidirectional else 1)
    if isinstance(module, nn.Sequential) and out and site.index is None:
        # the last layer that states a width, behind width-keeping activations / dropout
        for child in reversed(module):
            width = _static_width(child, Site("_", "output"))
            if width is not None or any(True for _ in child.parameters()):
                return width
    return None


def _batch_axis(layout: str) -> int:
    return 1 if layout == "TBD" else 0


def _infer_layout(
    shape: tuple[int, ...], module: nn.Module, site: Site, batch: int | None, static: int | None
) -> tuple[str | None, str]:
    """The layout of a tensor seen in the dry run, or ``(None, why)`` when it is ambiguous."""
    if len(shape) == 2:
        return "BD", ""
    if len(shape) == 4:
        if isinstance(module, nn.Conv2d | nn.BatchNorm2d) and site.at == "output":
            return "BDHW", ""
        if static is not None and shape[3] == static and shape[1] != static:
            return "BHWD", ""
        if static is not None and shape[1] == static and shape[3] != static:
            return "BDHW", ""
        return None, (
            f"{site.describe()} gives a feature map {shape}; give Site(..., layout='BDHW') "
            "(channels first) or layout='BHWD' (channels last)"
        )
    if len(shape) != 3:
        return (
            None,
            f"{site.describe()} gives a {len(shape)}-D tensor {shape}; sites take 2-D to 4-D",
        )
    if isinstance(module, nn.Conv1d) and site.at == "output":
        return "BDT", ""
    if batch is None or (shape[0] == batch and shape[1] != batch):
        return "BTD", ""
    if shape[1] == batch and shape[0] != batch:
        return "TBD", ""
    if static is not None and shape[2] == static:
        return None, (
            f"{site.describe()} gives shape {shape} for a batch of {batch}: the batch could be "
            "axis 0 or 1; give Site(..., layout='BTD') or layout='TBD'"
        )
    return None, (
        f"{site.describe()} gives shape {shape} for a batch of {batch}; give "
        "Site(..., layout=...) ('BTD', 'TBD' or 'BDT')"
    )


def _config_from(
    config: PgMConfig | Mapping[str, Any] | None,
    defaults: Mapping[str, Any],
    widths: dict[str, int],
) -> PgMConfig:
    if isinstance(config, PgMConfig):
        if config.modalities != widths:
            raise InjectionError(
                f"the config's modalities {config.modalities} do not match the sites' widths "
                f"{widths}; pass a dict of PgMConfig fields without 'modalities' to let the "
                "sites decide."
            )
        return config
    if config is not None and not isinstance(config, Mapping):
        return PgMConfig.from_fields(config)  # raises a ConfigError naming the type
    fields = dict(defaults) | dict(config or {})
    if "modalities" in fields and dict(fields["modalities"]) != widths:
        raise InjectionError(
            f"config modalities {fields['modalities']} do not match the sites' widths {widths}."
        )
    return PgMConfig.from_fields(fields, modalities=widths)


def build_plan(
    model: nn.Module,
    *,
    sites: Mapping[str, Site | str | Mapping[str, Any]] | None = None,
    junction: Junction | None = None,
    adapter: Adapter | None = None,
    config: PgMConfig | Mapping[str, Any] | None = None,
    mode: str | None = None,
    example_inputs: Any = None,
    prefix: str = DEFAULT_PREFIX,
    block_factory: Callable[[PgMConfig], nn.Module] | None = None,
    extend: bool = False,
    allow_single: bool = False,
    freeze_host: FreezeSpec = False,
) -> Plan:
    """Resolve and validate an injection without changing ``model`` (see ``pgm_plugins.plan``).

    Phases, each raising before the next runs: the host and attribute name, the request (the
    adapter's sites, junction and mode unless given; with ``extend``, ``sites`` override the
    adapter's by modality name and add new ones), the sites' layers, the dry run
    (``example_inputs``), every site's width and layout, the number of modalities
    (``allow_single``), the host parameters to freeze, the block's configuration against the
    mode and the host's reads; then the block is built and the plan assembled.
    """
    _check_host(model, prefix)
    if junction is None and sites is None and adapter is not None and adapter.junction:
        origins_junction = f"adapter {adapter.name!r}"
    else:
        origins_junction = "user"
    spelled_sites, origins, junction, mode = _resolve_request(
        model, sites, junction, adapter, mode, extend
    )
    site_objs, modules = _locate_sites(model, spelled_sites, junction)
    probe: ProbeResult | None = None
    if example_inputs is not None:
        check = mode == "joint" and junction is None and len(site_objs) > 1
        probe = probe_sites(model, site_objs, example_inputs, check_reads=check)
    resolved = _resolve_sites(model, site_objs, modules, probe, mode, junction)
    for key, rs in resolved.items():
        rs.origin = origins_junction if junction is not None else origins.get(key, "user")
    allow_single = allow_single or (adapter is not None and adapter.allow_single)
    if junction is None and len(resolved) < 2 and not allow_single:
        raise InjectionError(_too_few(model, resolved, adapter, extend))
    freeze = resolve_freeze(model, freeze_host, prefix)
    widths = (
        dict(junction.widths)
        if junction is not None
        else {k: rs.width for k, rs in resolved.items()}
    )
    cfg = _config_from(config, adapter.config if adapter is not None else {}, widths)
    _check_mode(cfg, mode, probe)
    order = probe.order if probe is not None else list(resolved)
    if mode != "joint" or junction is not None or len(resolved) < 2:
        read_check = "not needed"
    else:
        read_check = "passed in the dry run" if probe is not None else "on the first forward"
    return Plan(
        model,
        resolved,
        junction,
        mode,
        cfg,
        _build_block(model, cfg, block_factory),
        adapter.name if adapter is not None else None,
        prefix,
        order,
        read_check,
        _spelled(spelled_sites, junction),
        freeze,
    )


def _too_few(
    model: nn.Module, resolved: Mapping[str, ResolvedSite], adapter: Adapter | None, extend: bool
) -> str:
    """The error of a plan with fewer than two modalities: what was found, where from, the
    host's top-level modules that hold no site (candidates for the others), and the calls that
    add them or ask for one modality."""
    found = "; ".join(
        f"{k!r} at {rs.site.describe()} (from {rs.origin})" for k, rs in resolved.items()
    )
    layers = {rs.site.layer for rs in resolved.values()}
    free = [
        f"{name} ({type(child).__name__})"
        for name, child in model.named_children()
        if not any(layer == name or layer.startswith(name + ".") for layer in layers)
    ]
    if adapter is not None:
        how = (
            f"add the others to the adapter's: pgm_plugins.inject(model, {adapter.name!r}, "
            "sites={'text': 'text_encoder'})"
            + ("" if extend else " (or inject(model, extend=True, sites={...}) on the matched one)")
        )
    else:
        how = "give every modality's site: sites={'image': '...', 'text': 'text_encoder'}"
    return (
        f"the plan finds {len(resolved)} modality ({found}) in {type(model).__name__}; a PgM "
        "block pairs two or more modalities (its paired-modal learner has no partner "
        f"otherwise). To add the rest, {how}"
        + (f"; modules holding no site: {', '.join(free[:8])}" if free else "")
        + ". pgm_plugins.list_layers(model) lists every layer. For a block on one modality on "
        "purpose, pass allow_single=True."
    )


def _check_host(model: nn.Module, prefix: str) -> None:
    """A module, and a free attribute name to attach the block as."""
    if not isinstance(model, nn.Module):
        raise InjectionError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if not isinstance(prefix, str) or not prefix.isidentifier():
        raise InjectionError(
            f"prefix={prefix!r} must be a Python identifier (an attribute name such as "
            f"'pgm_block', no dots): the block is attached as model.<prefix>."
        )
    if hasattr(model, prefix):
        raise InjectionError(
            f"the model already has an attribute {prefix!r} (a PgM block "
            "injected before?); call handle.remove() first or pass prefix=."
        )


def _resolve_request(
    model: nn.Module,
    sites: Any,
    junction: Junction | None,
    adapter: Adapter | None,
    mode: str | None,
    extend: bool = False,
) -> tuple[dict[str, Any], dict[str, str], Junction | None, str]:
    """The sites as spelled, where each came from, the junction and the mode: the caller's,
    else the adapter's. With ``extend`` (an adapter named, or asked for), the caller's sites
    override the adapter's by modality name (``None`` drops one) and add new ones; an adapter's
    junction is replaced by the caller's sites."""
    if sites is not None and not isinstance(sites, Mapping):
        example = (
            ", ".join(f"'m{i}': {s!r}" for i, s in enumerate(list(sites)[:2]))
            if (isinstance(sites, list | tuple))
            else "'text': 'encoder.text'"
        )
        raise InjectionError(
            f"sites must map each modality's name to its layer, got a {type(sites).__name__} "
            f"({sites!r}); write sites={{{example}}} (the names become the modalities)."
        )
    spelled_sites, origins = _merged_sites(model, sites, adapter, extend)
    junction = (
        junction
        if junction is not None or sites is not None
        else (adapter.junction if adapter is not None else None)
    )
    if not spelled_sites and junction is None:
        raise InjectionError(
            "nothing to inject: give sites={modality: layer path or Site}, a "
            "junction=, or an adapter. Run `pgm layers MODULE:FACTORY` (or "
            "pgm_plugins.list_layers(model)) to see the layers."
        )
    if spelled_sites and junction is not None:
        raise InjectionError("give either sites or a junction, not both.")
    mode = mode or (adapter.mode if adapter is not None else "joint")
    if mode not in ("joint", "independent"):
        raise InjectionError(f"mode={mode!r} is not valid; choose 'joint' or 'independent'.")
    return spelled_sites, origins, junction, mode


def _merged_sites(
    model: nn.Module, sites: Mapping[str, Any] | None, adapter: Adapter | None, extend: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    """The sites to use and the origin of each (``ResolvedSite.origin``)."""
    if adapter is None or (sites is not None and not extend):
        user = dict(sites or {})
        dropped = [k for k, v in user.items() if v is None]
        if dropped:
            raise InjectionError(
                f"sites={{{dropped[0]!r}: None}} drops one of an adapter's sites; with no adapter "
                "named there is none to drop. Give each modality's layer."
            )
        return user, {k: "user" for k in user}
    own = adapter.sites_for(model)
    origins = {k: f"adapter {adapter.name!r}" for k in own}
    if sites is None:
        return own, origins
    if adapter.junction is not None and not own:
        return dict(sites), {k: "user" for k in sites}
    unknown = [k for k, v in sites.items() if v is None and k not in own]
    if unknown:
        raise InjectionError(
            f"sites={{{unknown[0]!r}: None}} drops a site the adapter {adapter.name!r} does not "
            f"have; its sites: {', '.join(map(repr, own)) or 'none'}."
            + "".join(
                f" Did you mean {c!r}?" for c in difflib.get_close_matches(unknown[0], own, 1)
            )
        )
    merged = dict(own)
    for key, spec in sites.items():
        if spec is None:
            merged.pop(key)
            origins.pop(key)
            continue
        origins[key] = f"user, over adapter {adapter.name!r}" if key in own else "user"
        merged[key] = spec
    return merged, origins


def _locate_sites(
    model: nn.Module, spelled_sites: Mapping[str, Any], junction: Junction | None
) -> tuple[dict[str, Site], dict[str, nn.Module]]:
    """Every site parsed and found in the model (one :class:`SiteError` listing every miss),
    and the model's modules by name."""
    site_objs: dict[str, Site] = {}
    problems: list[str] = []
    for key, spec in (
        spelled_sites.items() if junction is None else [(junction.layer, junction.site())]
    ):
        try:
            site_objs[key] = Site.coerce(spec)
        except InjectionError as exc:
            problems.append(f"{key}: {exc}")
    modules = dict(model.named_modules())
    names = [n for n in modules if n]
    for key, site in site_objs.items():
        if site.layer not in modules:
            problems.append(f"{key}: layer {site.layer!r} not found{_near(site.layer, names)}")
        source = getattr(site.token, "layer", None)
        if source is not None and source not in modules:
            problems.append(f"{key}: the token's layer {source!r} not found{_near(source, names)}")
    seen: dict[tuple[str, str, Any, int | None], str] = {}
    for key, site in site_objs.items():
        place = (site.layer, site.at, site.element, site.call)
        if place in seen:
            problems.append(
                f"{key}: {site.describe()} is also the site of {seen[place]!r}; two modalities "
                "cannot share one tensor (for one tensor carrying several modalities use a "
                "Junction)"
            )
        seen.setdefault(place, key)
    if problems:
        raise SiteError(
            f"{len(problems)} of {len(site_objs)} sites do not match the model "
            f"{type(model).__name__}:\n  "
            + "\n  ".join(problems)
            + "\nRun pgm_plugins.list_layers(model) to see every layer."
        )
    return site_objs, modules


def _resolve_sites(
    model: nn.Module,
    site_objs: Mapping[str, Site],
    modules: Mapping[str, nn.Module],
    probe: ProbeResult | None,
    mode: str,
    junction: Junction | None,
) -> dict[str, ResolvedSite]:
    """Every site's width and layout (one :class:`SiteError` listing every site that does not
    fit)."""
    resolved: dict[str, ResolvedSite] = {}
    problems: list[str] = []
    for key, site in site_objs.items():
        got = _resolve_site(key, site, modules[site.layer], probe, mode, junction)
        if isinstance(got, str):
            problems.append(got)
        else:
            resolved[key] = got
    if problems:
        raise SiteError(
            f"{len(problems)} of {len(site_objs)} sites do not fit the model "
            f"{type(model).__name__}:\n  " + "\n  ".join(problems)
        )
    return resolved


def _resolve_site(
    key: str,
    site: Site,
    module: nn.Module,
    probe: ProbeResult | None,
    mode: str,
    junction: Junction | None,
) -> ResolvedSite | str:
    """One site's width (dry run, else the layer's, else the junction's, checked against
    ``dim=``) and layout; or the problem, as one line naming the site."""
    static = _static_width(module, site)
    layout = site.layout
    width, source = None, ""
    rec = probe.sites[key] if probe is not None else None
    if probe is not None and rec is not None:
        measured = _measured_width(key, site, module, rec, probe.batch, mode, static)
        if isinstance(measured, str):
            return measured
        width, layout = measured
        source = "dry run"
    elif static is not None:
        width, source = static, "layer"
        if layout is None and isinstance(module, nn.Conv1d) and site.at == "output":
            layout = "BDT"
    if width is None and junction is not None:
        width, source = sum(junction.widths.values()), "junction widths"
    if site.dim is not None:
        if width is not None and width != site.dim:
            return f"{key}: dim={site.dim} but the {source} says {width}"
        width, source = site.dim, source or "dim="
    if width is None:
        return (
            f"{key}: the width at {site.describe()} ({type(module).__name__}) is "
            "unknown; pass example_inputs= for a dry run, or Site(..., dim=N)"
        )
    if junction is not None and width != sum(junction.widths.values()):
        return _junction_mismatch(site, junction, width, rec)
    return ResolvedSite(key, site, module, width, layout, source)


def _measured_width(
    key: str,
    site: Site,
    module: nn.Module,
    rec: SiteProbe,
    batch: int | None,
    mode: str,
    static: int | None,
) -> tuple[int, str] | str:
    """Width and layout of the tensor the dry run saw at the site; or the problem."""
    if rec.not_tensor:
        return f"{key}: at {site.describe()}: {rec.not_tensor}"
    if rec.calls == 0:
        return f"{key}: layer {site.layer!r} did not run in the dry run"
    if not rec.shapes:
        return (
            f"{key}: layer {site.layer!r} ran {rec.calls} times; call="
            f"{site.call} is out of range (0..{rec.calls - 1})"
        )
    if rec.calls > 1 and site.call is None and mode == "joint":
        return (
            f"{key}: layer {site.layer!r} runs {rec.calls} times per forward; "
            f"choose which with Site(..., call=0..{rec.calls - 1})"
        )
    shape = rec.shapes[0]
    layout = site.layout
    if layout is None:
        layout, why = _infer_layout(shape, module, site, batch, static)
        if layout is None:
            return f"{key}: {why}"
    if len(shape) != len(layout):
        return (
            f"{key}: layout {layout!r} expects a {len(layout)}-D tensor, but "
            f"{site.describe()} gives shape {shape}"
        )
    if batch is not None and shape[_batch_axis(layout)] != batch:
        return (
            f"{key}: layout {layout!r} puts the batch on axis {_batch_axis(layout)}, but "
            f"{site.describe()} gives shape {shape} for a batch of {batch}"
        )
    width = shape[feature_axis(layout)]
    if static is not None and static != width:
        return (
            f"{key}: width {width} on axis {feature_axis(layout)} of shape "
            f"{shape} (layout {layout!r}) differs from the layer's {static}; "
            "wrong layout?"
        )
    return width, layout


def _junction_mismatch(site: Site, junction: Junction, width: int, rec: SiteProbe | None) -> str:
    """The problem of a junction whose widths do not sum to its tensor's."""
    probed = rec.shapes[0] if rec is not None and rec.shapes else None
    stacked = probed is not None and len(junction.widths) in probed[:2]
    return (
        f"junction {site.layer!r}: the tensor is {width} wide but the widths "
        f"{dict(junction.widths)} sum to {sum(junction.widths.values())}"
        + (
            f"; its shape {probed} looks like the modalities stacked on a new axis: a "
            "Junction splits a feature-axis concatenation only (stacks are not "
            "supported); put a Site on each modality's own layer before the stack"
            if stacked
            else ""
        )
    )


def _check_mode(cfg: PgMConfig, mode: str, probe: ProbeResult | None) -> None:
    """The paired learner the mode can run, and (joint) sites the host reads in order."""
    if mode == "independent" and cfg.paired_learner and cfg.paired != "shared":
        raise InjectionError(
            "mode='independent' (one modality per call) needs paired='shared' "
            "(or paired_learner=False); 'attention' needs the modalities "
            "together. Set config={'paired': 'shared'} or mode='joint'."
        )
    if probe is not None and probe.violations:
        raise InjectionError(
            "joint mode cannot be used with these sites: the host reads an earlier modality "
            f"before the last one ({probe.order[-1]!r}) is produced: "
            + "; ".join(probe.violations)
            + ". Choose sites where every modality is produced before any is consumed, or use "
            "mode='independent' with paired='shared'."
        )


def _build_block(
    model: nn.Module, cfg: PgMConfig, block_factory: Callable[[PgMConfig], nn.Module] | None
) -> nn.Module:
    """The block, where the host lives and in its precision (not attached yet)."""
    block = (block_factory or PgMBlock)(cfg)
    ref = next((p for p in model.parameters() if p.is_floating_point()), None)
    if ref is not None:
        block.to(device=ref.device, dtype=ref.dtype)
    return block


def _spelled(spelled_sites: Mapping[str, Any], junction: Junction | None) -> dict[str, Any]:
    """The sites as the user spelled them, for checkpoints."""
    if junction is not None:
        return junction.to_dict()
    return {
        k: (v if isinstance(v, str) else Site.coerce(v).to_dict()) for k, v in spelled_sites.items()
    }
