"""How the engine holds K stacked configurations' weights: directly, or through the exact
Gram-matrix reparametrisation of the first layer.

**Direct.** Every parameter is one leaf tensor with a leading dimension K.

**Gram fast path.** For full-batch training whose first layer is linear, with n_train < d_in and
an SGD-family update (plain, momentum, nesterov) under any wdlab decay mode, every first-layer
update lies in span{W₀, rows of X}. Each configuration's first-layer weight is then exactly

    W₁ = a·W₀ + Bᵀ·X          (a: one number, B: n×h)

and its pre-activation is X·W₁ᵀ = a·(X·W₀ᵀ) + (X·Xᵀ)·B. The gradient of W₁ is dZᵀ·X, whose
coefficients are (0, dZ); decay is linear too, so coupled decay on W₁ is coupled decay on (a, B),
and ``torch.optim.SGD`` stepping (a, B) with those coefficient gradients is SGD on W₁, exactly.
A step costs one n×n·h GEMM instead of two n×d·h ones: about a third of the FLOPs when n ≈ 2d/3.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from wdlab.decay import Mode
from wdlab.models import BatchedForward, Tape, _linear
from wdlab.optimizers import OptimizerSpec

A_SUFFIX, B_SUFFIX = "#a", "#B"
EVAL_CHUNK = 256  # rows per evaluation forward of a model run through torch.func or grouped


def gram_applies(
    forward: BatchedForward,
    optimizer: OptimizerSpec,
    modes: Sequence[Mode],
    n_train: int,
    d_in: int,
) -> tuple[bool, str]:
    """Whether the exact Gram fast path applies here, and why (not): the model's first layer
    is a known Linear, the optimizer's update and every decay mode are linear in the weights
    (:attr:`OptimizerSpec.linear`, :attr:`Mode.fast_path`), and there are fewer rows than
    inputs."""
    if forward.first is None:
        return False, "custom model: first layer unknown"
    if not optimizer.linear:
        name = optimizer.cls_name
        return False, f"{name} is not an SGD-family optimizer (its update is not linear)"
    unsupported = sorted({m.name for m in modes if not m.fast_path})
    if unsupported:
        return False, f"modes {unsupported} not supported"
    if n_train >= d_in:
        return False, f"n_train {n_train} >= d_in {d_in}: no saving"
    return True, f"exact Gram fast path: n_train {n_train} < d_in {d_in}, SGD"


def _rowdot(x: Tensor, y: Tensor, out: Tensor) -> None:
    """Row-wise dot products of two (K, m) tensors into ``out`` (K,) (a BLAS dot for one row)."""
    if len(x) == 1:
        torch.dot(x[0], y[0], out=out[0])
    else:
        torch.linalg.vecdot(x, y, out=out)


class DirectParams:
    """Every parameter stacked as one leaf (K, *shape)."""

    def __init__(
        self,
        forward: BatchedForward,
        stacked: dict[str, Tensor],
        X: Tensor,
        eval_X: dict[str, Tensor],
        buffers: dict[str, Tensor] | None = None,
    ) -> None:
        self.fwd = forward
        self.tensors = {n: t.requires_grad_(True) for n, t in stacked.items()}
        self.buffers = buffers or {}  # stacked too: BatchNorm's running statistics
        self.X, self.eval_X = X, eval_X
        self.l2_as_grad: list[str] = []  # names whose l2 term is applied as its gradient
        self._x1: dict[str, Tensor] = {}  # x with a column of ones, per split

    def origin(self, name: str) -> str:
        """The model parameter a tensor belongs to."""
        return name

    def forward(
        self,
        split: str = "train",
        idx: Tensor | None = None,
        tape: Tape | None = None,
        train: bool = True,
    ) -> Tensor:
        """Outputs (K, n, out) on a split (``idx``: a mini-batch of the training rows).

        With a ``tape``, keeps what :meth:`backward` needs (call it under ``no_grad``).
        ``train`` is the module's mode (BatchNorm, Dropout) for models run through torch.func.
        """
        x = self.eval_X[split] if split != "train" else self.X if idx is None else self.X[idx]
        if self.fwd.first is None:
            if train or len(x) <= EVAL_CHUNK:
                return self.fwd(self.tensors, x, self.buffers, train, tape)
            # evaluation in chunks of rows: the same outputs (eval mode is per example), with
            # activations small enough to stay in cache (and in memory, for large splits)
            chunks = [
                self.fwd(self.tensors, x[i : i + EVAL_CHUNK], self.buffers, False)
                for i in range(0, len(x), EVAL_CHUNK)
            ]
            return torch.cat(chunks, 1)
        if tape is not None:
            tape.x = x
        return self.fwd.rest(self.tensors, self._first(split, idx, x), tape)

    def _first(self, split: str, idx: Tensor | None, x: Tensor) -> Tensor:
        """The first layer's pre-activation (K, n, h).

        Without autograd, the bias rides in the GEMM as a column of ones appended to x (cached
        per split): no separate pass to broadcast it, ~10-25% faster at a 64-configuration MLP.
        """
        w, b = self.fwd.first
        W, bias = self.tensors[w], self.tensors.get(b)
        if bias is None or torch.is_grad_enabled() or torch.is_autocast_enabled(x.device.type):
            return _linear(x, W, bias, True)
        if split not in self._x1:
            full = self.X if split == "train" else self.eval_X[split]
            self._x1[split] = torch.cat([full, torch.ones(len(full), 1, device=x.device)], 1)
        x1 = self._x1[split] if idx is None else self._x1[split][idx]
        w1 = torch.cat([W.detach(), bias.detach().unsqueeze(2)], 2)
        return torch.bmm(x1.expand(len(W), *x1.shape), w1.transpose(1, 2))

    def backward(self, tape: Tape, dout: Tensor) -> None:
        """Hand-written backward from d(Σ loss)/d(outputs): sets every tensor's ``.grad``."""
        grads = self.fwd.backward(self.tensors, tape, dout)
        for n, t in self.tensors.items():
            t.grad = grads[n]

    def after_backward(self) -> None:
        """Nothing to do: autograd's gradients are the optimizer's gradients."""

    def invalidate(self) -> None:
        """Nothing cached here to forget after an update."""

    def sq_norm_parts(self, names: list[str]) -> int:
        """How many (K,) parts :meth:`write_sq_norm_parts` writes for these parameters."""
        return 1 if names else 0

    def write_sq_norm_parts(self, names: list[str], out: Tensor) -> None:
        """The parts of Σ‖w‖² over the named model parameters, into ``out`` (parts, K).

        The engine records parts every epoch (a few kernels) and combines all epochs at
        once at the end (:meth:`combine_sq_norms`). Here: one part, the parameters'
        flattened rows side by side dotted with themselves (two kernels for any number).
        """
        if not names:
            return
        flats = [self.tensors[n].detach().reshape(len(self), -1) for n in names]
        flat = flats[0] if len(flats) == 1 else torch.cat(flats, 1)
        _rowdot(flat, flat, out[0])

    def combine_sq_norms(self, parts: Tensor) -> Tensor:
        """Σ‖w‖² from recorded parts: (..., parts, K) → (..., K)."""
        return parts.sum(-2)

    def weights(self, row: int) -> dict[str, Tensor]:
        """One configuration's weights and buffers (a state dict), by name."""
        state = {**self.tensors, **self.buffers}
        return {n: t.detach()[row].cpu().clone() for n, t in state.items()}

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]


