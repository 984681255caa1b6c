"""The course's interactive explorers: ipywidgets controls beside a plotly ``FigureWidget``.

Each function returns an ``Explorer`` (a ``VBox``) whose figure is updated in place when a
control changes. The numbers come from ``peftlab.explorers.compute``; this file only draws them.

    rank_explorer({"layer 0 q_proj": W})          # in a notebook cell: the last expression
    explorer.controls["r"].value = 16              # what a slider drag does (tests do this)

A notebook viewer that runs no kernel (GitHub, a static site built from the chapters) cannot draw
a widget. So each explorer also offers its picture as it stands as a PNG, drawn with matplotlib from
the plotly figure's own traces: such a viewer shows the explorer's first picture instead of a line
of text, while JupyterLab, which can draw the widget, still shows the live explorer.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import textwrap

import ipywidgets as widgets
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from peftlab.methods.names import FULL_FINE_TUNING, LORA, QLORA
from peftlab.methods.nf4 import CODEBOOKS
from peftlab.explorers import compute


class Explorer(widgets.VBox):
    """Controls above a figure; ``update()`` redraws the figure from the controls' values."""

    def __init__(self, title: str, controls: dict[str, widgets.Widget], figure: go.FigureWidget, update):
        self.title, self.controls, self.figure, self._update = title, controls, figure, update
        self.status = widgets.HTML()
        for control in controls.values():  # room for the labels, and rows that wrap instead of overflowing
            control.style.description_width = "initial"
            control.layout.margin = "2px 16px 2px 0"
        super().__init__([widgets.HBox(list(controls.values()), layout=widgets.Layout(flex_flow="row wrap")),
                          self.status, figure])
        for control in controls.values():
            control.observe(lambda change: self.update(), names="value")
        self.update()

    def update(self) -> None:
        with self.figure.batch_update():
            self.status.value = self._update({name: c.value for name, c in self.controls.items()})

    def __repr__(self) -> str:  # what a notebook without a widget frontend (and nbval) prints
        return f"{self.title} (interactive: open in JupyterLab and move the controls)"

    def picture(self) -> bytes:
        """The explorer as it stands, as a PNG: its status line above its figure."""
        caption = html.unescape(re.sub(r"<[^>]+>", "", self.status.value))
        return _png(self.figure, caption)

    def _repr_mimebundle_(self, **kwargs):
        # The widget for JupyterLab, the picture for viewers that cannot run one (they prefer an
        # image to text/plain), and the text for the rest. Stored outputs keep all three; nbval
        # compares only the text.
        bundle = super()._repr_mimebundle_(**kwargs)
        bundle["image/png"] = base64.b64encode(self.picture()).decode("ascii")
        return bundle


# plotly marker symbols the explorers use, as matplotlib markers
_MARKERS = {None: "o", "circle": "o", "circle-open": "o", "line-ns-open": "|"}
_DASHES = {None: "-", "solid": "-", "dot": ":", "dash": "--"}


def _png(figure: go.FigureWidget, caption: str) -> bytes:
    """Draw the explorers' plotly figure (two panels of bars, lines and markers) with matplotlib."""
    from matplotlib.figure import Figure  # not pyplot: no global state, no screen needed

    picture = Figure(figsize=(10, 4.2), dpi=72, layout="constrained")
    axes = picture.subplots(1, 2)
    picture.suptitle(textwrap.fill(caption, 120), fontsize=9)
    layout = figure.layout
    for i, ax in enumerate(axes):
        suffix = "" if i == 0 else str(i + 1)
        if i < len(layout.annotations):  # make_subplots writes the panel titles as annotations
            ax.set_title(layout.annotations[i].text, fontsize=10)
        for axis, set_scale, set_label, set_lim, set_ticks in (
                (layout["xaxis" + suffix], ax.set_xscale, ax.set_xlabel, ax.set_xlim, ax.set_xticks),
                (layout["yaxis" + suffix], ax.set_yscale, ax.set_ylabel, ax.set_ylim, ax.set_yticks)):
            set_scale("log" if axis.type == "log" else "linear")
            if axis.title.text:
                set_label(axis.title.text)
            if axis.range and axis.type != "log":
                set_lim(*axis.range)
            if axis.tickvals:  # the figure's own ticks, and no others (a log axis would add minor ones)
                set_ticks(list(axis.tickvals), list(axis.ticktext or [f"{v:g}" for v in axis.tickvals]))
                set_ticks([], minor=True)
    for trace in figure.data:
        ax = axes[0 if trace.xaxis in (None, "x") else 1]
        x = list(trace.x or [])
        y = [math.nan if v is None else v for v in (trace.y or [])]
        label = trace.name if trace.showlegend is not False and trace.name else None
        if trace.type == "bar" and trace.orientation == "h":
            ax.barh(list(trace.y or []), x, label=label)
        elif trace.type == "bar":
            gaps = [b - a for a, b in zip(sorted(x), sorted(x)[1:])]
            ax.bar(x, y, width=0.8 * min(gaps) if gaps else 0.8, color=trace.marker.color, label=label)
        else:
            color = trace.line.color or trace.marker.color
            lines = "-" if "lines" in (trace.mode or "lines") else ""
            marker = _MARKERS.get(trace.marker.symbol, "o") if "markers" in (trace.mode or "") else ""
            ax.plot(x, y, linestyle=_DASHES.get(trace.line.dash, "-") if lines else "", marker=marker,
                    markersize=(trace.marker.size or 6) * 0.6, linewidth=(trace.line.width or 2) * 0.75,
                    markerfacecolor="none" if (trace.marker.symbol or "").endswith("open") else None,
                    color=color, label=label)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    buffer = io.BytesIO()
    picture.savefig(buffer, format="png")
    return buffer.getvalue()


