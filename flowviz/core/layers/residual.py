"""Residual layers x = z + g(z): planar, radial, Sylvester and i-ResNet.

Each constrains g so the map stays invertible. Radial has a closed-form inverse (a quadratic in the
radius); planar and Sylvester reduce to monotone scalar equations solved by safeguarded Newton; i-ResNet
inverts by fixed-point iteration, since its g is a contraction.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowviz.core.layers.base import (
    Handle,
    HandleValue,
    IterativeInverse,
    Layer,
    LayerInfo,
    as_pair,
    register,
    softplus_inverse,
)
from flowviz.core.layers.linear import rotation_matrix
from flowviz.core.limits import LIMITS
from flowviz.core.settings import Setting


def solve_tanh_equation(target: Tensor, c: Tensor, k: Tensor, d: Tensor) -> Tensor:
    """Solve v + c * tanh(k v + d) = target for v, elementwise, when c * k >= -1.

    The left side is then non-decreasing in v, and since |tanh| <= 1 the root lies in
    [target - |c|, target + |c|]. In float64: plain Newton steps from v = t - c tanh(T / (1 + ck))
    (T = kt + d; the root's form both near T = 0 and far out) settle almost every point in 2-4
    steps; the few they do not (large |ck|, where Newton on tanh can cycle, or ck near -1, where f'
    vanishes at the root) go on with the safeguarded solver. Bisection alone needed 64 iterations.

    Example:
        >>> t = torch.tensor([0.0, 2.0, -9.0, 0.5])
        >>> v = solve_tanh_equation(t, torch.tensor(-1.0), torch.tensor(1.0), torch.tensor(0.0))
        >>> bool((v - torch.tanh(v) - t).abs().max() < 1e-6)
        True
    """
    t, c, k, d = (a.double() for a in (target, c, k, d))
    if not t.numel():
        return target.clone()
    t, c, k, d = torch.broadcast_tensors(t, c, k, d)  # views: nothing is copied
    ck = c * k
    lo, hi = t - c.abs(), t + c.abs()
    tolerance = 1e-12 * (1 + float(t.abs().max()))
    v = torch.maximum(torch.minimum(t - c * _tanh((k * t + d) / (1 + ck).clamp_min(0.05)), hi), lo)
    for _ in range(NEWTON_STEPS):
        f, th = _tanh_residual(t, c, k, d, v)
        if float(f.abs().max()) <= tolerance:  # (a NaN compares False)
            return v.to(target.dtype)
        v = torch.maximum(torch.minimum(v - f / torch.addcmul(1 + ck, ck, th * th, value=-1), hi), lo)
    f, _ = _tanh_residual(t, c, k, d, v)
    unsettled = (~(f.reshape(-1).abs() <= tolerance)).nonzero().squeeze(1)
    if len(unsettled):
        v = v.reshape(-1)
        picked = (a.reshape(-1)[unsettled] for a in (t, c, k, d, v, lo, hi))
        v[unsettled] = _rtsafe_tanh(*picked, tolerance)
        v = v.view(t.shape)
    return v.to(target.dtype)


NEWTON_STEPS = 4  # plain Newton steps before the safeguarded solver takes the points left over


def _tanh_residual(t: Tensor, c: Tensor, k: Tensor, d: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """f(v) = v + c tanh(kv + d) - t, and the tanh (f' = 1 + ck (1 - tanh²) needs it)."""
    th = _tanh(torch.addcmul(d, k, v))
    return torch.addcmul(v - t, c, th), th


def _tanh(u: Tensor) -> Tensor:
    """tanh(u), as 2σ(2u) - 1 on a CPU: within 4e-16 of torch.tanh in float64 (absolute; the
    solver's tolerance is 1e-12) and a third of its time there, where torch's float64 tanh is not
    vectorised (16,384 values on one thread: 102 against 37 µs). Other devices take tanh itself.

    Example:
        >>> u = torch.linspace(-30, 30, 10_001, dtype=torch.float64)
        >>> bool((_tanh(u) - torch.tanh(u)).abs().max() < 1e-15)
        True
    """
    if u.device.type != "cpu":
        return torch.tanh(u)
    return torch.sigmoid(u * 2).mul_(2).sub_(1)


def _rtsafe_tanh(t: Tensor, c: Tensor, k: Tensor, d: Tensor, v: Tensor, lo: Tensor, hi: Tensor,
                 tolerance: float, iterations: int = 200) -> Tensor:
    """Safeguarded Newton for v + c tanh(kv + d) = t on the bracket [lo, hi] (Press et al.,
    Numerical Recipes, `rtsafe`): each iteration narrows the bracket by the sign of f and takes the
    Newton step unless it leaves the bracket or fails to halve the previous step, where it bisects.
    The selects are arithmetic (min, max, lerp): a tenth of `torch.where`'s cost on a CPU."""
    ck = c * k
    v = torch.where(torch.isfinite(v), v, 0.5 * (lo + hi))
    last = hi - lo  # the previous step's length
    for _ in range(iterations):
        f, th = _tanh_residual(t, c, k, d, v)
        if float(f.abs().max()) <= tolerance:
            break
        # f > 0 puts v above the root, f < 0 below it
        hi = torch.minimum(hi, v + torch.relu(-f) * 1e300)
        lo = torch.maximum(lo, v - torch.relu(f) * 1e300)
        dx = f / torch.addcmul(1 + ck, ck, th * th, value=-1)  # f' = 1 + ck (1 - tanh²) >= 0
        step = v - dx
        inside = torch.maximum(torch.minimum(step, hi), lo)
        # 1 where Newton left the bracket or did not halve the last step (steps under 1e-10 always
        # count as halving: they are rounding, and bisecting there would throw the root away)
        bisect = torch.sign((step - inside).abs() + torch.relu(2 * dx.abs() - last - 1e-10))
        new = torch.lerp(inside, 0.5 * (lo + hi), bisect)
        last = (new - v).abs()
        v = new
    return v


@register(
    LayerInfo(
        name="planar",
        title="Planar flow",
        description="Pushes the plane along u, by an amount that varies across lines w·z + b = const: contracts or expands around one line.",
        reference="Rezende & Mohamed (2015), Variational Inference with Normalizing Flows, arXiv:1505.05770",
        tex_map=r"x = z + u\,\tanh(w^\top z + b)",
        tex_log_det=r"\ln\left|1 + (1 - \tanh^2(w^\top z + b))\, w^\top u\right|",
        iterative_inverse=True,
        handles=(
            Handle("anchor", "point", "the line w·z + b = 0", line_normal="w", mark="w·z + b = 0",
                   doc="drag it to move the line (its point nearest 0)"),
            Handle("w", "vector", "w, normal to the line", origin="anchor",
                   doc="turns the line; its length sets how sharp the tanh step across it is"),
            Handle("u", "vector", "u, the push", origin="anchor",
                   doc="where and how far the plane is pushed; kept where wᵀu > −1, so the layer stays invertible"),
        ),
    )
)
class Planar(IterativeInverse):
    """x = z + û tanh(wᵀz + b), with û chosen so wᵀû > -1 (invertibility, Rezende & Mohamed A.1)."""

    def __init__(self):
        super().__init__()
        self.u = nn.Parameter(torch.randn(2) * 0.5)
        self.w = nn.Parameter(torch.randn(2) * 0.5)
        self.b = nn.Parameter(torch.zeros(()))

    def u_hat(self) -> Tensor:
        wu = self.w @ self.u
        return self.u + (F.softplus(wu) - 1 - wu) * self.w / (self.w @ self.w)

    MIN_W = 0.05  # a shorter w has no line to speak of (and divides by |w|²)
    MIN_WU = -0.95  # wᵀû > -1 keeps it invertible; a hand-set u stops a little short of that

    @torch.no_grad()
    def handles(self) -> dict[str, HandleValue]:
        w, b = self.w.detach().double(), float(self.b.detach())
        anchor = -b * w / (w @ w)
        return {"anchor": as_pair(anchor), "w": as_pair(w), "u": as_pair(self.u_hat().detach())}

    def _set_handles(self, values: dict[str, HandleValue]) -> None:
        w = torch.tensor(values["w"], dtype=torch.float64)
        if w.norm() < self.MIN_W:
            w = w / w.norm().clamp_min(1e-12) * self.MIN_W if w.norm() > 0 else torch.tensor([self.MIN_W, 0.0])
        u = torch.tensor(values["u"], dtype=torch.float64)
        wu = float(w @ u)
        if wu < self.MIN_WU:  # move u along w until wᵀu is back in range
            u = u + (self.MIN_WU - wu) * w / (w @ w)
            wu = self.MIN_WU
        # u_hat(u_raw) = u exactly for u_raw = u + c w with softplus(wᵀu_raw) = 1 + wᵀu.
        wu_raw = softplus_inverse(1 + wu)
        u_raw = u + (wu_raw - wu) * w / (w @ w)
        anchor = torch.tensor(values["anchor"], dtype=torch.float64)
        self.w.copy_(w)
        self.u.copy_(u_raw)
        self.b.copy_(-(w @ anchor))

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        u = self.u_hat()
        h = torch.tanh(z @ self.w + self.b)
        x = z + h[:, None] * u
        return x, torch.log1p((1 - h**2) * (self.w @ u))

    def _solve(self, x: Tensor) -> Tensor:
        u = self.u_hat()
        wu = self.w @ u
        # With a = wᵀz + b:  a + (wᵀû) tanh(a) = wᵀx + b.
        a = solve_tanh_equation(x @ self.w + self.b, wu, torch.ones_like(wu), torch.zeros_like(wu))
        return x - torch.tanh(a)[:, None] * u


@register(
    LayerInfo(
        name="radial",
        title="Radial flow",
        description="Pulls points towards (or pushes them away from) a learned centre, most strongly nearby.",
        reference="Rezende & Mohamed (2015), Variational Inference with Normalizing Flows, arXiv:1505.05770",
        tex_map=r"x = z + \beta h(r)\,(z - z_0),\; h = \tfrac{1}{\alpha + r}",
        tex_log_det=r"\ln(1 + \beta h) + \ln(1 + \beta h + \beta h'(r)\, r)",
        handles=(
            Handle("center", "point", "the centre z₀", mark="z₀", doc="drag it: the bump or dip moves with it"),
            Handle("alpha", "number", "α, the reach", low=0.01, high=10.0, log_scale=True,
                   doc="how far from the centre the pull reaches (small: sharp and local)"),
            Handle("beta", "number", "β, the pull (−) or push (+)", low=-10.0, high=10.0,
                   doc="negative pulls points towards the centre (a bump), positive pushes them away; kept ≥ −α"),
        ),
    )
)
class Radial(Layer):
    """x = z + β (z - z0) / (α + r), r = |z - z0|, α > 0, β >= -α (invertibility)."""

    def __init__(self):
        super().__init__()
        self.center = nn.Parameter(torch.randn(2))
        self.alpha_raw = nn.Parameter(torch.randn(()))
        self.beta_raw = nn.Parameter(torch.randn(()))

    def alpha_beta(self) -> tuple[Tensor, Tensor]:
        alpha = F.softplus(self.alpha_raw)
        return alpha, -alpha + F.softplus(self.beta_raw)

    @torch.no_grad()
    def handles(self) -> dict[str, HandleValue]:
        alpha, beta = self.alpha_beta()
        return {"center": as_pair(self.center.detach()), "alpha": float(alpha), "beta": float(beta)}

    def _set_handles(self, values: dict[str, HandleValue]) -> None:
        alpha = float(values["alpha"])
        beta = max(float(values["beta"]), -alpha * 0.99)  # β ≥ −α keeps it invertible
        self.center.copy_(torch.tensor(values["center"]))
        self.alpha_raw.fill_(softplus_inverse(alpha))
        self.beta_raw.fill_(softplus_inverse(alpha + beta))

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        alpha, beta = self.alpha_beta()
        diff = z - self.center
        r = diff.norm(dim=-1)
        bh = beta / (alpha + r)
        x = z + bh[:, None] * diff
        ladj = torch.log1p(bh) + torch.log1p(beta * alpha / (alpha + r) ** 2)
        return x, ladj

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        alpha, beta = self.alpha_beta()
        diff = x - self.center
        rho = diff.norm(dim=-1)
        # |x - z0| = r (1 + β / (α + r))  <=>  r² + (α + β - ρ) r - α ρ = 0; take the root r >= 0,
        # in the form that avoids cancellation.
        p = alpha + beta - rho
        root = torch.sqrt(p**2 + 4 * alpha * rho)
        r = torch.where(p >= 0, 2 * alpha * rho / (p + root).clamp_min(1e-30), (root - p) / 2)
        bh = beta / (alpha + r)
        z = self.center + diff / (1 + bh)[:, None]
        ladj = torch.log1p(bh) + torch.log1p(beta * alpha / (alpha + r) ** 2)
        return z, -ladj


@register(
    LayerInfo(
        name="sylvester",
        title="Sylvester flow",
        description="A full-rank generalisation of planar: x = z + Q R tanh(R̃ Qᵀ z + b), Q a rotation, R and R̃ triangular.",
        reference="van den Berg, Hasenclever, Tomczak & Welling (2018), Sylvester Normalizing Flows for Variational Inference, arXiv:1803.05649",
        tex_map=r"x = z + Q R \tanh(\tilde R Q^\top z + b)",
        tex_log_det=r"\ln\left|\det\!\left(I + \operatorname{diag}(\tanh'(\cdot))\, \tilde R R\right)\right|",
        iterative_inverse=True,
    )
)
class Sylvester(IterativeInverse):
    """Orthogonal Sylvester flow in 2-D. Diagonals of R and R̃ pass through tanh, so
    r_ii r̃_ii > -1 and ln|det J| = Σ ln(1 + tanh'(·)_i r_ii r̃_ii) is finite (paper, Sec. 3)."""

    def __init__(self):
        super().__init__()
        self.angle = nn.Parameter(torch.rand(()) * 2 * math.pi)
        self.r = nn.Parameter(torch.randn(3) * 0.5)  # r11, r12, r22 (before tanh on the diagonal)
        self.r_tilde = nn.Parameter(torch.randn(3) * 0.5)
        self.b = nn.Parameter(torch.zeros(2))

    def _triangular(self) -> tuple[Tensor, Tensor]:
        def upper(v: Tensor) -> Tensor:
            zero = torch.zeros_like(v[0])
            return torch.stack([torch.stack([v[0].tanh(), v[1]]), torch.stack([zero, v[2].tanh()])])

        return upper(self.r), upper(self.r_tilde)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        q = rotation_matrix(self.angle)
        r, rt = self._triangular()
        pre = z @ q @ rt.T + self.b  # R̃ Qᵀ z + b, row-wise
        h = torch.tanh(pre)
        x = z + h @ r.T @ q.T
        ladj = torch.log1p((1 - h**2) * (r.diagonal() * rt.diagonal())).sum(-1)
        return x, ladj

    def _solve(self, x: Tensor) -> Tensor:
        q = rotation_matrix(self.angle)
        r, rt = self._triangular()
        u = x @ q  # Qᵀ x = v + R tanh(R̃ v + b), v = Qᵀ z; triangular, so solve v2 then v1.
        v2 = solve_tanh_equation(u[:, 1], r[1, 1], rt[1, 1], self.b[1])
        known = r[0, 1] * torch.tanh(rt[1, 1] * v2 + self.b[1])
        v1 = solve_tanh_equation(u[:, 0] - known, r[0, 0], rt[0, 0], rt[0, 1] * v2 + self.b[0])
        return torch.stack([v1, v2], dim=1) @ q.T


@register(
    LayerInfo(
        name="iresnet",
        title="i-ResNet block",
        description="x = z + g(z) with g a spectrally normalised MLP of Lipschitz constant < 1; "
        "inverted by fixed-point iteration (finished by Newton steps); exact 2-D log-det from the Jacobian.",
        reference="Behrmann, Grathwohl, Chen, Duvenaud & Jacobsen (2019), Invertible Residual Networks, arXiv:1811.00995",
        tex_map=r"x = z + g(z),\; \operatorname{Lip}(g) < 1",
        tex_log_det=r"\ln\det\!\left(I + \partial g / \partial z\right)",
        settings=(
            Setting("hidden", "int", 32, low=4, high=LIMITS.max_hidden_width, doc="units per hidden layer"),
            Setting("depth", "int", 2, low=1, high=LIMITS.max_hidden_layers, doc="hidden layers"),
            Setting("lipschitz", "float", 0.9, low=0.1, high=0.99, doc="bound on Lip(g); nearer 1 is more expressive and slower to invert"),
        ),
        iterative_inverse=True,
    )
)
class IResNet(IterativeInverse):
    tolerance = 1e-6
    max_iterations = 200
    newton_from = 1e-3
    newton_steps = 8

    def __init__(self, hidden: int = 32, depth: int = 2, lipschitz: float = 0.9):
        super().__init__()
        self.lipschitz = lipschitz
        sizes = [2] + [hidden] * depth + [2]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))

    def _weights(self) -> list[Tensor]:
        """Exact spectral normalisation: each W has spectral norm <= 1; g is scaled by `lipschitz`."""
        out = []
        for linear in self.linears:
            sigma = torch.linalg.matrix_norm(linear.weight, ord=2)
            out.append(linear.weight / torch.clamp(sigma, min=1.0))
        return out

    def _g(self, z: Tensor, jacobian: bool) -> tuple[Tensor, Tensor | None]:
        """g(z) and, when asked, its per-point Jacobian (N, 2, 2) by forward-mode chain rule."""
        h = z
        jac = torch.eye(2, dtype=z.dtype, device=z.device).expand(z.shape[0], 2, 2) if jacobian else None
        last = len(self.linears) - 1
        for i, (linear, w) in enumerate(zip(self.linears, self._weights())):
            h = F.linear(h, w, linear.bias)
            if jacobian:
                jac = torch.einsum("ij,njk->nik", w, jac)
            if i < last:
                if jacobian:
                    jac = torch.where(h > 0, 1.0, h.exp())[:, :, None] * jac  # ELU'
                h = F.elu(h)
        return self.lipschitz * h, (self.lipschitz * jac if jacobian else None)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        g, jac_g = self._g(z, jacobian=True)
        m = jac_g + torch.eye(2, dtype=z.dtype, device=z.device)
        det = m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]
        return z + g, det.abs().log()

    def _solve(self, x: Tensor) -> Tensor:
        # Banach iteration z <- x - g(z) converges at rate Lip(g); near the root a few Newton
        # steps finish the job, which matters when Lip(g) is close to 1.
        z = x.clone()
        for _ in range(self.max_iterations):
            previous, z = z, x - self._g(z, jacobian=False)[0]
            if (z - previous).abs().max() < self.newton_from:
                break
        for _ in range(self.newton_steps):
            residual = z + self._g(z, jacobian=False)[0] - x
            if residual.abs().max() < (1e-12 if z.dtype == torch.float64 else self.tolerance):
                break
            z = z - torch.linalg.solve(self._jacobian(z), residual.unsqueeze(-1)).squeeze(-1)
        return z

    def _jacobian(self, z: Tensor) -> Tensor:
        with torch.no_grad():
            _, jac_g = self._g(z, jacobian=True)
        return jac_g + torch.eye(2, dtype=z.dtype, device=z.device)
