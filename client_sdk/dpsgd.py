"""The DP-SGD gradient of one batch: per-example gradients clipped, summed, noised, averaged.

:class:`DPSGD` writes, into each trainable parameter's ``.grad``::

    (sum_i clip(g_i) + N(0, (noise_multiplier * max_grad_norm)^2 I)) / expected_batch_size

where ``g_i`` is example i's gradient of its squared error ``(model(x_i) - y_i)^2`` and
``clip`` scales it by :func:`privacy.clip_factors` to L2 norm at most ``max_grad_norm``;
the noise is drawn by :func:`privacy.gaussian_noise`. Opacus's ``DPOptimizer`` computes
the same quantity (with ``loss_reduction="mean"``). The privacy accounting is not here:
see :class:`privacy.DeviceAccountant` and :func:`client_sdk.training.train_locally`.

The per-example gradients, three ways, all giving the same result (tests hold them to
each other, to a hand computation and to Opacus):

``"mlp"``
    A chain of ``nn.Linear`` and ``nn.ReLU`` (an ``nn.Sequential``, or the
    :class:`~client_sdk.model.MoodModel`, which is one plus a constant) with one output:
    the forward and backward passes written out (``b = b @ W``, times the ReLU mask), no
    autograd. Autograd's bookkeeping, not arithmetic, is most of the cost of a step on
    a model this small, so this is the fast path.
``"ghost"``
    Any model whose trainable layers are all ``nn.Linear`` on ``(batch, features)``
    inputs: forward hooks record each layer's input ``a_i``, one autograd pass gives
    each layer's output gradient ``b_i``.
``"vmap"``
    Any model without cross-example layers: ``torch.func.vmap`` of ``torch.func.grad``,
    the per-example gradients materialized.

The first two use the "ghost norm" identity (Goodfellow 2015; Li et al. 2022): a linear
layer's per-example weight gradient is the outer product ``b_i a_i^T``, so its squared
norm is ``|b_i|^2 |a_i|^2`` (plus ``|b_i|^2`` for the bias) and the clipped sum is one
matrix product ``(f * b)^T a``; per-example gradients are never materialized.
``"auto"`` picks the first that fits the model.

A fresh model predicts 3.7, so with targets 4 every example's output-bias gradient is
2 * (3.7 - 4) = -0.6, its whole gradient is short of the clipping norm, and without
noise the averaged gradient is -0.6:

>>> import numpy as np, torch
>>> from client_sdk.model import create_model
>>> model = create_model(seed=0)
>>> x, y = torch.zeros(8, 43), torch.full((8,), 4.0)
>>> with DPSGD(model, max_grad_norm=1.0, noise_multiplier=0.0, expected_batch_size=8,
...            rng=np.random.default_rng(0)) as dpsgd:
...     dpsgd.gradients(x, y)
...     round(float(model.layers[-1].bias.grad), 6), dpsgd.per_example
(-0.6, 'mlp')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, Literal, TypeAlias

import numpy as np
import torch
from torch import nn

from client_sdk.errors import InvalidArgumentError
from client_sdk.model import MoodModel
from privacy import clip_factors, gaussian_noise

__all__ = ["DPSGD", "PerExample"]

PerExample: TypeAlias = Literal["auto", "mlp", "ghost", "vmap"]
_MODES: Final = ("auto", "mlp", "ghost", "vmap")

# (weight .grad view, bias .grad view) of one linear layer; None where not trained.
_Plan: TypeAlias = tuple[torch.Tensor | None, torch.Tensor | None]


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgumentError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidArgumentError(f"{name} must be positive, got {value!r}")
    return float(value)


class DPSGD:
    """Computes DP-SGD gradients of batches for ``model``; follow each with an optimizer step.

    ``expected_batch_size`` is the fixed denominator (``q * n`` under Poisson sampling
    with rate q), so a batch's size does not change the noise. ``rng`` draws the noise
    (:func:`privacy.secure_rng` on a device). ``noise_multiplier`` 0 gives clipped,
    un-noised gradients: for tests, never for a device. ``per_example`` is one of
    ``"auto"``, ``"mlp"``, ``"ghost"``, ``"vmap"`` (see the module docstring); the engine in
    use is in :attr:`per_example`. Models with BatchNorm, which mixes the examples of a
    batch, are refused, as Opacus refuses them.

    Use it as a context manager (or call :meth:`close`): while open it owns the
    parameters' ``.grad`` tensors (views into one flat buffer, so the noise is one draw
    and one addition) and, for ``"ghost"``, forward hooks on the linear layers.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        max_grad_norm: float,
        noise_multiplier: float,
        expected_batch_size: float,
        rng: np.random.Generator,
        per_example: PerExample = "auto",
    ) -> None:
        self.max_grad_norm = _check_positive("max_grad_norm", max_grad_norm)
        self.noise_multiplier = _check_positive(
            "noise_multiplier", noise_multiplier, allow_zero=True
        )
        self.expected_batch_size = _check_positive("expected_batch_size", expected_batch_size)
        if per_example not in _MODES:
            raise InvalidArgumentError(f"per_example must be one of {_MODES}, got {per_example!r}")
        _check_no_batch_mixing(model)
        self.model = model
        self._rng = rng
        # Everything is computed on gradients already divided by the expected batch size
        # B: clipping g_i / B to C / B is clipping g_i to C, and the noise std of the
        # averaged gradient is sigma * C / B.
        self._averaged_max_norm = self.max_grad_norm / self.expected_batch_size
        self._noise_std = self.noise_multiplier * self._averaged_max_norm
        self._named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        if not self._named:
            raise InvalidArgumentError("the model has no trainable parameters")
        self._parameters = [p for _, p in self._named]
        dtypes = {p.dtype for p in self._parameters}
        if len(dtypes) != 1 or not self._parameters[0].is_floating_point():
            raise InvalidArgumentError(f"the parameters must share one float dtype, got {dtypes}")
        dtype = self._parameters[0].dtype
        self._flat = torch.zeros(sum(p.numel() for p in self._parameters), dtype=dtype)
        self._noise_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        self._grads: dict[int, torch.Tensor] = {}
        offset = 0
        for parameter in self._parameters:
            view = self._flat[offset : offset + parameter.numel()].view_as(parameter)
            self._grads[id(parameter)] = parameter.grad = view
            offset += parameter.numel()

        layers = _linear_layers(model, self._parameters)
        chain = _mlp_chain(model, layers) if per_example in ("auto", "mlp") else None
        # The chain's modules, its constant output offset, and each linear layer's plan.
        self._chain: tuple[list[nn.Module], torch.Tensor | None, list[_Plan]] | None = None
        if chain is not None:
            modules, output_offset = chain
            plans = [self._plan(m) for m in modules if isinstance(m, nn.Linear)]
            self._chain = (modules, output_offset, plans)
        self._verified = False
        if per_example == "mlp" and self._chain is None:
            self.close()
            raise InvalidArgumentError("per_example='mlp' needs a chain of nn.Linear and nn.ReLU")
        if per_example == "ghost" and layers is None:
            self.close()
            raise InvalidArgumentError("per_example='ghost' needs every trainable layer nn.Linear")
        self._layers = layers if per_example in ("auto", "ghost") else None
        self._tape: _Tape | None = None
        if self._chain is None and self._layers is not None:
            self._tape = _Tape(self._layers)
        self.per_example: str = (
            "mlp" if self._chain is not None else "ghost" if self._tape is not None else "vmap"
        )

    def __enter__(self) -> DPSGD:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the hooks and hand the ``.grad`` tensors back (set to None)."""
        tape = getattr(self, "_tape", None)
        if tape is not None:
            tape.close()
            self._tape = None
        for parameter in self._parameters:
            if parameter.grad is self._grads.get(id(parameter)):
                parameter.grad = None

    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Set ``.grad`` to the noisy, clipped, averaged gradient of the batch ``(x, y)``.

        ``x`` is ``(batch, features)``, ``y`` is ``(batch,)``, both float32. An empty
        batch (Poisson sampling can draw one) gives pure noise, as it must.
        """
        if len(x) == 0:
            self._flat.zero_()
        elif not (
            (self._chain is not None and self._mlp(x, y))
            or (self._tape is not None and self._ghost(x, y))
        ):
            self._vmap(x, y)
        if self._noise_std > 0:
            noise = gaussian_noise(self._flat.numel(), std=self._noise_std, rng=self._rng)
            # Rounded to the parameters' dtype first: a float32 add is several times
            # cheaper than a mixed-precision one, and the sum is float32 either way.
            self._flat.add_(torch.from_numpy(noise.astype(self._noise_dtype, copy=False)))

    # -- the per-example engines ------------------------------------------------------

    def _mlp(self, x: torch.Tensor, y: torch.Tensor) -> bool:
        chain = self._chain
        assert chain is not None
        modules, offset, plans = chain
        with torch.no_grad():
            inputs: list[torch.Tensor] = []  # each linear layer's input
            relu_outputs: list[torch.Tensor] = []
            h = x
            for module in modules:
                if isinstance(module, nn.Linear):
                    inputs.append(h)
                    h = nn.functional.linear(h, module.weight, module.bias)
                else:
                    h = torch.relu(h)
                    relu_outputs.append(h)
            predicted = h.view(-1) if offset is None else h.view(-1) + offset
            if not self._verified and not self._verify(predicted, x):
                return False
            # d/dh of sum_i (predicted_i - y_i)^2 / B, then back through the chain.
            b = torch.sub(predicted, y).mul_(2.0 / self.expected_batch_size).unsqueeze(1)
            backprops: list[torch.Tensor] = []
            linear_left = len(inputs)
            relus = iter(reversed(relu_outputs))
            for module in reversed(modules):
                if isinstance(module, nn.Linear):
                    backprops.append(b)
                    linear_left -= 1
                    if linear_left == 0:
                        break
                    b = b.mm(module.weight)
                else:
                    b = b.mul_(next(relus) > 0)
            backprops.reverse()
            self._clip_and_sum(plans, inputs, backprops)
        return True

    def _verify(self, predicted: torch.Tensor, x: torch.Tensor) -> bool:
        """Once: the written-out forward must match the model's own, else stop using it."""
        self._verified = True
        if torch.allclose(predicted, self.model(x).reshape(-1), rtol=1e-5, atol=1e-5):
            return True
        self._chain = None
        if self._layers is not None:
            self._tape = _Tape(self._layers)
        self.per_example = "ghost" if self._tape is not None else "vmap"
        return False

    def _ghost(self, x: torch.Tensor, y: torch.Tensor) -> bool:
        tape = self._tape
        assert tape is not None
        tape.records.clear()
        tape.recording = True
        try:
            output = self.model(x)
        finally:
            tape.recording = False
        if not tape.complete(len(x)) or output.numel() != len(x):
            return False  # e.g. a layer used twice: let vmap do it
        records = tape.records
        with torch.no_grad():
            # d/d(output) of sum_i (output_i - y_i)^2 / B, pulled back by one autograd
            # pass to every linear layer's output: b_i for each layer.
            residual = torch.sub(output.detach().reshape(-1), y)
            residual = residual.mul_(2.0 / self.expected_batch_size).view(output.shape)
            backprops = torch.autograd.grad(
                output, [o for _, _, o in records], grad_outputs=residual
            )
            plans = [self._plan(module) for module, _, _ in records]
            self._clip_and_sum(plans, [a for _, a, _ in records], list(backprops))
        return True

    def _plan(self, layer: nn.Module) -> _Plan:
        bias = layer.bias if isinstance(layer.bias, torch.Tensor) else None
        return (
            self._grads.get(id(layer.weight)),
            None if bias is None else self._grads.get(id(bias)),
        )

    def _clip_and_sum(
        self, plans: Sequence[_Plan], inputs: list[torch.Tensor], backprops: list[torch.Tensor]
    ) -> None:
        """From each linear layer's inputs a_i and output gradients b_i: clip and sum."""
        # |g_i|^2 = sum over layers of |b_i|^2 (|a_i|^2 [weight] + 1 [bias]).
        squared: torch.Tensor | None = None
        for (weight, bias), a, b in zip(plans, inputs, backprops, strict=True):
            if weight is None and bias is None:
                continue
            term = torch.linalg.vecdot(b, b)
            if weight is not None:
                a_squared = torch.linalg.vecdot(a, a)
                term = term.addcmul(term, a_squared) if bias is not None else term * a_squared
            squared = term if squared is None else squared.add_(term)
        assert squared is not None
        finite = math.isfinite(float(squared.sum()))
        factors = self._factors(squared)
        if not finite:
            # A non-finite example has factor 0, but 0 * inf is NaN: drop its rows.
            keep = factors > 0
            inputs = [torch.where(keep, a, 0.0) for a in inputs]
            backprops = [torch.where(keep, b, 0.0) for b in backprops]
        # sum_i f_i b_i a_i^T (weight) and sum_i f_i b_i (bias), into the .grad views.
        for (weight, bias), a, b in zip(plans, inputs, backprops, strict=True):
            if weight is None and bias is None:
                continue
            scaled = b * factors
            if weight is not None:
                torch.mm(scaled.t(), a, out=weight)
            if bias is not None:
                torch.sum(scaled, 0, out=bias)

    def _factors(self, squared_norms: torch.Tensor) -> torch.Tensor:
        """The clip factors, as a column, from squared norms of averaged gradients."""
        return clip_factors(squared_norms.sqrt_(), max_norm=self._averaged_max_norm).unsqueeze(1)

    def _vmap(self, x: torch.Tensor, y: torch.Tensor) -> None:
        model = self.model
        params = {name: p.detach() for name, p in self._named}
        scale = self.expected_batch_size

        def loss(
            params: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor
        ) -> torch.Tensor:
            # functional_call is typed as returning Any; the model returns a tensor.
            output: torch.Tensor = torch.func.functional_call(model, params, (xi.unsqueeze(0),))
            return (output.reshape(-1) - yi).square().sum() / scale

        per_example = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(params, x, y)
        with torch.no_grad():
            grads = [per_example[name].reshape(len(x), -1) for name, _ in self._named]
            squared = torch.zeros(len(x))
            for g in grads:
                squared.add_(torch.linalg.vecdot(g, g))
            finite = math.isfinite(float(squared.sum()))
            factors = self._factors(squared)
            if not finite:
                grads = [torch.where(factors > 0, g, 0.0) for g in grads]
            for parameter, g in zip(self._parameters, grads, strict=True):
                torch.mm(factors.t(), g, out=self._grads[id(parameter)].view(1, -1))