def _trace(fig: go.FigureWidget, name: str):
    """The figure's one trace called ``name``. Updates find their trace by name, not by position, so that a trace
    added to a figure later shifts nothing."""
    (trace,) = [t for t in fig.data if t.name == name]
    return trace


def _figure(left: str, right: str) -> go.FigureWidget:
    fig = go.FigureWidget(make_subplots(rows=1, cols=2, subplot_titles=(left, right)))
    fig.update_layout(height=360, width=900, margin=dict(l=50, r=20, t=40, b=40), legend=dict(orientation="h", y=-0.2))
    return fig


def rank_explorer(matrices: dict[str, torch.Tensor]) -> Explorer:
    """Pick a matrix and a rank r: its singular values, and the energy a rank-r approximation keeps."""
    if not matrices:
        raise ValueError("rank_explorer needs at least one matrix")
    profiles = {name: compute.rank_profile(m) for name, m in matrices.items()}
    first = next(iter(profiles.values()))
    controls = {"matrix": widgets.Dropdown(options=list(profiles), description="matrix"),
                "r": widgets.IntSlider(value=min(8, len(first["singular_values"])), min=1,
                                       max=len(first["singular_values"]), description="rank r")}
    fig = _figure("singular values (relative to the largest)", "energy kept by the best rank-r approximation")
    fig.add_bar(name="kept (first r)", row=1, col=1)
    fig.add_bar(name="dropped", row=1, col=1)
    fig.add_scatter(mode="lines", name="energy kept", row=1, col=2)
    fig.add_scatter(mode="markers", marker=dict(size=12), name="your r", row=1, col=2)
    fig.update_yaxes(type="log", exponentformat="power", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_xaxes(title_text="index", row=1, col=1)
    fig.update_xaxes(title_text="rank r", row=1, col=2)

    def update(values):
        profile = profiles[values["matrix"]]
        n = len(profile["singular_values"])
        controls["r"].max = n
        r = min(values["r"], n)
        rel = profile["relative"]
        _trace(fig, "kept (first r)").update(x=list(range(1, r + 1)), y=rel[:r])
        _trace(fig, "dropped").update(x=list(range(r + 1, n + 1)), y=rel[r:])
        _trace(fig, "energy kept").update(x=list(range(1, n + 1)), y=profile["energy_kept"])
        _trace(fig, "your r").update(x=[r], y=[profile["energy_kept"][r - 1]])
        summary = compute.rank_summary(profile, r)
        return (f"<b>{values['matrix']}</b> {profile['shape'][0]}×{profile['shape'][1]}: rank {r} keeps "
                f"{summary['energy_kept']:.1%} of the energy (relative error {summary['relative_error']:.3f}); "
                f"a rank-{r} LoRA update has {summary['lora_parameters']:,} parameters vs "
                f"{summary['dense_parameters']:,} dense ({summary['lora_parameters'] / summary['dense_parameters']:.1%})")

    return Explorer("rank explorer", controls, fig, update)


def lr_explorer(results: list[dict]) -> Explorer:
    """Pick a method and a learning rate from a sweep: its training curve among the others, and
    validation loss against learning rate for every method."""
    table = compute.lr_table(results)
    methods = list(table)
    controls = {"method": widgets.Dropdown(options=methods, description="method"),
                "lr": widgets.SelectionSlider(options=[(f"{lr:g}", lr) for lr in table[methods[0]]["lrs"]],
                                              description="learning rate")}
    fig = _figure("training loss (smoothed) at each rate", "validation loss after training")
    curve_traces = max(len(entry["lrs"]) for entry in table.values())  # one gray curve per rate of the sweep
    for i in range(curve_traces):
        fig.add_scatter(mode="lines", line=dict(width=1, color="lightgray"), showlegend=False, name=f"rate {i}",
                        row=1, col=1)
    fig.add_scatter(mode="lines", line=dict(width=3), name="selected rate", row=1, col=1)
    for method in methods:
        fig.add_scatter(x=table[method]["lrs"], y=[v if math.isfinite(v) else None for v in table[method]["val_loss"]],
                        mode="lines+markers", name=method, row=1, col=2)
    fig.add_scatter(mode="markers", marker=dict(size=16, symbol="circle-open", line=dict(width=3)),
                    name="selected", row=1, col=2)
    rates = sorted({lr for entry in table.values() for lr in entry["lrs"]})
    fig.update_xaxes(type="log", title_text="learning rate", tickvals=rates, ticktext=[f"{lr:g}" for lr in rates],
                     row=1, col=2)
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=1)

    shown = {"method": methods[0]}

    def update(values):
        entry = table[values["method"]]
        if shown["method"] != values["method"]:  # another method: offer its rates, keeping the rate if it has it
            shown["method"] = values["method"]
            keep = values["lr"] if values["lr"] in entry["lrs"] else entry["best_lr"] or entry["lrs"][0]
            controls["lr"].options = [(f"{lr:g}", lr) for lr in entry["lrs"]]
            controls["lr"].value = keep
        lr = controls["lr"].value
        index = entry["lrs"].index(lr)
        for i in range(curve_traces):
            curve = entry["curves"][i] if i < len(entry["curves"]) else []
            _trace(fig, f"rate {i}").update(x=list(range(1, len(curve) + 1)), y=curve)
        selected = entry["curves"][index]
        _trace(fig, "selected rate").update(x=list(range(1, len(selected) + 1)), y=selected)
        loss = entry["val_loss"][index]
        _trace(fig, "selected").update(x=[lr], y=[loss if math.isfinite(loss) else None])
        best = entry["best_lr"]
        return (f"<b>{values['method']}</b> at learning rate {lr:g}: validation loss {loss:.3f}; "
                f"best rate for {values['method']} in this sweep: {best:g}" if best is not None else
                f"<b>{values['method']}</b>: every run in the sweep diverged")

    return Explorer("learning-rate explorer", controls, fig, update)


