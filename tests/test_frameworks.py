"""fused_optim inside the real training engines: Lightning, HF transformers' Trainer and Accelerate.

Each engine checks what it is given (isinstance of Optimizer / LRScheduler, the scheduler's optimizer), wraps it,
calls ``step`` in its own order (Lightning with a closure), and saves and restores ``state_dict`` on resume. The
tests run each engine with fused_optim and with torch.optim and assert the same weights and lrs, and check that a
resumed run equals an uninterrupted one. The engines are test-only dependencies: a missing one skips its tests.
"""

import inspect
import math

import pytest
import torch

import fused_optim
from fused_optim import lr_scheduler as sch

ENGINES = "(lightning|pytorch_lightning|lightning_fabric|torchmetrics|transformers|accelerate|huggingface_hub)"
pytestmark = [
    # torch warns when a scheduler steps before its optimizer: that step order is part of what is tested.
    pytest.mark.filterwarnings("error:Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`"),
    # The engines' own deprecation notices (such as lightning's use of torch's pytree on torch 2.14) are theirs, not
    # ours: never errors, even under -W error.
    *(pytest.mark.filterwarnings(f"ignore::{w}:{ENGINES}") for w in ("DeprecationWarning", "FutureWarning")),
]

# float32 runs of a few dozen steps: the fused kernels round differently from torch.optim, ~3e-8 measured.
TOL = dict(rtol=1e-6, atol=1e-6)
LR = 1e-2
BATCH = 8


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tensors of a few hundred elements: extra threads only contend, and on a busy 2-core machine this file took
    # ~30 s with torch's 2 threads against ~12 s with 1.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g), torch.randn(n, 1, generator=g)


def _net():
    torch.manual_seed(0)
    # A norm so that create_optimizer / HF's weight-decay grouping makes two param groups.
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def _cosine_with_warmup(step, warmup, total):
    """HF's cosine schedule, written out for torch's LambdaLR (the reference runs)."""
    if step < warmup:
        return step / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def _linear_with_warmup(step, warmup, total):
    return step / warmup if step < warmup else max(0.0, (total - step) / (total - warmup))


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def _assert_same(a, b, tol=TOL):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **tol)


# Lightning ---------------------------------------------------------------------------------------------------


def _lit_module(pl, make_optimizers, automatic=True):
    class Lit(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _net()
            self.lrs = []
            self.automatic_optimization = automatic

        def training_step(self, batch, batch_idx):
            x, y = batch
            self.lrs.append(self.optimizers().param_groups[0]["lr"])
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            if automatic:
                return loss
            opt, sched = self.optimizers(), self.lr_schedulers()
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
            sched.step()

        def configure_optimizers(self):
            return make_optimizers(self)

    return Lit()


def _lit_fit(pl, module, ckpt_path=None, **trainer_args):
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_args,
    )
    x, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)
    trainer.fit(module, loader, ckpt_path=ckpt_path, **({"weights_only": True} if ckpt_path else {}))
    return trainer


