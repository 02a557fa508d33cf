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


class Adam:
    """Adam without weight decay or AMSGrad. `state[p]` holds p's step count (a float32 scalar on
    p's device), first and second moments, as torch's Adam keeps them; `lr` may change between steps.
    `fused=False` takes the same step in separate kernels (devices without the fused one)."""

    def __init__(self, parameters: list[Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, fused: bool = True):
        self.parameters = list(parameters)
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.fused = fused
        self.state: dict[Tensor, dict[str, Tensor]] = {}

    def zero_grad(self) -> None:
        for parameter in self.parameters:
            parameter.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient (a parameter's moments start at its first)."""
        params, grads, firsts, seconds, steps = [], [], [], [], []
        for parameter in self.parameters:
            if parameter.grad is None:
                continue
            moments = self.state.get(parameter)
            if moments is None:
                moments = self.state[parameter] = {
                    "step": torch.zeros((), dtype=torch.float32, device=parameter.device),
                    "exp_avg": torch.zeros_like(parameter, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(parameter, memory_format=torch.preserve_format)}
            params.append(parameter)
            grads.append(parameter.grad)
            firsts.append(moments["exp_avg"])
            seconds.append(moments["exp_avg_sq"])
            steps.append(moments["step"])
        if not params:
            return
        torch._foreach_add_(steps, 1)
        beta1, beta2 = self.betas
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