class _Tape:
    """Forward hooks that record each ``nn.Linear``'s input and output during a forward."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        self.layers = list(layers)
        self.records: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
        self.recording = False
        self._handles = [layer.register_forward_hook(self._record) for layer in self.layers]

    def _record(
        self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> None:
        # Hooked on nn.Linear layers only, whose output is a tensor.
        if self.recording:
            self.records.append((module, inputs[0].detach(), output))

    def complete(self, batch: int) -> bool:
        """Whether the last forward called each layer exactly once, on (batch, features)."""
        records = self.records
        return (
            len(records) == len(self.layers)
            and len({id(module) for module, _, _ in records}) == len(records)
            and all(
                a.dim() == 2 and a.shape[0] == batch and o.dim() == 2 and o.shape[0] == batch
                for _, a, o in records
            )
        )

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self.records.clear()


def _check_no_batch_mixing(model: nn.Module) -> None:
    # A BatchNorm layer in training mode makes each example's output depend on the
    # others, so clipping one example's gradient would not bound its influence (Opacus
    # refuses these layers too). Every other standard layer works per example.
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise InvalidArgumentError(
                f"the model cannot be trained with DP-SGD: {name or 'it'} is a "
                f"{type(module).__name__}, which mixes the examples of a batch; "
                "use GroupNorm or LayerNorm"
            )


def _linear_layers(model: nn.Module, parameters: Sequence[nn.Parameter]) -> list[nn.Linear] | None:
    """The ``nn.Linear`` layers with trainable parameters, or None if some live elsewhere."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    owned = {id(p) for layer in layers for p in layer.parameters(recurse=False)}
    trainable = {id(p) for p in parameters}
    if not trainable <= owned:
        return None
    return [
        layer
        for layer in layers
        if any(id(p) in trainable for p in layer.parameters(recurse=False))
    ]


def _mlp_chain(
    model: nn.Module, layers: list[nn.Linear] | None
) -> tuple[list[nn.Module], torch.Tensor | None] | None:
    """(modules, constant offset) when ``model`` is a Linear/ReLU chain with one output.

    Only an exact ``nn.Sequential`` or :class:`MoodModel` (not subclasses, whose
    ``forward`` may differ) with no hooks, every trainable parameter in the chain.
    """
    if type(model) is MoodModel:
        sequential, offset = model.layers, model.offset
    elif type(model) is nn.Sequential:
        sequential, offset = model, None
    else:
        return None
    if type(sequential) is not nn.Sequential or layers is None:
        return None
    modules = list(sequential)
    linears = [m for m in modules if type(m) is nn.Linear]
    if (
        not linears
        or any(type(m) not in (nn.Linear, nn.ReLU) for m in modules)
        or linears[-1].out_features != 1
        or not {id(layer) for layer in layers} <= {id(m) for m in linears}
        or any(_has_hooks(m) for m in (model, sequential, *modules))
    ):
        return None
    return modules, offset


def _has_hooks(module: nn.Module) -> bool:
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
    )