def _lit_adamw_cosine(fused, total):
    def make(module):
        cls = fused_optim.AdamW if fused else torch.optim.AdamW
        opt = fused_optim.create_optimizer(cls, module, lr=LR, weight_decay=0.1)
        if fused:
            sched = sch.get_cosine_schedule_with_warmup(opt, 3, total)
        else:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: _cosine_with_warmup(t, 3, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return make


@pytest.mark.parametrize("extra", [{}, {"gradient_clip_val": 0.05, "accumulate_grad_batches": 2}])
def test_lightning_fit_matches_torch(extra):
    pl = pytest.importorskip("lightning.pytorch")
    steps = 16
    runs = []
    for fused in (True, False):
        module = _lit_module(pl, _lit_adamw_cosine(fused, steps))
        trainer = _lit_fit(pl, module, max_steps=steps, **extra)
        assert type(trainer.optimizers[0]) is (fused_optim.AdamW if fused else torch.optim.AdamW)
        assert trainer.global_step == steps
        runs.append(module)
    ours, ref = runs
    # Automatic optimization calls optimizer.step(closure): without the closure's forward and backward the
    # weights would not move. Every micro-batch records the lr, so accumulation repeats each value.
    per_step = extra.get("accumulate_grad_batches", 1)
    expected = [LR * _cosine_with_warmup(t // per_step, 3, steps) for t in range(steps * per_step)]
    assert ours.lrs == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert ours.lrs == pytest.approx(ref.lrs, rel=1e-12, abs=1e-15)
    _assert_same(_params(ours), _params(ref))


def test_lightning_mixed_precision_with_in_kernel_clipping():
    """Under a mixed-precision plugin Lightning refuses gradient_clip_val for any optimizer that unscales its own
    gradients (_step_supports_amp_scaling: fused_optim's, torch's fused=True) even when no scaler is used;
    max_grad_norm clips inside the step instead and gives what Lightning's clipping gives torch.optim.AdamW."""
    pl = pytest.importorskip("lightning.pytorch")

    def make(fused):
        def configure(module):
            if fused:
                return fused_optim.AdamW(module.parameters(), lr=LR, weight_decay=0.1, max_grad_norm=0.05)
            return torch.optim.AdamW(module.parameters(), lr=LR, weight_decay=0.1)

        return configure

    ours, ref = (_lit_module(pl, make(fused)) for fused in (True, False))
    # bf16 autocast: CPU has no fp16 AMP, so no GradScaler either.
    _lit_fit(pl, ours, max_steps=16, precision="bf16-mixed")
    _lit_fit(pl, ref, max_steps=16, precision="bf16-mixed", gradient_clip_val=0.05)
    _assert_same(_params(ours), _params(ref))


def test_lightning_manual_optimization_matches_torch():
    pl = pytest.importorskip("lightning.pytorch")

    def make(fused):
        def configure(module):
            optim, sched = (fused_optim, sch) if fused else (torch.optim, torch.optim.lr_scheduler)
            opt = optim.SGD(module.parameters(), lr=LR, momentum=0.9, nesterov=True, weight_decay=1e-3)
            return [opt], [sched.LinearLR(opt, start_factor=0.25, total_iters=10)]

        return configure

    ours, ref = (_lit_module(pl, make(fused), automatic=False) for fused in (True, False))
    trainer = _lit_fit(pl, ours, max_epochs=2)
    assert type(trainer.optimizers[0]) is fused_optim.SGD
    _lit_fit(pl, ref, max_epochs=2)
    assert ours.lrs == pytest.approx(ref.lrs, rel=1e-12) and len(ours.lrs) == 16
    _assert_same(_params(ours), _params(ref))


def test_lightning_checkpoint_resume(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    steps = 24  # 3 epochs of 8 batches; resume at an epoch boundary, where Lightning's data order is exact
    make = _lit_adamw_cosine(True, steps)
    whole = _lit_module(pl, make)
    _lit_fit(pl, whole, max_epochs=3)

    first = _lit_module(pl, make)
    trainer = _lit_fit(pl, first, max_epochs=2)
    trainer.save_checkpoint(tmp_path / "half.ckpt")
    resumed = _lit_module(pl, make)
    # weights_only=True: the optimizer's and scheduler's state_dicts must load through torch's safe unpickler.
    trainer = _lit_fit(pl, resumed, ckpt_path=tmp_path / "half.ckpt", max_epochs=3)
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == steps
    assert first.lrs + resumed.lrs == whole.lrs
    _assert_same(_params(resumed), _params(whole))


# HF transformers' Trainer ------------------------------------------------------------------------------------


class HFNet(torch.nn.Module):
    """The Trainer's model contract: keyword inputs from the collator, a dict with ``loss`` out."""

    def __init__(self):
        super().__init__()
        self.net = _net()

    def forward(self, x, labels):
        out = self.net(x)
        return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}


def _hf_train(tmp_path, model, max_steps=12, resume=None, **kwargs):
    transformers = pytest.importorskip("transformers")
    trainer_kwargs = {k: kwargs.pop(k) for k in ("optimizers", "optimizer_cls_and_kwargs") if k in kwargs}
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=max_steps,
        per_device_train_batch_size=BATCH,
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
        logging_strategy="steps",
        logging_steps=1,  # log_history then holds every step's lr and grad norm
        # The Trainer clips at 1.0 by default; off unless a test asks, so that clipping is tested on purpose.
        **{"save_strategy": "no", "max_grad_norm": 0.0, **kwargs},
    )
    x, y = _data()
    dataset = [{"x": x[i], "labels": y[i]} for i in range(len(x))]
    trainer = transformers.Trainer(model, args=args, train_dataset=dataset, **trainer_kwargs)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def _log(trainer, key):
    return [h[key] for h in trainer.state.log_history if key in h]


@pytest.mark.parametrize("max_grad_norm", [0.0, 0.05])
def test_hf_trainer_optimizers_match_torch(tmp_path, max_grad_norm):
    transformers = pytest.importorskip("transformers")
    runs = []
    for fused in (True, False):
        model = HFNet()
        opt = (fused_optim.AdamW if fused else torch.optim.AdamW)(model.parameters(), lr=LR, weight_decay=0.1)
        factory = sch.get_scheduler if fused else transformers.get_scheduler
        sched = factory("cosine", opt, num_warmup_steps=3, num_training_steps=12)
        trainer = _hf_train(tmp_path, model, optimizers=(opt, sched), max_grad_norm=max_grad_norm)
        assert trainer.optimizer.optimizer is opt and trainer.lr_scheduler is sched  # accelerate wraps the opt
        runs.append((model, trainer))
    (ours, ours_trainer), (ref, ref_trainer) = runs
    assert _log(ours_trainer, "learning_rate") == pytest.approx(_log(ref_trainer, "learning_rate"), rel=1e-12)
    assert len(_log(ours_trainer, "learning_rate")) == 12
    if max_grad_norm:  # the Trainer clipped (norms well above 0.05) before our step
        assert min(_log(ours_trainer, "grad_norm")) > 10 * max_grad_norm
        assert _log(ours_trainer, "grad_norm") == pytest.approx(_log(ref_trainer, "grad_norm"), rel=1e-5)
    _assert_same(_params(ours), _params(ref))


def test_hf_trainer_in_kernel_clipping_matches_trainer_clipping(tmp_path):
    """fused_optim.AdamW(max_grad_norm=...) under a Trainer that does not clip equals the Trainer clipping for
    torch.optim.AdamW."""
    transformers = pytest.importorskip("transformers")
    runs = []
    for fused in (True, False):
        model = HFNet()
        if fused:
            opt = fused_optim.AdamW(model.parameters(), lr=LR, weight_decay=0.1, max_grad_norm=0.05)
        else:
            opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.1)
        sched = transformers.get_linear_schedule_with_warmup(opt, 2, 12)
        _hf_train(tmp_path, model, optimizers=(opt, sched), max_grad_norm=0.0 if fused else 0.05)
        runs.append(_params(model))
    _assert_same(*runs)


def test_hf_trainer_optimizer_cls_and_kwargs(tmp_path):
    """The Trainer builds the optimizer itself (its weight-decay groups) and its own scheduler on it."""
    transformers = pytest.importorskip("transformers")
    if "optimizer_cls_and_kwargs" not in inspect.signature(transformers.Trainer).parameters:
        pytest.skip("this transformers has no Trainer(optimizer_cls_and_kwargs=...)")
    common = dict(learning_rate=LR, weight_decay=0.1, warmup_steps=3, lr_scheduler_type="cosine")
    ours, ref = HFNet(), HFNet()
    # The Trainer passes only these kwargs (not learning_rate & co.) to a class given this way.
    kwargs = {"lr": LR, "betas": (0.9, 0.999), "eps": 1e-8}
    trainer = _hf_train(tmp_path, ours, optimizer_cls_and_kwargs=(fused_optim.AdamW, kwargs), **common)
    assert type(trainer.optimizer.optimizer) is fused_optim.AdamW
    assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == [0.1, 0.0]
    ref_trainer = _hf_train(tmp_path, ref, optim="adamw_torch", **common)
    assert type(ref_trainer.optimizer.optimizer) is torch.optim.AdamW
    assert _log(trainer, "learning_rate") == pytest.approx(_log(ref_trainer, "learning_rate"), rel=1e-12)
    _assert_same(_params(ours), _params(ref))


def test_hf_trainer_resume_from_checkpoint(tmp_path):
    """The Trainer saves optimizer.pt and scheduler.pt and loads them back with torch.load(weights_only=True)."""
    pytest.importorskip("transformers")

    def run(resume=None):
        model = HFNet()
        opt = fused_optim.AdamW(model.parameters(), lr=LR, weight_decay=0.1)
        sched = sch.get_cosine_schedule_with_warmup(opt, 3, 12)
        trainer = _hf_train(
            tmp_path, model, optimizers=(opt, sched), resume=resume, save_strategy="steps", save_steps=5
        )
        return model, trainer

    whole, whole_trainer = run()
    # Resuming mid-epoch (step 5 of 8): the Trainer skips the batches already seen.
    resumed, trainer = run(resume=str(tmp_path / "checkpoint-5"))
    assert trainer.lr_scheduler.last_epoch == 12
    # log_history: the checkpoint's 5 steps, then the resumed run's 7.
    assert _log(trainer, "learning_rate") == _log(whole_trainer, "learning_rate")
    _assert_same(_params(resumed), _params(whole))


# Accelerate --------------------------------------------------------------------------------------------------


def _accelerate_run(accelerate, fused, accumulate=1, batches=range(12), save_to=None, load_from=None):
    """Adam (L2 decay) with a linear warm-up and decay, in accelerate's documented loop."""
    accelerator = accelerate.Accelerator(cpu=True, gradient_accumulation_steps=accumulate)
    model = _net()
    if fused:
        opt = fused_optim.Adam(model.parameters(), lr=LR, weight_decay=0.01)
        sched = sch.get_linear_schedule_with_warmup(opt, 2, 12)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: _linear_with_warmup(t, 2, 12))
    inner = opt
    model, opt, sched = accelerator.prepare(model, opt, sched)
    assert opt.optimizer is inner and sched.scheduler.optimizer is inner  # recognised and wrapped
    if load_from is not None:
        accelerator.load_state(load_from)
    x, y = _data(BATCH * 12)
    lrs = []
    for i in batches:
        with accelerator.accumulate(model):
            lrs.append(opt.param_groups[0]["lr"])
            loss = torch.nn.functional.mse_loss(model(x[i * BATCH : (i + 1) * BATCH]), y[i * BATCH : (i + 1) * BATCH])
            accelerator.backward(loss)
            opt.step()
            sched.step()
            opt.zero_grad()
    if save_to is not None:
        accelerator.save_state(save_to)
    return model, inner, lrs


