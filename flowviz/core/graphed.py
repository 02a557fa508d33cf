"""A training step on a CUDA device, replayed as one CUDA graph.

A small 2-D flow's step on a GPU is bound by launching its kernels, not by running them: realnvp-moons
launched 475 kernels a step, took 11.5 ms, and kept an H200 busy for 0.9 ms of it (docs/benchmarks.md,
CUDA), slower than a CPU. Captured once as a CUDA graph ("CUDA Graphs", PyTorch documentation: whole
network capture), the forward pass, backward pass, gradient clipping and fused Adam update are then
one launch, and the step waits for the device once, to read its loss, gradient norm and finiteness.

The graph replays the kernels the eager step runs, on the same memory: the batch is copied into a
fixed input tensor, the gradients, loss and norm land in fixed tensors. It bakes in what it read when
captured: the batch size, learning rate and clipping threshold (`key`), Adam's moment tensors, and the
layers' code path. A trainer makes a new one when one of those changes, and steps eagerly where a
layer cannot be captured (one that asks the host for a value mid-step, as an iterative inverse does)
and while a layer is switched off (training.py's `Trainer._graph_fits`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from flowviz.core.adam import Adam

WARMUP = 3  # eager passes on a side stream before capture, as PyTorch's documentation does it


class GraphedStep:
    """One training step of `loss_of(batch)` (a scalar to minimise) over `parameters`, the views of
    `flat`, updated by `optimizer` (fused, over `flat`), captured on the batch's CUDA device.
    `clip` > 0 scales the gradient to that norm where it is longer (as the eager step does).

    Raises whatever capturing raised (RuntimeError, typically) where the step cannot be a graph; the
    model and optimiser are then as they were."""

    def __init__(self, loss_of: Callable[[Tensor], Tensor], parameters: list[Tensor], flat: Tensor,
                 optimizer: Adam, batch: Tensor, clip: float):
        if not optimizer.takes_one_kernel():
            raise ValueError("the optimiser does not update the weights as one vector")
        self.key = (tuple(batch.shape), optimizer.lr, clip)
        self.input = batch.clone()
        self._parameters = parameters
        self._done = torch.cuda.Event()
        # Moments made inside the capture would be zeroed again at every replay.
        self._moments = optimizer.moments()
        self._saved_moments = [moment.clone() for moment in self._moments]
        side = torch.cuda.Stream(self.input.device)
        side.wait_stream(torch.cuda.current_stream(self.input.device))
        try:
            with torch.cuda.stream(side):  # (lazy initialisation: cuBLAS's workspace, autograd's device thread)
                for _ in range(WARMUP):
                    optimizer.zero_grad()
                    loss_of(self.input).backward()
                if any(p.grad is None for p in parameters):
                    raise ValueError("a parameter gets no gradient: the step's update is not one vector")
            torch.cuda.current_stream(self.input.device).wait_stream(side)
            optimizer.zero_grad()
            self.graph = torch.cuda.CUDAGraph()
            # thread_local: a live session's rendering thread may use the device meanwhile
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                loss = loss_of(self.input)
                loss.backward()
                grad = torch.cat([p.grad.reshape(-1) for p in parameters])
                norm = torch.linalg.vector_norm(grad)
                if clip > 0:
                    grad.mul_(torch.where(norm > clip, clip / (norm + 1e-6), 1.0))
                optimizer.step(grad)
                self.report = torch.stack([loss.detach(), norm, torch.isfinite(flat).all().to(norm.dtype)])
        finally:
            self._grads = [p.grad for p in parameters]
            optimizer.zero_grad()

    def __call__(self, batch: Tensor) -> tuple[float, float, bool]:
        """Take the step on `batch`: (its loss, the gradient's norm before clipping, whether every
        weight is finite after the update). `restore_moments` undoes its update of the moments."""
        for parameter, grad in zip(self._parameters, self._grads):  # (the gradients the graph writes)
            parameter.grad = grad
        for saved, moment in zip(self._saved_moments, self._moments):
            saved.copy_(moment)
        self.input.copy_(batch)
        self.graph.replay()
        self._done.record()
        self._done.synchronize()  # (without the GIL, unlike reading the report: a live view renders meanwhile)
        loss, norm, finite = self.report.tolist()
        return loss, norm, finite == 1.0

    def restore_moments(self) -> None:
        """Adam's moments and step counts as they were before the last step."""
        for saved, moment in zip(self._saved_moments, self._moments):
            moment.copy_(saved)