class GramParams(DirectParams):
    """The first layer's weight as (a, B) coefficients; see the module docstring."""

    def __init__(
        self,
        forward: BatchedForward,
        stacked: dict[str, Tensor],
        X: Tensor,
        eval_X: dict[str, Tensor],
    ) -> None:
        w_name, self.b_name = forward.first
        self.w_name = w_name
        W0 = stacked.pop(w_name).detach()  # (K, h, d)
        K, h, _ = W0.shape
        n = X.shape[0]
        super().__init__(forward, stacked, X, eval_X)
        self.W0 = W0
        self.w0_sq = W0.pow(2).flatten(1).sum(1)
        self.tensors[w_name + A_SUFFIX] = torch.ones(K, device=X.device, requires_grad=True)
        self.tensors[w_name + B_SUFFIX] = torch.zeros(K, n, h, device=X.device, requires_grad=True)
        with torch.no_grad():
            self.G = {"train": X @ X.t()}  # (n, n)
            self.Z0 = {"train": torch.matmul(X, W0.transpose(1, 2))}  # (K, n, h)
            for split, Xs in eval_X.items():
                self.G[split] = Xs @ X.t()
                self.Z0[split] = torch.matmul(Xs, W0.transpose(1, 2))
        self.l2_as_grad = [w_name + A_SUFFIX, w_name + B_SUFFIX]
        self._zc: Tensor | None = None  # the train pre-activation being differentiated
        self._z: Tensor | None = None  # a·X·W₀ᵀ + G·B for the current (a, B), train split

    def origin(self, name: str) -> str:
        """The model parameter a tensor belongs to (both coefficients: the first weight)."""
        return name.split("#", 1)[0]

    def _pre(self, split: str) -> Tensor:
        """a·(X_s·W₀ᵀ) + G_s·B, without the bias: one GEMM and one fused pass."""
        a = self.tensors[self.w_name + A_SUFFIX].detach()
        B = self.tensors[self.w_name + B_SUFFIX].detach()
        with torch.no_grad():
            G = self.G[split]
            if len(B) == 1 and G.device.type == "cpu" and not torch.is_autocast_enabled("cpu"):
                # a·Z0 + G·B in the GEMM itself (beta = a): no separate pass over (n, h); CPU
                # only, where reading a back (.item()) costs no device sync
                return torch.addmm(self.Z0[split][0], G, B[0], beta=a.item()).unsqueeze(0)
            if len(B) == 1:
                gb = torch.mm(G, B[0]).unsqueeze(0)
            elif B.shape[2] == 1:  # one output (linear models): one GEMM for all K, (K,n)·Gᵀ
                gb = torch.mm(B.view(len(B), -1), G.t()).unsqueeze(2)
            else:  # an explicit batched GEMM: broadcasting matmul is ~8x slower for small n
                gb = torch.bmm(G.expand(len(B), *G.shape), B)
            # float32 from here on, also when the GEMM ran in bfloat16 under autocast
            return gb.float().addcmul_(self.Z0[split], a.view(-1, 1, 1))

    def forward(
        self,
        split: str = "train",
        idx: Tensor | None = None,
        tape: Tape | None = None,
        train: bool = True,
    ) -> Tensor:
        """Outputs (K, n, out); on train, keeps the pre-activation for its gradient (full batch
        only: ``idx`` must be None; ``train`` is irrelevant to the built-in models)."""
        z = self._pre(split)
        if split == "train":
            self._z = z
            if tape is None and torch.is_grad_enabled():
                z = self._zc = z.detach().requires_grad_(True)
        bias = self.tensors.get(self.b_name)
        # a new tensor either way: a tape's in-place activation must not touch self._z
        zb = z + bias.unsqueeze(1) if bias is not None else z.clone()
        return self.fwd.rest(self.tensors, zb, tape)

    def backward(self, tape: Tape, dout: Tensor) -> None:
        """Hand-written backward: the coefficients' gradients are (0, dZ)."""
        grads, dz = self.fwd.rest_backward(self.tensors, tape, dout)
        a = self.tensors[self.w_name + A_SUFFIX]
        grads[self.w_name + A_SUFFIX] = torch.zeros_like(a)
        grads[self.w_name + B_SUFFIX] = dz.contiguous()
        if self.b_name in self.tensors:
            grads[self.b_name] = dz.sum(1)
        for n, t in self.tensors.items():
            t.grad = grads[n]

    def after_backward(self) -> None:
        """The coefficients' gradients: (0, dZ)."""
        a = self.tensors[self.w_name + A_SUFFIX]
        B = self.tensors[self.w_name + B_SUFFIX]
        a.grad = torch.zeros_like(a)
        B.grad = self._zc.grad
        self._zc = None

    def sq_norm_parts(self, names: list[str]) -> int:
        """The other parameters' part, then (a, ⟨B, z + a·X·W₀ᵀ⟩) for the first weight."""
        self._norm_others = [n for n in names if n != self.w_name]
        self._norm_first = self.w_name in names
        self._norm_m = super().sq_norm_parts(self._norm_others)
        # views that stay valid: the optimizer updates a and B in place
        self._a_view = self.tensors[self.w_name + A_SUFFIX].detach()
        self._B_flat = self.tensors[self.w_name + B_SUFFIX].detach().flatten(1)
        self._Z0_flat = self.Z0["train"].flatten(1)
        return self._norm_m + 2 * self._norm_first

    def write_sq_norm_parts(self, names: list[str], out: Tensor) -> None:
        """The first weight's ‖a·W₀ + BᵀX‖² = a²‖W₀‖² + 2a⟨B, X·W₀ᵀ⟩ + ⟨B, G·B⟩
        = a²‖W₀‖² + ⟨B, z + a·X·W₀ᵀ⟩, with z = a·X·W₀ᵀ + G·B the current train
        pre-activation (so no extra GEMM, and one dot product)."""
        m = self._norm_m
        if m:
            super().write_sq_norm_parts(self._norm_others, out)
        if self._norm_first:
            if self._z is None:
                self._z = self._pre("train")
            out[m].copy_(self._a_view)
            zz = torch.addcmul(self._z.flatten(1), self._Z0_flat, self._a_view.view(-1, 1))
            _rowdot(self._B_flat, zz, out[m + 1])

    def combine_sq_norms(self, parts: Tensor) -> Tensor:
        """Σ‖w‖² from recorded parts: (..., parts, K) → (..., K)."""
        m = self._norm_m
        total = parts[..., :m, :].sum(-2)
        if self._norm_first:
            a, dot = parts[..., m, :], parts[..., m + 1, :]
            total = total + a * a * self.w0_sq + dot
        return total

    def invalidate(self) -> None:
        """Forget the pre-activation after an update."""
        self._z = None

    def weights(self, row: int) -> dict[str, Tensor]:
        """One configuration's weights with W₁ = a·W₀ + Bᵀ·X materialised."""
        out = {
            n: t.detach()[row].cpu().clone()
            for n, t in self.tensors.items()
            if not n.startswith(self.w_name + "#")
        }
        a = self.tensors[self.w_name + A_SUFFIX].detach()[row]
        B = self.tensors[self.w_name + B_SUFFIX].detach()[row]
        out[self.w_name] = (a * self.W0[row] + B.t() @ self.X).cpu()
        return out

    def __len__(self) -> int:
        return self.W0.shape[0]