@pytest.mark.parametrize("accumulate", [1, 2])
def test_accelerate_matches_torch(accumulate):
    accelerate = pytest.importorskip("accelerate")
    ours, opt, lrs = _accelerate_run(accelerate, True, accumulate)
    ref, _, ref_lrs = _accelerate_run(accelerate, False, accumulate)
    # With accumulation the optimizer and the scheduler step on every accumulate-th batch only.
    assert lrs == pytest.approx([LR * _linear_with_warmup(i // accumulate, 2, 12) for i in range(12)], rel=1e-12)
    assert lrs == pytest.approx(ref_lrs, rel=1e-12)
    assert all(s["step"] == 12 // accumulate for s in opt.state.values())
    _assert_same(_params(ours), _params(ref))


def test_accelerate_save_and_load_state(tmp_path):
    accelerate = pytest.importorskip("accelerate")
    whole, _, lrs = _accelerate_run(accelerate, True)
    # Stopping after 5 batches and resuming from the saved state is the uninterrupted run.
    _, _, before = _accelerate_run(accelerate, True, batches=range(5), save_to=tmp_path)
    resumed, _, after = _accelerate_run(accelerate, True, batches=range(5, 12), load_from=tmp_path)
    assert before + after == lrs
    _assert_same(_params(resumed), _params(whole))
