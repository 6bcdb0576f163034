"""The exact Gram fast path: a built-in MLP's first-layer weight held as coefficients.

For full-batch training whose first layer is linear, with n_train < d_in and an SGD-family
update (plain, momentum, nesterov) under any wdlab decay mode that is linear in the weights,
every first-layer update lies in span{W₀, rows of X}. Each configuration's first-layer weight
is then exactly

    W₁ = a·W₀ + Bᵀ·X          (a: one number, B: n×h)

and its pre-activation is X·W₁ᵀ = a·(X·W₀ᵀ) + (X·Xᵀ)·B. The gradient of W₁ is dZᵀ·X, whose
coefficients are (0, dZ); decay is linear too, so coupled decay on W₁ is coupled decay on (a, B),
and ``torch.optim.SGD`` stepping (a, B) with those coefficient gradients is SGD on W₁, exactly.
A step costs one n×n·h GEMM instead of two n×d·h ones: about a third of the FLOPs when n ≈ 2d/3.

All of this stays inside :class:`GramEngine`: the optimizer steps (a, B) (tensors
``<weight>#a``, ``<weight>#B``, which :meth:`GramEngine.parameter` maps back to the weight), the
decay's loss term on them is applied as its gradient (:attr:`GramEngine.by_gradient`), the
train pre-activation is kept while (a, B) are unchanged (their version counters say so), and
the weight norm is recorded from it without another GEMM.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from wdlab.engines.base import DirectNorm, NormProbe, Setup, Stacked, Tape, rowdot
from wdlab.engines.layers import rest, rest_backward

A_SUFFIX, B_SUFFIX = "#a", "#B"


def gram_applies(setup: Setup) -> tuple[bool, str]:
    """Whether the exact Gram fast path applies to this model, optimizer and decay modes, and
    why (not): the optimizer's update and every mode are linear in the weights
    (:attr:`OptimizerSpec.linear`, :attr:`Mode.fast_path`), and there are fewer rows than
    inputs."""
    optimizer = setup.optimizer
    if optimizer is None or not optimizer.linear:
        name = optimizer.cls_name if optimizer is not None else "the optimizer"
        return False, f"{name} is not an SGD-family optimizer (its update is not linear)"
    unsupported = sorted({m.name for m in setup.modes if not m.fast_path})
    if unsupported:
        return False, f"modes {unsupported} not supported"
    n_train, d_in = setup.X.shape[:2]
    if n_train >= d_in:
        return False, f"n_train {n_train} >= d_in {d_in}: no saving"
    return True, f"exact Gram fast path: n_train {n_train} < d_in {d_in}, SGD"


class GramNorm:
    """The other parameters' part, then (a, ⟨B, z + a·X·W₀ᵀ⟩) for the first weight:
    ‖a·W₀ + BᵀX‖² = a²‖W₀‖² + 2a⟨B, X·W₀ᵀ⟩ + ⟨B, G·B⟩ = a²‖W₀‖² + ⟨B, z + a·X·W₀ᵀ⟩, with
    z = a·X·W₀ᵀ + G·B the train pre-activation (no extra GEMM when it is kept, one dot)."""

    def __init__(self, engine: GramEngine, names: Sequence[str]) -> None:
        self.engine = engine
        self.others = DirectNorm(engine.tensors, [n for n in names if n != engine.w_name])
        self.first = engine.w_name in names
        self.parts = self.others.parts + 2 * self.first
        self.w0_sq = engine.w0_sq.clone()  # the rows recorded, whatever the engine keeps later
        self._cache: tuple[Tensor, ...] | None = None  # (a, B, and their views: _views)

    def write(self, out: Tensor) -> None:
        """This epoch's parts of the engine's current rows into ``out`` (parts, rows)."""
        m = self.others.parts
        if m:
            self.others.write(out)
        if self.first:
            e = self.engine
            a, B, z0 = self._views()
            out[m].copy_(a)
            zz = torch.addcmul(e.train_pre().flatten(1), z0, a.view(-1, 1))
            rowdot(B, zz, out[m + 1])

    def _views(self) -> tuple[Tensor, Tensor, Tensor]:
        """a, B (flat) and the train Z0 (flat), made once per set of rows (every epoch reads
        them; in-place updates show through, and compaction gives new tensors)."""
        e = self.engine
        a_t, b_t = e.tensors[e.w_name + A_SUFFIX], e.tensors[e.w_name + B_SUFFIX]
        if self._cache is None or self._cache[0] is not a_t or self._cache[1] is not b_t:
            views = (a_t.detach(), b_t.detach().flatten(1), e.Z0["train"].flatten(1))
            self._cache = (a_t, b_t, *views)
        return self._cache[2], self._cache[3], self._cache[4]

    def combine(self, parts: Tensor) -> Tensor:
        """Σ‖w‖² from recorded parts: (..., parts, K) → (..., K)."""
        m = self.others.parts
        total = parts[..., :m, :].sum(-2)
        if self.first:
            a, dot = parts[..., m, :], parts[..., m + 1, :]
            total = total + a * a * self.w0_sq + dot
        return total


class GramEngine(Stacked):
    """A built-in MLP whose first layer's weight is held as (a, B) coefficients; see the
    module docstring."""

    hand_backward = True
    flat_inputs = True
    float_inputs = True
    eval_chunk = None

    def __init__(self, setup: Setup, note: str = "") -> None:
        stacked = dict(setup.stacked)
        self.layout = setup.layout.bind(setup.template)
        w_name, self.b_name = self.layout.first
        self.w_name = w_name
        W0 = stacked.pop(w_name).detach()  # (K, h, d)
        K, h, _ = W0.shape
        X = setup.X
        super().__init__(Setup(setup.template, stacked, X, setup.eval_X))
        self.note = note
        self.W0 = W0
        self.w0_sq = W0.pow(2).flatten(1).sum(1)
        self.tensors[w_name + A_SUFFIX] = torch.ones(K, device=X.device, requires_grad=True)
        self.tensors[w_name + B_SUFFIX] = torch.zeros(
            K, len(X), h, device=X.device, requires_grad=True
        )
        with torch.no_grad():
            self.G = {"train": X @ X.t()}  # (n, n)
            self.Z0 = {"train": torch.matmul(X, W0.transpose(1, 2))}  # (K, n, h)
            for split, Xs in setup.eval_X.items():
                self.G[split] = Xs @ X.t()
                self.Z0[split] = torch.matmul(Xs, W0.transpose(1, 2))
        self.by_gradient = frozenset({w_name + A_SUFFIX, w_name + B_SUFFIX})
        self._device = X.device.type
        self._zc: Tensor | None = None  # the train pre-activation being differentiated
        self._z: tuple[tuple, Tensor] | None = None  # (key, a·X·W₀ᵀ + G·B) on the train split

    def parameter(self, name: str) -> str:
        """The model parameter a tensor stands for (both coefficients: the first weight)."""
        return name.split("#", 1)[0]

    def _pre(self, split: str) -> Tensor:
        """a·(X_s·W₀ᵀ) + G_s·B, without the bias: one GEMM and one fused pass."""
        a = self.tensors[self.w_name + A_SUFFIX].detach()
        B = self.tensors[self.w_name + B_SUFFIX].detach()
        with torch.no_grad():
            G = self.G[split]
            k = B.shape[0]  # (len() of a tensor goes through torch's Python dispatch)
            if k == 1 and G.device.type == "cpu" and not torch.is_autocast_enabled("cpu"):
                # a·Z0 + G·B in the GEMM itself (beta = a): no separate pass over (n, h); CPU
                # only, where reading a back (.item()) costs no device sync
                return torch.addmm(self.Z0[split][0], G, B[0], beta=a.item()).unsqueeze(0)
            if k == 1:
                gb = torch.mm(G, B[0]).unsqueeze(0)
            elif B.shape[2] == 1:  # one output (linear models): one GEMM for all K, (K,n)·Gᵀ
                gb = torch.mm(B.view(k, -1), G.t()).unsqueeze(2)
            else:  # an explicit batched GEMM: broadcasting matmul is ~8x slower for small n
                gb = torch.bmm(G.expand(k, *G.shape), B)
            # float32 from here on, also when the GEMM ran in bfloat16 under autocast
            return gb.float().addcmul_(self.Z0[split], a.view(-1, 1, 1))

    def train_pre(self) -> Tensor:
        """The train pre-activation of the current (a, B), kept until they change (their
        version counters move with every in-place update) or autocast does."""
        a = self.tensors[self.w_name + A_SUFFIX]
        B = self.tensors[self.w_name + B_SUFFIX]
        key = (a._version, B._version, torch.is_autocast_enabled(self._device))
        if self._z is None or self._z[0] != key:
            self._z = (key, self._pre("train"))
        return self._z[1]

    def _coefficients(self, split: str, tape: Tape | None) -> Tensor:
        """The split's pre-activation plus bias (a new tensor: an in-place activation must not
        touch the kept one); on train under autograd, the leaf its gradient is read from."""
        if split == "train":
            z = self.train_pre()
            if tape is None and torch.is_grad_enabled():
                z = self._zc = z.detach().requires_grad_(True)
        else:
            z = self._pre(split)
        bias = self.tensors.get(self.b_name)
        return z + bias.unsqueeze(1) if bias is not None else z.clone()

    def forward(
        self,
        split: str = "train",
        idx: Tensor | None = None,
        train: bool = True,
        x: Tensor | None = None,
    ) -> Tensor:
        """Outputs (K, n, out) (full batches of held splits only: ``idx`` and ``x`` are None)."""
        return self._rest(self._coefficients(split, None), None)

    def _rest(self, zb: Tensor, tape: Tape | None) -> Tensor:
        return rest(self.layout.stages, self.tensors, zb, tape)

    def forward_tape(
        self, idx: Tensor | None = None, x: Tensor | None = None
    ) -> tuple[Tensor, Tape]:
        """The training outputs and the tape of :meth:`backward`."""
        tape = Tape()
        return self._rest(self._coefficients("train", tape), tape), tape

    def backward(self, tape: Tape, dout: Tensor) -> None:
        """Hand-written backward: the coefficients' gradients are (0, dZ)."""
        grads, dz = rest_backward(self.layout.stages, self.tensors, tape, dout)
        a = self.tensors[self.w_name + A_SUFFIX]
        grads[self.w_name + A_SUFFIX] = torch.zeros_like(a)
        grads[self.w_name + B_SUFFIX] = dz.contiguous()
        if self.b_name in self.tensors:
            grads[self.b_name] = dz.sum(1)
        for n, t in self.tensors.items():
            t.grad = grads[n]

    def backward_loss(self, total: Tensor) -> None:
        """Autograd's gradients; the coefficients' are (0, dZ) (dZ: the kept leaf's)."""
        super().backward_loss(total)
        a = self.tensors[self.w_name + A_SUFFIX]
        B = self.tensors[self.w_name + B_SUFFIX]
        a.grad = torch.zeros_like(a)
        B.grad = self._zc.grad
        self._zc = None

    def norm_probe(self, names: Sequence[str]) -> NormProbe:
        """Σ‖w‖² with the first weight's from its coefficients (:class:`GramNorm`)."""
        return GramNorm(self, names)

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

    def state(self) -> dict[str, Tensor]:
        """The rows' tensors (:meth:`Stacked.state`) with W₀, ‖W₀‖² and each split's X·W₀ᵀ."""
        out = super().state() | {"gram.W0": self.W0, "gram.w0_sq": self.w0_sq}
        return out | {f"gram.Z0.{split}": z for split, z in self.Z0.items()}

    def load_state(self, state: Mapping[str, Tensor]) -> None:
        """Hold the rows of ``state`` (:meth:`state`'s keys); the kept pre-activation goes."""
        super().load_state(state)
        dev = self.W0.device
        self.W0 = state["gram.W0"].to(dev).clone()
        self.w0_sq = state["gram.w0_sq"].to(dev).clone()
        for split in self.Z0:
            self.Z0[split] = state[f"gram.Z0.{split}"].to(dev).clone()
        self._z = self._zc = None

    def __len__(self) -> int:
        return self.W0.shape[0]
