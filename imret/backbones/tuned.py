"""Fine-tuned backbone stages as one file: the last parameter groups of a net, laid over its weights.

A retrieval head trained with the backbone's last stages (``imret train --train-blocks
N``) only works with those stages as they were trained. Shipping the whole backbone
would repeat the ImageNet weights a registry package already ships, so a file holds
only the trained groups and ``BackboneConfig.tuned`` names it: the backbone is built
from its usual weights, then the file's tensors replace those of its groups. Every
path that builds a backbone from a config (indexing, search, evaluation, training,
Ray and process workers, the service, ONNX export) therefore gets the same net, and
an index, whose preset records ``tuned``, is searched with the net it was built with.

``torch.save`` of a plain dict (read with ``weights_only=True``):

- ``format``: ``imret-backbone-stages/1``; ``backbone``: the registered backbone name
  whose weights the stages were trained from; ``groups``: how many of the last
  parameter groups (``Backbone.param_groups``) the file replaces;
- ``state``: those groups' tensors under the net's own key names (float16 when shipped);
- ``digest``: sha256 of the state (``imret.io.torchfile.save_weights_file``), checked on load;
- ``recipe``, ``data``: how and on what photos the stages were trained.

The package ships such files in ``imret/backbones/weights/`` (made by
``benchmarks/train_shipped.py``); a preset names one by its file name without ``.pt``.
A retrained file ships under a new name, so an index built with an older one fails
with a clear error instead of being searched with other weights.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.errors import WeightsError
from ..core.paths import package_file
from ..io.torchfile import load_weights_file, save_weights_file

FORMAT = "imret-backbone-stages/1"
TUNED_PACKAGE = "imret.backbones.weights"


@dataclass
class TunedStages:
    backbone: str
    groups: int
    state: dict[str, torch.Tensor]
    digest: str
    recipe: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    path: str | None = None


def group_keys(net: nn.Module, groups: list[list[nn.Module]]) -> list[str]:
    """The ``net.state_dict()`` keys of the modules in ``groups`` (parameters and buffers)."""
    wanted = {id(m) for group in groups for m in group}
    keys = []
    for name, module in net.named_modules():
        if id(module) in wanted:
            prefix = f"{name}." if name else ""
            keys += [prefix + k for k in module.state_dict()]
    return keys


def stages_state(backbone, groups: int) -> dict[str, torch.Tensor]:
    """The tensors of ``backbone``'s last ``groups`` parameter groups, by net key."""
    all_groups = backbone.param_groups()
    if not 1 <= groups <= len(all_groups):
        raise ValueError(f"groups must be in [1, {len(all_groups)}], got {groups}")
    own = backbone.net.state_dict()
    return {k: own[k] for k in group_keys(backbone.net, all_groups[-groups:])}


def save_tuned(path: str | os.PathLike, backbone_name: str, backbone, groups: int, recipe: dict, data: dict,
               half: bool = True) -> TunedStages:
    """Write ``backbone``'s last ``groups`` parameter groups (float16 unless ``half`` is False)."""
    fields = {"backbone": backbone_name, "groups": int(groups), "recipe": dict(recipe), "data": dict(data)}
    state, digest = save_weights_file(path, FORMAT, stages_state(backbone, groups), fields, half)
    return TunedStages(backbone_name, int(groups), state, digest, fields["recipe"], fields["data"], os.fspath(path))


def shipped_tuned_path(name: str) -> str | None:
    """The package's file of tuned stages named ``name``, if it ships one."""
    return package_file(TUNED_PACKAGE, f"{name}.pt")


def resolve_tuned(name_or_path: str) -> str:
    """The file ``BackboneConfig.tuned`` stands for: a shipped name, else a local path."""
    path = shipped_tuned_path(name_or_path) if os.sep not in name_or_path and "/" not in name_or_path else None
    if path is not None:
        return path
    if os.path.isfile(name_or_path):
        return name_or_path
    raise WeightsError(name_or_path, "no such file of tuned backbone stages, and this imret ships none of that "
                       "name (an index built by another imret version? rebuild it with this one)")


def load_tuned(name_or_path: str) -> TunedStages:
    """A file ``save_tuned`` wrote, by shipped name or path; a foreign, broken or altered
    one is a ``WeightsError``."""
    path = resolve_tuned(name_or_path)
    obj = load_weights_file(path, FORMAT, "tuned backbone stages", "imret tuned-stages file",
                            f"not an imret file of tuned backbone stages (format {FORMAT})",
                            required=("backbone", "groups"))
    return TunedStages(obj["backbone"], int(obj["groups"]), dict(obj["state"]), obj["digest"], obj.get("recipe", {}),
                       obj.get("data", {}), path)


def apply_tuned(backbone, ts: TunedStages, backbone_name: str) -> None:
    """Replace ``backbone``'s last ``ts.groups`` parameter groups by the file's tensors
    (cast to the net's dtypes). The file must hold exactly those groups' tensors, of
    the same shapes, for the backbone it was trained from."""
    if ts.backbone != backbone_name:
        raise WeightsError(ts.path, f"tuned stages of backbone {ts.backbone!r}, not {backbone_name!r}")
    groups = backbone.param_groups()
    if not 1 <= ts.groups <= len(groups):
        raise WeightsError(ts.path, f"replaces {ts.groups} parameter groups; backbone {backbone_name!r} cut at "
                           f"{backbone.stage!r} has {len(groups)}")
    expected = set(group_keys(backbone.net, groups[-ts.groups:]))
    if set(ts.state) != expected:
        extra, missing = sorted(set(ts.state) - expected), sorted(expected - set(ts.state))
        raise WeightsError(ts.path, f"does not hold the last {ts.groups} groups of {backbone_name!r}: "
                           f"{len(missing)} missing (e.g. {missing[:2]}), {len(extra)} foreign (e.g. {extra[:2]})")
    own = backbone.net.state_dict()
    wrong = [k for k, v in ts.state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise WeightsError(ts.path, f"{len(wrong)} tensors of another shape (e.g. {wrong[0]}: "
                           f"{tuple(ts.state[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)})")
    backbone.net.load_state_dict({k: v.to(own[k].dtype) for k, v in ts.state.items()}, strict=False)


def tuned_status(cfg) -> str | None:
    """For a backbone config with tuned stages: what they are and how they were trained
    (None without); a missing or broken file says so instead of failing."""
    if not cfg.tuned:
        return None
    try:
        ts = load_tuned(cfg.tuned)
    except WeightsError as exc:
        return f"tuned stages unavailable ({exc})"
    r, d = ts.recipe, ts.data
    train = r.get("train", {})
    seeds = r.get("seeds")
    return (f"{cfg.name}, last {ts.groups} parameter groups fine-tuned ({r.get('protocol', '?')}) on "
            f"{d.get('photos', '?')} photos of {', '.join(d.get('folders', []))} [labels: {d.get('labels', '?')}]; "
            f"{train.get('loss', '?')} loss, {train.get('steps', '?')} steps at lr {train.get('lr', '?')}"
            + (f", mean of seeds {', '.join(map(str, seeds))}" if seeds else "") + f"; sha256 {ts.digest[:12]}")
