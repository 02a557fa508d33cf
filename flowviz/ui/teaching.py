r"""Words and formulas for the classroom: the change-of-variables formula of the current stack, the
ledger of one followed point, and what one training step does.

Everything here is text built from the spec and the core's numbers (no Panel, no Bokeh), so it can be
tested as plain strings.

Example:
    >>> tex = formula_tex(["affine_coupling", "swap"])
    >>> tex.startswith(r"\begin{array}{l}"), r"x_b = z_b\, e^{s(z_a)} + t(z_a)" in tex
    (True, True)
"""

from __future__ import annotations

import html
import math

from flowviz.core.layers import LAYERS
from flowviz.core.ledger import Ledger
from flowviz.core.spec import ExperimentSpec

# For each layer type: the map x = f(z) and its ln|det J|, in the notation of the layer's paper.


def formula_tex(layer_types: list[str], ledger: Ledger | None = None) -> str:
    """The change-of-variables formula for a stack of active layers (base side first), each layer
    type's map and ln|det J| once (from its registry entry), and, for a followed point, the same sum
    with its numbers."""
    depth = len(layer_types)
    lines = [(r"\displaystyle \ln q_K(z_K) = \ln q_0(z_0) - \sum_{k=1}^{K} \ln\left|\det \frac{\partial f_k}{\partial z_{k-1}}\right|"
             rf"\qquad (K = {depth})")]
    seen: dict[str, list[int]] = {}
    for k, kind in enumerate(layer_types, start=1):
        seen.setdefault(kind, []).append(k)
    for kind, depths in seen.items():
        info = LAYERS[kind].info
        where = ", ".join(str(k) for k in depths[:6]) + (r", \dots" if len(depths) > 6 else "")
        lines.append(rf"\textbf{{{_tex_text(info.title)}}}\;(k = {where}):\quad {info.tex_map},\quad"
                     rf" \ln|\det J| = {info.tex_log_det}")
    if "cnf" in seen:
        lines.append(r"\text{Continuous time:}\quad \ln q_1(x(1)) = \ln q_0(x(0)) - \int_0^1 \operatorname{tr}"
                     r"\frac{\partial v}{\partial x}(x(t), t)\,dt\qquad \text{(each solver step's exact "
                     r"}\ln\det(I + h\,\partial\Phi/\partial x)\text{ sums to it up to the solver's error)}")
        if ledger is not None and ledger.continuous_gap is not None:
            lines.append(rf"\text{{At the followed point: exact sum}} - \int \operatorname{{tr}}\,dt = "
                         rf"{_scientific(ledger.continuous_gap)}\text{{ nats}}")
    if ledger is not None:
        terms = " ".join(f"{'-' if row.log_det >= 0 else '+'} {abs(row.log_det):.4f}" for row in ledger.rows[1:])
        if depth > 8:
            terms = f"- {ledger.log_det_sum:.4f}" if ledger.log_det_sum >= 0 else f"+ {-ledger.log_det_sum:.4f}"
            terms += rf"\;(\text{{sum of {depth} terms}})"
        lines.append(rf"\text{{At the followed point:}}\quad {_num(ledger.log_q_sum)} = {_num(ledger.log_q0)} {terms}")
    return r"\begin{array}{l}" + r" \\[6pt] ".join(lines) + r"\end{array}"


def _tex_text(text: str) -> str:
    return "".join("\\" + c if c in "#$%&_{}" else c for c in text.replace("\\", "/").replace("~", "-").replace("^", ""))


def _scientific(value: float) -> str:
    """+7.47e-02 as TeX: +7.47 × 10⁻²."""
    mantissa, exponent = f"{value:+.2e}".split("e")
    return rf"{mantissa} \times 10^{{{int(exponent)}}}"


