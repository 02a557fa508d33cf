"""Normalisation layers: ActNorm (data-dependent initialisation) and BatchNorm (running statistics)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowviz.core.layers.base import Handle, HandleValue, Layer, LayerInfo, as_pair, register
from flowviz.core.settings import Setting


@register(
    LayerInfo(
        name="actnorm",
        title="ActNorm",
        description="Per-coordinate scale and shift, initialised from the first training batch so that batch comes out standardised.",
        reference="Kingma & Dhariwal (2018), Glow: Generative Flow with Invertible 1x1 Convolutions, arXiv:1807.03039",
        tex_map=r"x = e^{s} \odot z + b",
        tex_log_det=r"\textstyle\sum_i s_i",
        handles=(
            Handle("shift", "point", "the shift b", mark="b", doc="where the origin goes"),
            Handle("scale_x", "number", "scale of x (e^{s₁})", low=0.05, high=20.0, log_scale=True,
                   doc="stretches (> 1) or squeezes (< 1) the plane along x"),
            Handle("scale_y", "number", "scale of y (e^{s₂})", low=0.05, high=20.0, log_scale=True,
                   doc="stretches (> 1) or squeezes (< 1) the plane along y"),
        ),
    )
)
class ActNorm(Layer):
    """x = z * exp(log_scale) + shift. The first call in training mode, in either direction,
    sets the parameters so that call's output has zero mean and unit variance per coordinate."""

    def __init__(self):
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(2))
        self.log_scale = nn.Parameter(torch.zeros(2))
        self.register_buffer("initialized", torch.tensor(False))
        # Once the buffer has read True, training calls stop reading it: on a GPU each read waits for
        # the device, and a step that waits cannot be a CUDA graph (training.py). Loading weights
        # (which may carry another value) reads it again.
        self._known_initialized = False

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._known_initialized = False
        super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def _initialize(self, batch: Tensor, inverse: bool) -> None:
        mean, std = batch.mean(0), batch.std(0).clamp_min(1e-6)
        if inverse:  # z = (x - shift) / scale: standardise x
            self.shift.copy_(mean)
            self.log_scale.copy_(std.log())
        else:  # x = z * scale + shift: standardise z
            self.log_scale.copy_(-std.log())
            self.shift.copy_(-mean / std)
        self.initialized.fill_(True)
        self._known_initialized = True

    def _maybe_initialize(self, batch: Tensor, inverse: bool) -> None:
        if not self.training or self._known_initialized:
            return
        if bool(self.initialized):
            self._known_initialized = True
        elif batch.shape[0] > 1:
            self._initialize(batch, inverse)

    @torch.no_grad()
    def handles(self) -> dict[str, HandleValue]:
        scale = self.log_scale.detach().exp()
        return {"shift": as_pair(self.shift.detach()), "scale_x": float(scale[0]), "scale_y": float(scale[1])}

    def _set_handles(self, values: dict[str, HandleValue]) -> None:
        self.shift.copy_(torch.tensor(values["shift"]))
        self.log_scale.copy_(torch.tensor([values["scale_x"], values["scale_y"]]).log())
        self.initialized.fill_(True)  # set by hand: the first training batch must not overwrite it
        self._known_initialized = True

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        self._maybe_initialize(z, inverse=False)
        return z * self.log_scale.exp() + self.shift, self.log_scale.sum().expand(z.shape[0])

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._maybe_initialize(x, inverse=True)
        return (x - self.shift) * (-self.log_scale).exp(), -self.log_scale.sum().expand(x.shape[0])


@register(
    LayerInfo(
        name="batchnorm",
        title="BatchNorm",
        description="Standardises the data-side batch (running statistics at evaluation) with a learned scale and shift. "
        "Statistics come from the data direction; under reverse-KL training it acts as a learned affine map.",
        reference="Dinh, Sohl-Dickstein & Bengio (2017), Density estimation using Real NVP, arXiv:1605.08803",
        tex_map=r"x = \mu + \sqrt{\sigma^2 + \epsilon}\; e^{-\gamma} \odot (z - \beta)",
        tex_log_det=r"\textstyle\sum_i \left(\tfrac12 \ln(\sigma_i^2 + \epsilon) - \gamma_i\right)",
        settings=(Setting("momentum", "float", 0.05, low=0.001, high=1.0, doc="running-statistics update rate"),),
    )
)
class BatchNorm(Layer):
    """Inverse (data -> base): z = (x - mean) / sqrt(var + eps) * exp(log_gamma) + beta."""

    eps = 1e-5

    def __init__(self, momentum: float = 0.05):
        super().__init__()
        self.momentum = momentum
        self.log_gamma = nn.Parameter(torch.zeros(2))
        self.beta = nn.Parameter(torch.zeros(2))
        self.register_buffer("running_mean", torch.zeros(2))
        self.register_buffer("running_var", torch.ones(2))

    def _statistics(self, x: Tensor | None) -> tuple[Tensor, Tensor]:
        if x is not None and self.training and x.shape[0] > 1:
            mean, var = x.mean(0), x.var(0, unbiased=False)
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var, self.momentum)
            return mean, var
        return self.running_mean, self.running_var

    def _ladj_inverse(self, var: Tensor, n: int) -> Tensor:
        return (self.log_gamma - 0.5 * (var + self.eps).log()).sum().expand(n)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        mean, var = self._statistics(None)
        x = (z - self.beta) * (-self.log_gamma).exp() * (var + self.eps).sqrt() + mean
        return x, -self._ladj_inverse(var, z.shape[0])

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, var = self._statistics(x)
        z = (x - mean) / (var + self.eps).sqrt() * self.log_gamma.exp() + self.beta
        return z, self._ladj_inverse(var, x.shape[0])
