"""fused_optim.create_optimizer: names, classes, and the weight-decay groups it builds for a model."""

from __future__ import annotations

import pytest
import torch

import fused_optim


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, 8)
        self.fc = torch.nn.Linear(8, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.head = torch.nn.Linear(8, 2, bias=False)
        self.frozen = torch.nn.Parameter(torch.ones(3, 3), requires_grad=False)


@pytest.mark.parametrize(
    "name, cls, implied",
    [
        ("sgd", fused_optim.SGD, {}),
        ("Momentum", fused_optim.SGD, {"momentum": 0.9}),
        ("nesterov", fused_optim.SGD, {"momentum": 0.9, "nesterov": True}),
        ("rmsprop", fused_optim.RMSprop, {}),
        ("adagrad", fused_optim.Adagrad, {}),
        ("adam", fused_optim.Adam, {}),
        ("AdamW", fused_optim.AdamW, {}),
        ("lion", fused_optim.Lion, {}),
        ("lamb", fused_optim.LAMB, {}),
    ],
)
def test_names(name, cls, implied):
    opt = fused_optim.create_optimizer(name, Net(), lr=0.01)
    assert type(opt) is cls
    for group in opt.param_groups:
        assert group["lr"] == 0.01
        for k, v in implied.items():
            assert group[k] == v
    assert name.lower() in fused_optim.list_optimizers()


def test_no_decay_for_biases_and_norms():
    net = Net()
    opt = fused_optim.create_optimizer("adamw", net, lr=1e-3, weight_decay=0.05, no_weight_decay=["embed.weight"])
    by_id = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    expected = {
        "embed.weight": 0.0,  # listed
        "fc.weight": 0.05,
        "fc.bias": 0.0,
        "norm.weight": 0.0,
        "norm.bias": 0.0,
        "head.weight": 0.05,
    }
    named = dict(net.named_parameters())
    assert {n: by_id[id(named[n])] for n in expected} == expected
    assert id(net.frozen) not in by_id  # frozen params are left out


def test_filter_off_params_and_classes():
    net = Net()
    opt = fused_optim.create_optimizer("adamw", net, weight_decay=0.1, filter_bias_and_norm=False)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.1
    assert opt.param_groups[0]["lr"] == 1e-3  # the class default
    opt = fused_optim.create_optimizer(torch.optim.SGD, net.fc.parameters(), lr=0.1, momentum=0.5)
    assert type(opt) is torch.optim.SGD and opt.param_groups[0]["momentum"] == 0.5
    opt = fused_optim.create_optimizer("adamw", net, lr=1e-3, master_weights=True, max_grad_norm=1.0)
    assert opt.max_grad_norm == 1.0


def test_no_weight_decay_holds_without_the_bias_and_norm_filter():
    net = Net()
    opt = fused_optim.create_optimizer(
        "adamw", net, weight_decay=0.1, filter_bias_and_norm=False, no_weight_decay=["fc.bias", "embed.weight"]
    )
    by_id = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    named = dict(net.named_parameters())
    assert {n: by_id[id(named[n])] for n in ("fc.bias", "embed.weight", "fc.weight", "norm.bias")} == {
        "fc.bias": 0.0,
        "embed.weight": 0.0,
        "fc.weight": 0.1,
        "norm.bias": 0.1,  # the filter is off: only the listed names are exempt
    }


@pytest.mark.parametrize(
    "name, cls, default", [("adamw", torch.optim.AdamW, 0.01), ("sgd", torch.optim.SGD, 0.0), ("lion", None, 0.0)]
)
def test_weight_decay_defaults_to_the_optimizers_own(name, cls, default):
    """As lr=None does: AdamW's 0.01 (torch.optim.AdamW's default too), on matrices only."""
    if cls is not None:
        assert cls([torch.zeros(1)]).defaults["weight_decay"] == default
    net = Net()
    opt = fused_optim.create_optimizer(name, net)
    by_id = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert by_id[id(net.fc.weight)] == default and by_id[id(net.head.weight)] == default
    assert by_id[id(net.fc.bias)] == 0.0 and by_id[id(net.norm.weight)] == 0.0


def test_a_torch_optimizer_without_weight_decay():
    """Rprop and LBFGS take no weight_decay: the default 0 is not passed to them."""
    assert type(fused_optim.create_optimizer(torch.optim.Rprop, Net(), lr=0.01)) is torch.optim.Rprop
    assert type(fused_optim.create_optimizer(torch.optim.LBFGS, Net().fc.parameters())) is torch.optim.LBFGS


def test_errors():
    with pytest.raises(ValueError, match="unknown optimizer 'adamax'; known: adagrad, adam, adamw"):
        fused_optim.create_optimizer("adamax", Net())
    with pytest.raises(TypeError, match="name or a torch.optim.Optimizer subclass"):
        fused_optim.create_optimizer(42, Net())