def quantization_explorer(weights: dict[str, torch.Tensor], blocksizes=(16, 32, 64, 128, 256, 1024, 4096)) -> Explorer:
    """Pick a weight matrix, a 4-bit codebook and a block size: where the codebook's 16 levels fall
    among the block-scaled weights, and the error of each codebook at each block size."""
    if not weights:
        raise ValueError("quantization_explorer needs at least one weight")
    controls = {"weight": widgets.Dropdown(options=list(weights), description="weight"),
                "codebook": widgets.Dropdown(options=list(CODEBOOKS), value="NF4", description="codebook"),
                "blocksize": widgets.SelectionSlider(options=list(blocksizes), value=64 if 64 in blocksizes else blocksizes[0],
                                                     description="block size")}
    fig = _figure("weights ÷ their block's absmax, and the 16 levels", "relative error of the round trip")
    fig.add_bar(name="weights (histogram)", marker_color="lightsteelblue", row=1, col=1)
    fig.add_scatter(mode="markers", marker=dict(symbol="line-ns-open", size=24, line=dict(width=2)), name="levels",
                    row=1, col=1)
    for name in CODEBOOKS:
        fig.add_scatter(mode="lines+markers", name=name, row=1, col=2)
    fig.add_scatter(mode="markers", marker=dict(size=16, symbol="circle-open", line=dict(width=3)), name="selected",
                    row=1, col=2)
    fig.update_xaxes(type="log", title_text="block size", tickvals=list(blocksizes), row=1, col=2)
    fig.update_xaxes(range=[-1.05, 1.05], row=1, col=1)
    errors_cache: dict[str, dict] = {}

    def update(values):
        weight = weights[values["weight"]]
        if values["weight"] not in errors_cache:
            errors_cache[values["weight"]] = compute.quantization_errors({values["weight"]: weight},
                                                                         blocksizes=blocksizes)
        errors = errors_cache[values["weight"]]
        centers, shares = compute.block_histogram(weight, values["blocksize"])
        _trace(fig, "weights (histogram)").update(x=centers, y=shares)
        levels = CODEBOOKS[values["codebook"]]().tolist()
        _trace(fig, "levels").update(x=levels, y=[0.0] * len(levels))
        for name in CODEBOOKS:
            _trace(fig, name).update(x=list(blocksizes), y=[errors[name][b] for b in blocksizes])
        error = errors[values["codebook"]][values["blocksize"]]
        _trace(fig, "selected").update(x=[values["blocksize"]], y=[error])
        others = ", ".join(f"{n} {errors[n][values['blocksize']]:.4f}" for n in CODEBOOKS if n != values["codebook"])
        return (f"<b>{values['weight']}</b>, {values['codebook']}, blocks of {values['blocksize']}: relative error "
                f"{error:.4f} (at this block size: {others})")

    return Explorer("quantization explorer", controls, fig, update)