def _num(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else (r"-\infty" if value < 0 else r"\text{NaN}")


def ledger_html(ledger: Ledger) -> str:
    """The ledger as an HTML table: one row per depth (a continuous flow's solver steps indented
    under it), then the sum beside the direct value."""
    picked = "the base" if ledger.picked_depth == 0 else f"depth k = {ledger.picked_depth}"
    head = (f"<p>Followed from {picked}, at ({ledger.picked[0]:.3f}, {ledger.picked[1]:.3f}). "
            "Every row is computed in float64 on a copy of the current weights.</p>")
    rows = []
    previous = ledger.log_q0
    for row in ledger.rows:
        name = "base q<sub>0</sub>" if row.depth == 0 else html.escape(row.title)
        mark = " class='fv-picked'" if row.depth == ledger.picked_depth else ""
        log_det = "" if row.depth == 0 else f"{row.log_det:+.4f}"
        rows.append(f"<tr{mark}><td>{row.depth}</td><td>{name}</td>"
                    f"<td>({row.point[0]:.3f}, {row.point[1]:.3f})</td><td>{log_det}</td><td>{_plain(row.log_q)}</td></tr>")
        running = previous
        for step in row.steps:
            running -= step.log_det
            rows.append(f"<tr class='fv-step'><td></td><td>↳ solver step t = {step.t0:.3g} → {step.t1:.3g}; "
                        f"∫ tr ∂v/∂x dt ≈ {step.trace:+.4f}</td><td>({step.point[0]:.3f}, {step.point[1]:.3f})</td>"
                        f"<td>{step.log_det:+.4f}</td><td>{_plain(running)}</td></tr>")
        previous = row.log_q
    gap = ledger.agreement
    verdict = "agree" if gap < 1e-6 or not math.isfinite(ledger.log_q_direct) else "differ"
    foot = (
        f"<tr class='fv-sum'><td colspan='3'>ln q<sub>0</sub>(z<sub>0</sub>) − Σ<sub>k</sub> ln|det J<sub>k</sub>|"
        f" = {_plain(ledger.log_q0)} − ({ledger.log_det_sum:+.4f})</td><td></td><td>{_plain(ledger.log_q_sum)}</td></tr>"
        f"<tr class='fv-sum'><td colspan='3'>ln q<sub>K</sub>(z<sub>K</sub>) evaluated directly "
        f"(inverse chain from z<sub>K</sub>)</td><td></td><td>{_plain(ledger.log_q_direct)}</td></tr>"
        f"<tr class='fv-sum'><td colspan='3'>they {verdict}: |difference|</td><td></td>"
        f"<td id='fv-ledger-gap'>{gap:.1e} nats</td></tr>"
    )
    if ledger.continuous_gap is not None:
        foot += ("<tr class='fv-sum'><td colspan='3'>continuous identity: Σ exact ln|det J| of the solver steps − "
                 "∫ tr ∂v/∂x dt by the solver's quadrature (the solver's error; every view uses the exact sum)</td>"
                 f"<td></td><td id='fv-ledger-trace-gap'>{ledger.continuous_gap:+.1e} nats</td></tr>")
    return (head + "<table class='fv-ledger'><thead><tr><th>k</th><th>layer</th><th>z<sub>k</sub></th>"
            "<th>ln|det J<sub>k</sub>|</th><th>ln q<sub>k</sub>(z<sub>k</sub>)</th></tr></thead><tbody>"
            + "".join(rows) + foot + "</tbody></table>")


def _plain(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else ("−∞" if value < 0 else "NaN")


LEDGER_CSS = """
table.fv-ledger { border-collapse: collapse; font-variant-numeric: tabular-nums; width: 100%; }
table.fv-ledger th, table.fv-ledger td { padding: 2px 10px; text-align: right; border-bottom: 1px solid #e3e7ee; }
table.fv-ledger td:nth-child(2), table.fv-ledger th:nth-child(2) { text-align: left; }
table.fv-ledger tr.fv-picked td { background: #fff4d6; font-weight: 600; }
table.fv-ledger tr.fv-sum td { border-bottom: none; font-weight: 600; }
table.fv-ledger tr.fv-sum td:first-child { text-align: left; }
table.fv-ledger tr.fv-step td { color: #4a5568; font-size: 0.9em; border-bottom: 1px dotted #e3e7ee; }
table.fv-ledger tr.fv-step td:nth-child(2) { padding-left: 24px; }
"""


def step_explanation(spec: ExperimentSpec, step: int, loss: float | None, grad_norm: float | None,
                     beta: float, active_layers: int) -> str:
    """What the last training step did, in order, with its numbers (HTML)."""
    training = spec.training
    n = training.batch_size
    K = active_layers
    loss_text = "–" if loss is None else f"{loss:.4f} nats"
    if training.objective == "flow_matching":
        pairs = ("paired within the batch by an optimal assignment (least total squared distance)"
                 if training.pairing == "optimal_transport" else "paired at random")
        steps = [
            f"Draw {n:,} data points x<sub>1</sub> from the target and {n:,} base points x<sub>0</sub> from q<sub>0</sub>, {pairs}.",
            ("Draw a time t ~ U[0, 1] for each pair and the point x<sub>t</sub> = (1 − t) x<sub>0</sub> + t x<sub>1</sub> "
            "on the straight path between them."),
            ("Ask the continuous flow's network for its velocity v(x<sub>t</sub>, t); the path's own velocity is "
            "x<sub>1</sub> − x<sub>0</sub>. No ODE is solved and no log-det is computed."),
            (f"Loss = mean ‖v(x<sub>t</sub>, t) − (x<sub>1</sub> − x<sub>0</sub>)‖² = <b>{loss_text}</b> "
            "(not a likelihood: the NLL and KL shown are the solved map's, exactly)."),
        ]
    elif training.objective == "forward_kl":
        steps = [
            f"Draw a batch of {n:,} points x from the target p.",
            (f"Run each x backwards through the {K} layers, f<sub>K</sub><sup>−1</sup> … f<sub>1</sub><sup>−1</sup>,"
            " to its base point z<sub>0</sub>, adding up every layer's ln|det J<sub>k</sub>| on the way."),
            "Score each point: ln q(x) = ln q<sub>0</sub>(z<sub>0</sub>) − Σ<sub>k</sub> ln|det J<sub>k</sub>|.",
            f"Loss = −mean ln q(x) (forward KL up to the target's constant entropy) = <b>{loss_text}</b>.",
        ]
    else:
        anneal = f" (annealed: β = {beta:.2f})" if beta < 1 else ""
        steps = [
            f"Draw {n:,} base points z<sub>0</sub> from q<sub>0</sub>.",
            (f"Push each forwards through the {K} layers to x = z<sub>K</sub>, adding up every layer's"
            " ln|det J<sub>k</sub>|."),
            ("ln q(x) = ln q<sub>0</sub>(z<sub>0</sub>) − Σ<sub>k</sub> ln|det J<sub>k</sub>|; the target gives its"
            " energy U(x)."),
            f"Loss = mean(ln q(x) + β U(x)){anneal} = KL(q‖p) − ln Z = <b>{loss_text}</b>.",
        ]
    clip = training.grad_clip
    norm = "" if grad_norm is None else f" Gradient norm {grad_norm:.3g}"
    if grad_norm is not None and clip > 0:
        norm += f", clipped to {clip:g}" if grad_norm > clip else f" (under the clip of {clip:g})"
    steps.append(f"Backpropagate through all of it to every weight.{norm + '.' if norm else ''}")
    steps.append(f"Adam moves every weight a little (learning rate {training.learning_rate:g}). "
                 "The views redraw from the new weights.")
    items = "".join(f"<li>{text}</li>" for text in steps)
    return f"<b>Step {step:,}: what it did</b><ol style='margin: 4px 0 0 0; padding-left: 22px'>{items}</ol>"
