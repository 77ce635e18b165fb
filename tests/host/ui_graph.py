"""A workflow as the frontend saves it (UI format) -> the API prompt the frontend queues, for graphs sent over HTTP."""

from __future__ import annotations

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def specs(info):
    order = info.get("input_order", {})
    return [
        (n, info["input"][sec][n])
        for sec in ("required", "optional")
        for n in order.get(sec, info["input"].get(sec, {}))
    ]


def has_control(name, spec):
    """The frontend's rule for a "control after generate" widget: control_after_generate when given,
    else any INT named seed or noise_seed."""
    opts = spec[1] if len(spec) > 1 else {}
    if opts.get("control_after_generate") is not None:
        return bool(opts["control_after_generate"])
    return spec[0] == "INT" and name in ("seed", "noise_seed")


def to_api(wf: dict, object_info: dict, strict: bool = True) -> dict:
    """UI format -> API prompt, the way the frontend does it (links by slot, widgets in input order; values
    beyond the node's widgets are ignored and widgets beyond the values keep their defaults, as the frontend
    does for a workflow saved by an older version: strict refuses both, for our own templates)."""
    links = {l[0]: l for l in wf["links"]}
    api = {}
    for node in wf["nodes"]:
        info = object_info[node["type"]]
        linked = {i["name"]: links[i["link"]] for i in node["inputs"] if i.get("link") is not None}
        values = iter(node["widgets_values"])
        inputs = {}
        for name, spec in specs(info):
            if name in linked:
                inputs[name] = [str(linked[name][1]), linked[name][2]]
            elif isinstance(spec[0], list) or spec[0] in WIDGET_TYPES:
                missing = object()  # a widget added after the file was saved keeps its default, as in the frontend
                inputs[name] = next(values, missing)
                if inputs[name] is missing:
                    assert not strict, f"{node['type']} has no value for its widget {name}"
                    inputs[name] = (spec[1] if len(spec) > 1 else {}).get("default")
                if has_control(name, spec) or (len(spec) > 1 and spec[1].get("image_upload")):
                    next(values)
        assert not strict or next(values, None) is None, f"{node['type']} has more widget values than widgets"
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api
