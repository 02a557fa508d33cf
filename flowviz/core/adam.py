"""Adam (Kingma & Ba 2015, arXiv:1412.6980), the update `torch.optim.Adam` makes, without its import.

Any use of `torch.optim`'s optimisers imports `torch._dynamo` on the first call (their methods are
wrapped to keep the compiler out): over a second of a cold server's first page, for a model the
app never compiles. This is the same step, one fused kernel for every parameter where torch has
one (CPU, CUDA), and its moments in the same per-parameter form, so a kept training state reads
back either way.

Example:
    >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    >>> reference = torch.nn.Parameter(w.detach().clone())
    >>> ours, torchs = Adam([w], lr=0.1), torch.optim.Adam([reference], lr=0.1, fused=True)
    >>> for _ in range(3):
    ...     for p, optimizer in ((w, ours), (reference, torchs)):
    ...         optimizer.zero_grad()
    ...         p.square().sum().backward()
    ...         optimizer.step()
    >>> torch.equal(w, reference), ours.state[w]["step"]
    (True, tensor(3.))

    Without the fused kernel, the same update to rounding:
        >>> v = torch.nn.Parameter(torch.tensor([1.0, -2.0])); plain = torch.nn.Parameter(v.detach().clone())
        >>> ours, torchs = Adam([v], lr=0.1, fused=False), torch.optim.Adam([plain], lr=0.1, foreach=False)
        >>> for _ in range(3):
        ...     for p, optimizer in ((v, ours), (plain, torchs)):
        ...         optimizer.zero_grad()
        ...         p.square().sum().backward()
        ...         optimizer.step()
        >>> torch.allclose(v, plain, rtol=0, atol=1e-6)
        True
"""

from __future__ import annotations

import torch
from torch import Tensor


def flatten(parameters: list[Tensor]) -> Tensor | None:
    """Make `parameters` views of one new vector, in their order, and return it; None (nothing
    changed) where there are none or they differ in dtype or device. A step then copies, checks
    and updates the weights as one vector: one kernel each instead of one per tensor (~50 for an
    8-layer flow), which on a CPU cost more than a small flow's arithmetic (9% of an eager step,
    23% of a compiled one). Later in-place writes (`copy_`, `load_state_dict`) keep the views.

    Example:
        >>> layer = torch.nn.Linear(2, 3)
        >>> flat = flatten(list(layer.parameters()))
        >>> flat.shape, torch.equal(flat[:6].view(3, 2), layer.weight)
        (torch.Size([9]), True)
        >>> _ = flat.zero_()
        >>> float(layer.bias.abs().sum())
        0.0
    """
    if not parameters or len({(p.dtype, p.device) for p in parameters}) != 1:
        return None
    flat = torch.cat([p.detach().reshape(-1) for p in parameters])
    offset = 0
    for parameter in parameters:
        parameter.data = flat[offset:offset + parameter.numel()].view_as(parameter)
        offset += parameter.numel()
    return flat