def memory_explorer(models=None, seqs=(256, 512, 1024, 2048, 4096, 8192)) -> Explorer:
    """Pick a model, a method and a training setup: where the memory goes, the peak, and whether it fits a GPU."""
    from peftlab import memory

    models = models or memory.KNOWN_SHAPES
    if not models:
        raise ValueError("memory_explorer needs at least one model shape")
    controls = {"model": widgets.Dropdown(options=list(models), description="model"),
                "method": widgets.Dropdown(options=list(memory.METHOD_MEMORY), value=QLORA, description="method"),
                "seq": widgets.SelectionSlider(options=list(seqs), value=2048 if 2048 in seqs else seqs[0],
                                               description="sequence"),
                "batch": widgets.IntSlider(value=1, min=1, max=16, description="batch"),
                "checkpointing": widgets.Checkbox(value=False, description="gradient checkpointing"),
                "optimizer": widgets.Dropdown(options=list(memory.OPTIMIZERS), description="optimizer"),
                "recipe": widgets.Dropdown(options=list(memory.RECIPES), description="recipe"),
                "dtype": widgets.Dropdown(options=list(memory.DTYPE_BYTES), description="dtype"),
                "gpu": widgets.Dropdown(options=[(f"{g} GB", g) for g in memory.GPUS_GB], value=24, description="GPU")}
    fig = _figure("where the memory goes (GB)", "peak vs sequence length (GB)")
    fig.add_bar(orientation="h", name="parts", row=1, col=1, showlegend=False)
    for method in (FULL_FINE_TUNING, LORA, QLORA):
        fig.add_scatter(mode="lines+markers", name=method, row=1, col=2)
    fig.add_scatter(mode="lines", line=dict(dash="dot", color="red"), name="GPU", row=1, col=2)
    fig.update_xaxes(type="log", title_text="sequence length", tickvals=list(seqs), row=1, col=2)
    fig.update_yaxes(type="log", tickvals=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000], row=1, col=2)

    def update(values):
        shape = models[values["model"]]
        setup = dict(batch=values["batch"], gradient_checkpointing=values["checkpointing"],
                     optimizer=values["optimizer"], dtype=values["dtype"], recipe=values["recipe"])
        try:
            result = memory.training_memory(shape, values["method"], seq=values["seq"], **setup)
        except ValueError as error:  # a recipe that does not apply to the method, or fixes the dtype
            return f"<b>Not counted:</b> {error}"
        parts = {k: v / memory.GB for k, v in result["parts"].items() if v > 0}
        _trace(fig, "parts").update(y=list(parts), x=[round(v, 3) for v in parts.values()])
        for method in (FULL_FINE_TUNING, LORA, QLORA):
            recipe_methods = memory.RECIPES[values["recipe"]].methods
            counted = recipe_methods is None or method in recipe_methods
            _trace(fig, method).update(
                x=list(seqs) if counted else [],
                y=[round(memory.training_memory(shape, method, seq=s, **setup)["peak"] / memory.GB, 2)
                   for s in seqs] if counted else [])
        _trace(fig, "GPU").update(x=[seqs[0], seqs[-1]], y=[values["gpu"]] * 2)
        peak = result["peak"] / memory.GB
        verdict = "fits" if peak <= values["gpu"] else "does not fit"
        checked = ("measured on a GPU (estimate within 10%)" if result["measured"] else
                   "<b>never measured on a GPU</b>: counted by the same rules, unchecked")
        return (f"<b>{values['model']}</b>, {values['method']}, {values['recipe']}: estimated peak <b>{peak:.1f} GB</b> — "
                f"{verdict} a {values['gpu']} GB GPU (largest part: {result['dominant']}; the CUDA context comes on top). "
                f"This combination was {checked}.")

    return Explorer("memory explorer", controls, fig, update)
