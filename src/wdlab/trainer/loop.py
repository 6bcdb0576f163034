"""The trainer: K configurations trained at once, in named steps.

Every parameter is stacked with a leading dimension K (one row per configuration), the forward
and backward run once per step for all K, and each configuration's loss is its own mean, so the
gradient of row k is exactly configuration k's gradient. A single run is a sweep of one.

The optimizer is a real ``torch.optim`` optimizer. Configurations that share the optimizer's
settings form one parameter group whose tensors are *views* of the stacked rows, so torch's own
update code runs, any element-wise torch optimizer and lr scheduler works, and per-configuration
weight decay is applied by the decay modes (:mod:`wdlab.decay`) with one value per row.

One epoch: :meth:`Trainer.train_epoch` (each step: forward, gradients, :meth:`Trainer.update`),
then the scheduler, :meth:`Trainer.check_divergence` and :meth:`Trainer.evaluate`; at the end
:meth:`Trainer.collect_results`. Built-in models take their gradients from a hand-written
backward (:mod:`wdlab.models`); custom models and bf16 autocast use autograd.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor, nn

from wdlab.decay import decay_table, l2_penalty, surprise_warnings
from wdlab.devices import resolve_device
from wdlab.diagnostics import make as make_diagnostic
from wdlab.func import FuncForward, cuda_ids, probe, stack_state, tied_names, vmap_note, with_ties
from wdlab.models import BatchedForward, ModelSpec, Tape, check_module
from wdlab.params import DirectParams, GramParams, gram_applies
from wdlab.records import Curves, RunResult
from wdlab.tasks import get_task
from wdlab.timescale import timescales
from wdlab.trainer.heap import trim_heap, tune_malloc
from wdlab.trainer.plan import ConfigGroup, Plan, group_configs, order_configs
from wdlab.trainer.schedules import make_scheduler
from wdlab.zerograd import engine_note, noise_gradients, probe_batches

DIVERGENCE_CHECK_EVERY = 100  # epochs between divergence checks (and at the end)
BLOWUP = 1000.0  # a train loss above BLOWUP × max(first epoch's loss, 1) has diverged


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return resolve_device(None)


def default_init(spec: ModelSpec) -> Callable[[int], nn.Module]:
    """Initial weights for a seed: ``torch.manual_seed(seed)`` then ``spec.build(seed)``."""

    def init(seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return spec.build(seed)

    return init


class Trainer:
    """One batched training of a :class:`Plan`; :meth:`run` returns one RunResult per config."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.t_start = time.perf_counter()
        tune_malloc()
        self.device = resolve_device(plan.device)
        self.task = plan.task or get_task(plan.data.task)
        self.spec = plan.spec
        if self.spec.in_dim == 0:
            data = plan.data
            self.spec = replace(self.spec, in_dim=data.in_dim, out_dim=data.out_dim)
        self.data = plan.data.to(self.device)
        if self.spec.model_kind.first is not None and self.data.X_train.dim() > 2:
            self.data = self.data.flattened()  # built-in MLPs read signals and images flat
        self.X, self.y = self.data.X_train, self.data.y_train
        self.eval_splits = {k: v for k, v in self.data.splits().items() if k != "train"}
        self.amp = plan.precision == "bf16"
        self._warn()
        self.order = order_configs(plan.configs)
        self.cfgs = [plan.configs[i] for i in self.order]
        self.K = len(self.cfgs)
        self.groups = group_configs(self.cfgs, self.device)
        self.stack_weights()
        self.build_optimizer()
        self.start_records()

    # -- set-up --------------------------------------------------------------------------------

    def _warn(self) -> None:
        name = self.plan.optimizer.cls_name
        for c in self.plan.configs:
            for msg in surprise_warnings(c.mode, c.weight_decay, c.lr, name):
                warnings.warn(msg, UserWarning, stacklevel=4)

    def stack_weights(self) -> None:
        """Initial weights (one module per distinct seed) stacked row by row, held directly or
        through the exact Gram path; which tensors decay."""
        plan = self.plan
        template, stacked, buffers = self._initial_state()
        forward = BatchedForward(self.spec, template.to(self.device))
        modes = [g.mode for g in self.groups]
        applies, why = gram_applies(forward, plan.optimizer, modes, *self.X.shape[:2])
        if plan.minibatch:
            applies, why = False, "mini-batches"
        if plan.diagnostics:
            applies, why = False, "diagnostics need the weights themselves"
        if plan.fast_path and not applies:
            raise ValueError(f"the fast path does not apply: {why}")
        use_fast = applies if plan.fast_path is None else bool(plan.fast_path)
        eval_X = {k: v[0] for k, v in self.eval_splits.items()}
        if use_fast:
            self.P = GramParams(forward, stacked, self.X, eval_X)
        else:
            self.P = DirectParams(forward, stacked, self.X, eval_X, buffers)
        note = why if use_fast else "standard path" + (f" ({why})" if not applies else "")
        if isinstance(forward.func, FuncForward):
            note = self._check_vmap(forward)
        elif forward.func is not None:
            note = f"hand-batched {type(forward.func).__name__}"
        self.engine_note = note + ("; bf16 autocast" if self.amp else "")
        if forward.first is None:  # modules wdlab did not write: say which gradients are noise
            self.engine_note += self._zero_grad_note(template)
        # Built-in models take their gradients from a hand-written backward (no autograd
        # graph); other models, custom losses and bf16 autocast use autograd.
        self.manual = forward.manual_backward and not self.amp and self.task.loss_grad is not None
        # models whose train and eval modes differ (BatchNorm, Dropout) are evaluated on the
        # training split in eval mode, by a pass of its own
        self.train_pass = plan.minibatch or (
            forward.func is not None and forward.func.mode_dependent
        )
        self._decay_flags()

    def _initial_state(self) -> tuple[nn.Module, dict[str, Tensor], dict[str, Tensor]]:
        """(a template module, the stacked parameters, the stacked buffers): one module per
        distinct seed, row k holding configuration k's."""
        init = self.plan.init or default_init(self.spec)
        modules: dict[int, nn.Module] = {}
        for c in self.cfgs:
            if c.seed not in modules:
                modules[c.seed] = check_module(init(c.seed), c.seed)
        template = modules[self.cfgs[0].seed]
        self.ties = tied_names(template)  # a tied tensor is stacked once, under its first name
        self.table = decay_table(template, self.plan.rule)
        rows = [modules[c.seed] for c in self.cfgs]
        stacked = stack_state(rows, self.device, nn.Module.named_parameters)
        return template, stacked, stack_state(rows, self.device)

    def _check_vmap(self, forward: BatchedForward) -> str:
        """Whether torch.vmap runs this module (else: one configuration after another)."""
        idx = torch.arange(min(len(self.y), 8), device=self.device)
        yb = self.y[idx]
        why = probe(
            forward.func,
            self.P.tensors,
            self.P.buffers,
            self.X[idx],
            lambda out: self.task.loss(out, yb).sum(),
        )
        if why is None:
            return vmap_note(self.K)
        forward.func.vmap = False
        return f"one configuration after another (torch.vmap failed: {why})"

    def _zero_grad_note(self, template: nn.Module) -> str:
        """The engine text naming parameters whose float32 gradient is rounding noise
        (:mod:`wdlab.zerograd`), from two batches of training rows; '' when there are none."""
        found = noise_gradients(
            template,
            probe_batches(self.X, self.y),
            lambda out, yb: self.task.loss(out.unsqueeze(0), yb).sum(),
        )
        return engine_note(found)

    def _decay_flags(self) -> None:
        """Which stacked tensors decay, which are AdamC-normalized, and the diagnostics."""
        decays = {r["name"]: r["decays"] for r in self.table.rows}
        normalized = {r["name"]: r["normalized"] for r in self.table.rows}
        self.full = self.P.tensors
        self.names = list(self.full)
        self.decays = {n: decays[self.P.origin(n)] for n in self.full}
        self.normalized = {n: normalized[self.P.origin(n)] for n in self.full}
        weights = [n for n in self.names if self.decays[n] and self.full[n].dim() >= 3]
        self.diagnostics = [
            make_diagnostic(d, weights, self.cfgs, self.plan.optimizer)
            for d in self.plan.diagnostics
        ]

    def build_optimizer(self) -> None:
        """One torch parameter group per configuration group, over views of its rows (the
        stacked tensors themselves for a group of every row), and the lr scheduler."""
        plan, names = self.plan, self.names
        decayed = [n for n in names if self.decays[n]]
        # l2 enters as a loss term under autograd; its gradient wd·w is added by hand where the
        # backward is hand-written, and for the fast path's coefficients (P.l2_as_grad)
        self.l2_grad = set(names) if self.manual else set(self.P.l2_as_grad)
        self.penalised = [n for n in decayed if n not in self.l2_grad]
        self.l2_groups = [g for g in self.groups if g.mode.penalty]
        torch_groups: list[dict] = []
        for g in self.groups:
            # split by decay only where torch applies weight decay itself (builtin): fewer
            # groups, less per-step optimizer overhead
            for flag in (True, False) if g.builtin_wd else (None,):
                group_names = [n for n in names if flag is None or self.decays[n] is flag]
                if group_names:
                    torch_groups.append(self._torch_group(g, group_names, flag))
        clean = [{k: v for k, v in tg.items() if not k.startswith("_")} for tg in torch_groups]
        base = {"lr": self.groups[0].lr, **plan.optimizer.implementation(self.groups[0].options)}
        self.optimizer = plan.optimizer.cls(clean, **base)
        for tg, pg in zip(torch_groups, self.optimizer.param_groups, strict=True):
            pg.update({k: v for k, v in tg.items() if k.startswith("_")})
            pg["lr0"] = tg["lr"]
        self.scheduler = make_scheduler(self.optimizer, plan.schedule, plan.epochs)

    def _torch_group(self, g: ConfigGroup, group_names: list[str], flag: bool | None) -> dict:
        """The torch parameter group of configuration group ``g`` over ``group_names``."""
        whole = g.rows == slice(0, self.K)
        views = [
            self.full[n] if whole else self.full[n].detach()[g.rows].requires_grad_(True)
            for n in group_names
        ]
        decayed = [(n, v) for n, v in zip(group_names, views, strict=True) if self.decays[n]]
        entry = {
            "params": views,
            "lr": g.lr,
            "weight_decay": g.builtin_wd if flag else 0.0,
            **g.options,
            "_names": group_names,
            "_group": g,
            "_views": not whole,
            "_decayed": [v for _, v in decayed],
            "_normalized": [self.normalized[n] for n, _ in decayed],
            "_l2_grad": [v for n, v in decayed if n in self.l2_grad],
        }
        if g.mode.needs_anchor:
            entry["_anchor"] = [v.detach().clone() for _, v in decayed]
        return entry

    def start_records(self) -> None:
        """Per-epoch records, kept on the device until the end."""
        plan, K = self.plan, self.K
        self.train_loss = torch.full((plan.epochs, K), math.nan, device=self.device)
        # Σ‖w‖² is recorded as a few (K,) parts per epoch and combined at the end.
        self.decayed_model = sorted({self.P.origin(n) for n in self.names if self.decays[n]})
        parts = self.P.sq_norm_parts(self.decayed_model) if self.decayed_model else 0
        self.norm_parts = (
            torch.full((plan.epochs, parts, K), math.nan, device=self.device) if parts else None
        )
        self.eval_epochs = plan.eval_epochs
        self.ev: dict[str, list[Tensor]] = {}
        self.alive = torch.ones(K, dtype=torch.bool, device=self.device)
        self.all_alive = True
        self.diverged_at: list[int | None] = [None] * K
        self.checked = 0  # epochs before this one have been checked for divergence

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> list[RunResult]:
        """Train every epoch; return one RunResult per configuration, in the order given.

        Random draws inside the model (Dropout masks) come from torch's global RNG, seeded with
        ``shuffle_seed`` for this run and restored after it: the same command gives the same
        numbers, and the caller's RNG is left alone.
        """
        plan = self.plan
        bar = None
        if plan.progress:
            from tqdm import tqdm

            bar = tqdm(total=plan.epochs, desc=plan.progress_desc, unit="epoch", leave=False)
        devices = cuda_ids(self.device)
        # The hand-written backward needs no autograd at all: one no_grad around the loop.
        grad_off = torch.no_grad() if self.manual else contextlib.nullcontext()
        with torch.random.fork_rng(devices=devices), grad_off:
            torch.manual_seed(plan.shuffle_seed)
            pending = self.epochs(bar)
        self.finish(pending)
        if bar is not None:
            bar.close()
        return self.collect_results()

    def epochs(self, bar: object | None) -> bool:
        """Every epoch: train, schedule, check divergence, evaluate. Returns whether the train
        metrics of the last evaluation are still to be recorded."""
        plan = self.plan
        eval_set = set(self.eval_epochs)
        pending = False  # the next full-batch forward gives the train metrics of these weights
        shuffle = torch.Generator(device="cpu").manual_seed(plan.shuffle_seed)
        for epoch in range(plan.epochs):
            if plan.minibatch:
                self.train_epoch_minibatch(epoch, shuffle)
            else:
                self.train_loss[epoch] = self.step(None, epoch, pending)
                pending = False
                if self.train_pass:
                    self.record_norm(epoch)
            if self.scheduler is not None:
                self.scheduler.step()
            if epoch in eval_set:
                due = epoch + 1 - self.checked >= DIVERGENCE_CHECK_EVERY
                if due or epoch == plan.epochs - 1:
                    self.check_divergence(epoch)
                self.evaluate(with_train=self.train_pass)
                pending = not self.train_pass
            for d in self.diagnostics:
                d.end_epoch(epoch)
            if epoch % 100 == 99:
                trim_heap()  # keeps a long run's resident memory flat
            if bar is not None:
                bar.update(1)
            if plan.on_epoch is not None:
                plan.on_epoch(epoch)
        return pending

    def train_epoch_minibatch(self, epoch: int, shuffle: torch.Generator) -> None:
        """One pass over shuffled mini-batches; the epoch's train loss is their mean."""
        n = self.X.shape[0]
        size = self.plan.batch_size
        perm = torch.randperm(n, generator=shuffle)  # on the CPU: the same order on every device
        if self.device.type == "cuda":  # pinned and asynchronous: no host sync
            perm = perm.pin_memory().to(self.device, non_blocking=True)
        epoch_loss = torch.zeros(self.K, device=self.device)
        for i in range(0, n, size):
            idx = perm[i : i + size]
            epoch_loss += self.step(idx, epoch, False) * len(idx)
        self.train_loss[epoch] = epoch_loss / n
        self.record_norm(epoch)

    def step(self, idx: Tensor | None, epoch: int, pending: bool) -> Tensor:
        """Forward, gradients and update on the training rows (``idx``: a mini-batch); returns
        the (K,) losses from before the update. ``pending``: also record the train metrics of
        these weights (the previous evaluation's)."""
        yb = self.y if idx is None else self.y[idx]
        # the fast path has G·B only after this forward: the norm of the previous update
        norm_now = idx is None and epoch > 0 and not self.train_pass
        if self.manual:
            tape = Tape()
            out = self.P.forward("train", idx, tape)
            if norm_now:
                self.record_norm(epoch - 1)
            losses, dout = self.task.loss_grad(out, yb)
            if pending:  # metrics of these weights, before the backward
                self.record_eval_metrics("train", out, yb)
            self.P.backward(tape, dout)
        else:
            out = self.forward("train", idx, train=True)
            if norm_now:
                self.record_norm(epoch - 1)
            losses = self.task.loss(out, yb)
            if pending:
                self.record_eval_metrics("train", out.detach(), yb)
            self.autograd_grads(losses)
        losses = losses.detach()
        if pending:
            self.record_eval("train_loss_eval", losses)
        self.update()
        return losses

    def forward(self, split: str, idx: Tensor | None = None, train: bool = False) -> Tensor:
        """The forward pass (``train``: in training mode), under bfloat16 autocast when asked;
        outputs in float32."""
        if not self.amp:
            return self.P.forward(split, idx=idx, train=train)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            out = self.P.forward(split, idx=idx, train=train)
        return out.float()

    def autograd_grads(self, losses: Tensor) -> None:
        """Every tensor's gradient of Σ_k loss_k (+ the l2 terms), through autograd."""
        total = losses.sum()
        for g in self.l2_groups:
            params = [self.full[n][g.rows] for n in self.penalised]
            term = l2_penalty(params, g.wd, per_row=True).sum()
            total = total - term if g.options.get("maximize") else total + term
        for t in self.full.values():
            t.grad = None
        total.backward()
        self.P.after_backward()

    def update(self) -> None:
        """One optimizer step of every configuration, from the gradients just computed: each
        group's decay mode first, then torch's own update, then what a mode does after it."""
        full = self.full
        after = []
        with torch.no_grad():
            for pg in self.optimizer.param_groups:
                g = pg["_group"]
                if pg["_views"]:
                    for n, v in zip(pg["_names"], pg["params"], strict=True):
                        v.grad = full[n].grad[g.rows]
                if pg["_decayed"]:
                    decayed_group = {
                        "params": pg["_decayed"],
                        "lr": pg["lr"],
                        "lr0": pg["lr0"],
                        "anchor": pg.get("_anchor"),
                        "maximize": pg.get("maximize", False),
                        "normalized": pg["_normalized"],
                    }
                    g.mode.apply(decayed_group, g.wd)
                    if g.mode.after_step is not None:
                        after.append((g, decayed_group))
                    if g.mode.as_gradient is not None and pg["_l2_grad"]:
                        l2 = {"params": pg["_l2_grad"], "maximize": decayed_group["maximize"]}
                        g.mode.as_gradient(l2, g.wd)
            if not self.all_alive:
                for t in full.values():
                    t.grad[~self.alive] = 0
            for d in self.diagnostics:
                d.before_step(full)
            self.optimizer.step()
            for d in self.diagnostics:
                d.after_step(full)
            for g, decayed_group in after:
                g.mode.finish(decayed_group, g.wd)
            self.P.invalidate()
            if not self.all_alive:
                for t in full.values():
                    t[~self.alive] = 0

    # -- records -------------------------------------------------------------------------------

    def record_eval(self, name: str, values: Tensor) -> None:
        """Keep one evaluation's (K,) values of ``name``."""
        self.ev.setdefault(name, []).append(values.detach())

    def record_norm(self, epoch: int) -> None:
        """The decayed weights' norm after ``epoch``'s update (as parts, see start_records)."""
        if self.norm_parts is not None:
            with torch.no_grad():
                self.P.write_sq_norm_parts(self.decayed_model, self.norm_parts[epoch])

    def record_eval_metrics(self, split: str, out: Tensor, ys: Tensor) -> None:
        """Metrics computed from outputs (accuracy); loss-derived ones come at the end."""
        if self.task.eval_metrics is not None:
            for m, v in self.task.eval_metrics(out, ys).items():
                self.record_eval(f"{split}_{m}", v)

    def evaluate(self, with_train: bool) -> None:
        """Metrics on every evaluation split (and, when asked, a full train pass)."""
        with torch.no_grad():
            for split, (_, ys) in self.eval_splits.items():
                o = self.forward(split)
                self.record_eval(f"{split}_loss", self.task.loss(o, ys))
                self.record_eval_metrics(split, o, ys)
            if with_train:
                o = self.forward("train")
                self.record_eval("train_loss_eval", self.task.loss(o, self.y))
                self.record_eval_metrics("train", o, self.y)

    def check_divergence(self, upto: int) -> None:
        """Stop every configuration whose train loss diverged up to epoch ``upto``: NaN, inf,
        or blown up while finite (above ``BLOWUP`` × max(its first epoch's loss, 1)).

        Checked every ~100 epochs (at an evaluation epoch) and at the end rather than every
        step (no per-step sync): rows never mix, so a diverged row harms no other meanwhile; it
        is then marked ``diverged`` at its first diverged epoch, and its weights and gradients
        are held at zero from there on.
        """
        block = self.train_loss[self.checked : upto + 1]
        limit = BLOWUP * self.train_loss[0].clamp_min(1.0)
        healthy = torch.isfinite(block) & (block <= limit)
        bad = ~healthy.all(0) & self.alive
        if bool(bad.any()):
            first = (~healthy).float().argmax(0)
            for k in torch.nonzero(bad).flatten().tolist():
                self.diverged_at[k] = self.checked + int(first[k])
            self.alive = self.alive & ~bad
            self.all_alive = False
            with torch.no_grad():
                for t in self.full.values():
                    t[~self.alive] = 0
        self.checked = upto + 1

    def finish(self, pending: bool) -> None:
        """After the last epoch: the last weight norm, and the pending train metrics."""
        with torch.no_grad():
            # only pending metrics need the train split's outputs (the Gram path's weight norm
            # reuses that forward); a train pass has recorded both already
            out = self.forward("train") if pending else None
            if not self.train_pass:
                self.record_norm(self.plan.epochs - 1)
            if out is not None:
                self.record_eval("train_loss_eval", self.task.loss(out, self.y))
                self.record_eval_metrics("train", out, self.y)

    def collect_results(self) -> list[RunResult]:
        """One RunResult per configuration, in the order given, from the device records."""
        seconds = time.perf_counter() - self.t_start
        rows_train_loss = self.train_loss.cpu().t().tolist()  # one .tolist() per curve
        if self.norm_parts is None:
            weight_norm = torch.zeros(self.plan.epochs, self.K)
        else:
            weight_norm = self.P.combine_sq_norms(self.norm_parts).clamp_min(0).sqrt().cpu()
        rows_weight_norm = weight_norm.t().tolist()
        rows_ev = {k: v.t().cpu().tolist() for k, v in self.stacked_evals().items()}
        results: list[RunResult | None] = [None] * self.K
        epochs = list(range(self.plan.epochs))
        for row, orig in enumerate(self.order):
            series = {"train_loss": rows_train_loss[row], "weight_norm": rows_weight_norm[row]}
            series |= {k: v[row] for k, v in rows_ev.items()}
            for d in self.diagnostics:
                series |= d.series(row)
            curves = Curves(list(epochs), list(self.eval_epochs), series)
            final = {k: curves[k][-1] for k in rows_ev}
            final["train_loss"] = final.pop("train_loss_eval")
            final["weight_norm"] = curves["weight_norm"][-1]
            taus = timescales(self.cfgs[row], self.plan.steps_per_epoch)
            final |= taus
            status, cut = "done", self.diverged_at[row]
            if cut is not None:
                status = "diverged"
                curves.cut(cut)
                final = {k: math.nan for k in final} | taus
            results[orig] = RunResult(
                config=self.cfgs[row],
                curves=curves,
                final=final,
                status=status,
                diverged_epoch=cut,
                best=_best(curves),
                params=with_ties(self.P.weights(row), self.ties) if self.plan.keep_params else None,
                seconds=seconds,
                engine=self.engine_note,
            )
        return results  # type: ignore[return-value]

    def stacked_evals(self) -> dict[str, Tensor]:
        """Every evaluated series as (n_eval, K), with loss-derived metrics (RMSE, R²)."""
        stacked = {k: torch.stack(v).float() for k, v in self.ev.items()}
        if self.task.loss_metrics is not None:
            for split, (_, ys) in self.data.splits().items():
                key = "train_loss_eval" if split == "train" else f"{split}_loss"
                if key in stacked:
                    var = (ys - ys.mean()).pow(2).mean()
                    for m, v in self.task.loss_metrics(stacked[key], var).items():
                        stacked[f"{split}_{m}"] = v
        return stacked


def _best(curves: Curves) -> dict[str, float]:
    """The lowest finite validation (else test) loss and its epoch."""
    key = "val_loss" if "val_loss" in curves else "test_loss"
    values = curves.get(key)
    finite = [(v, i) for i, v in enumerate(values or []) if math.isfinite(v)]
    if not finite:
        return {}
    v, i = min(finite)
    return {"metric": key, "value": v, "epoch": curves["eval_epoch"][i]}