class Adam:
    """Adam without weight decay or AMSGrad. `state[p]` holds p's step count (a float32 scalar on
    p's device), first and second moments, as torch's Adam keeps them; `lr` may change between steps.
    `fused=False` takes the same step in separate kernels (devices without the fused one).

    `flat`: the vector `parameters` are views of (`flatten`). The moments are then views of two
    vectors like it, and a step given every gradient in one vector (`step(flat_grad)`) is one
    kernel for the whole model, as long as every parameter has taken the same number of steps."""

    def __init__(self, parameters: list[Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, fused: bool = True, flat: Tensor | None = None):
        self.parameters = list(parameters)
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.fused = fused
        self.state: dict[Tensor, dict[str, Tensor]] = {}
        self._flat = flat
        self._offsets = [0]
        for parameter in self.parameters:
            self._offsets.append(self._offsets[-1] + parameter.numel())
        self._moments: tuple[Tensor, Tensor, Tensor] | None = None  # exp_avg, exp_avg_sq, steps (flat)
        self._in_step = True  # every parameter has taken the same number of steps

    def zero_grad(self) -> None:
        for parameter in self.parameters:
            parameter.grad = None

    def reset(self) -> None:
        """Forget every moment: the next step is each parameter's first."""
        self.state.clear()
        self._moments = None
        self._in_step = True

    def load(self, moments: list[dict[str, Tensor]]) -> None:
        """Take the moments of each parameter, in order (`{}` for one that has none), as `state`
        holds them; the values are copied."""
        self.reset()
        for index, (parameter, values) in enumerate(zip(self.parameters, moments, strict=True)):
            if values:
                for key, value in self._started(index, parameter).items():
                    value.copy_(values[key])
        steps = {float(self.state[p]["step"]) if p in self.state else None for p in self.parameters}
        self._in_step = len(steps) == 1

    def takes_one_kernel(self) -> bool:
        """Whether `step(flat_grad)` updates every weight with one fused kernel (the weights are one
        vector, and every parameter has taken the same number of steps)."""
        return self._flat is not None and self.fused and self._in_step

    def moments(self) -> tuple[Tensor, Tensor, Tensor]:
        """The first moments, second moments and step counts, each one vector (made now, at step 0,
        where they are not yet): for an optimiser that `takes_one_kernel`."""
        for index, parameter in enumerate(self.parameters):
            self._started(index, parameter)
        return self._moments

    def _started(self, index: int, parameter: Tensor) -> dict[str, Tensor]:
        """p's moments, made (zero, at step 0) if it has none yet."""
        moments = self.state.get(parameter)
        if moments is not None:
            return moments
        if self._flat is None:
            moments = {"step": torch.zeros((), dtype=torch.float32, device=parameter.device),
                       "exp_avg": torch.zeros_like(parameter, memory_format=torch.preserve_format),
                       "exp_avg_sq": torch.zeros_like(parameter, memory_format=torch.preserve_format)}
        else:
            if self._moments is None:
                self._moments = (torch.zeros_like(self._flat), torch.zeros_like(self._flat),
                                 torch.zeros(len(self.parameters), dtype=torch.float32, device=self._flat.device))
            first, second, steps = self._moments
            start, end = self._offsets[index], self._offsets[index + 1]
            moments = {"step": steps[index], "exp_avg": first[start:end].view_as(parameter),
                       "exp_avg_sq": second[start:end].view_as(parameter)}
        self.state[parameter] = moments
        return moments

    @torch.no_grad()
    def step(self, flat_grad: Tensor | None = None) -> None:
        """One update of every parameter that has a gradient (a parameter's moments start at its first).
        `flat_grad`: every parameter's gradient in one vector, in order, where the caller made one."""
        beta1, beta2 = self.betas
        if flat_grad is not None and self._flat is not None and self.fused and self._in_step:
            if len(self.state) != len(self.parameters):
                for index, parameter in enumerate(self.parameters):
                    self._started(index, parameter)
            first, second, steps = self._moments
            steps.add_(1)
            torch._fused_adam_([self._flat], [flat_grad], [first], [second], [], [steps[0]], lr=self.lr,
                               beta1=beta1, beta2=beta2, weight_decay=0.0, eps=self.eps, amsgrad=False,
                               maximize=False)
            return
        params, grads, firsts, seconds, steps = [], [], [], [], []
        for index, parameter in enumerate(self.parameters):
            if parameter.grad is None:
                continue
            moments = self._started(index, parameter)
            params.append(parameter)
            grads.append(parameter.grad)
            firsts.append(moments["exp_avg"])
            seconds.append(moments["exp_avg_sq"])
            steps.append(moments["step"])
        if not params:
            return
        if len(params) != len(self.parameters):
            self._in_step = False
        torch._foreach_add_(steps, 1)
        if self.fused:
            torch._fused_adam_(params, grads, firsts, seconds, [], steps, lr=self.lr, beta1=beta1, beta2=beta2,
                               weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False)
            return
        for parameter, grad, first, second, count in zip(params, grads, firsts, seconds, steps):
            step = float(count)
            first.lerp_(grad, 1 - beta1)
            second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denominator = (second.sqrt() / (1 - beta2**step) ** 0.5).add_(self.eps)
            parameter.addcdiv_(first, denominator, value=-self.lr / (1 - beta1**step))
