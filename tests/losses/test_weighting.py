"""Each weighting strategy against its definition, plus exact resume through state_dict."""

import copy
import io
import math

import pytest
import torch
from gloo import run_gloo
from torch import nn

from changeagent.errors import ChangeAgentError
from changeagent.losses import DWA, GradNorm, create_weighting

TASKS = ["mask", "caption"]


def test_fixed_is_weighted_sum_and_skips_logging_parts():
    wt = create_weighting({"name": "fixed", "weights": {"mask": 2.0, "caption": 0.25}}, TASKS)
    losses = {"mask": torch.tensor(3.0), "caption": torch.tensor(4.0), "mask/change": torch.tensor(9.0)}
    total, weights = wt(losses)
    assert total.item() == pytest.approx(2.0 * 3.0 + 0.25 * 4.0)
    assert weights == {"mask": 2.0, "caption": 0.25}
    total, weights = wt({"mask": torch.tensor(3.0)})  # mask-only stage
    assert total.item() == pytest.approx(6.0) and weights == {"mask": 2.0}


def test_normalized_gradient_is_grad_over_loss_and_value_is_task_count():
    a = torch.tensor([1.5, -0.7], requires_grad=True)  # only in task 1
    b = torch.tensor([0.3, 2.0], requires_grad=True)  # only in task 2
    s = torch.tensor([0.8], requires_grad=True)  # shared

    def task_losses():
        return {"mask": (a**2).sum() * s.abs().sum() + 1.0, "caption": torch.exp(b).sum() * s.sum() ** 2}

    total, weights = create_weighting({"name": "normalized"}, TASKS)(task_losses())
    assert total.item() == pytest.approx(2.0)
    total.backward()
    ref = task_losses()
    ga, gs1 = torch.autograd.grad(ref["mask"], [a, s], retain_graph=True)
    gb, gs2 = torch.autograd.grad(ref["caption"], [b, s])
    lm, lc = ref["mask"].item(), ref["caption"].item()
    assert torch.allclose(a.grad, ga / lm) and torch.allclose(b.grad, gb / lc)
    assert torch.allclose(s.grad, gs1 / lm + gs2 / lc)
    assert weights["mask"] == pytest.approx(1 / lm) and weights["caption"] == pytest.approx(1 / lc)


def test_uncertainty_gradient_and_convergence_to_log_loss():
    wt = create_weighting({"name": "uncertainty"}, TASKS)
    assert wt.trainable and len(list(wt.parameters())) == 1
    with torch.no_grad():
        wt.log_vars.copy_(torch.tensor([0.3, -0.5]))
    losses = {"mask": torch.tensor(4.0), "caption": torch.tensor(0.25)}
    total, weights = wt(losses)
    expected = math.exp(-0.3) * 4.0 + 0.3 + math.exp(0.5) * 0.25 - 0.5
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert weights["mask"] == pytest.approx(math.exp(-0.3), rel=1e-6)
    total.backward()
    assert wt.log_vars.grad.tolist() == pytest.approx([1 - math.exp(-0.3) * 4.0, 1 - math.exp(0.5) * 0.25],
                                                      rel=1e-6)
    opt = torch.optim.Adam(wt.parameters(), lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        wt(losses)[0].backward()
        opt.step()
    assert wt.log_vars.tolist() == pytest.approx([math.log(4.0), math.log(0.25)], abs=0.03)


def _feed(wt, pairs):
    for m, c in pairs:
        wt({"mask": torch.tensor(m), "caption": torch.tensor(c)})


def test_dwa_weights_from_known_history():
    wt = create_weighting({"name": "dwa", "temperature": 2.0}, TASKS)
    _feed(wt, [(0.5, 1.5), (1.5, 2.5)])  # period 1 means (1.0, 2.0)
    wt.end_period()
    _, w = wt({"mask": torch.tensor(0.4), "caption": torch.tensor(1.6)})
    assert w == {"mask": 1.0, "caption": 1.0}  # period 2: still equal weights
    _feed(wt, [(0.6, 2.0)])  # period 2 means (0.5, 1.8) with the 0.4/1.6 step above
    wt.end_period()
    # r = (0.5/1.0, 1.8/2.0) = (0.5, 0.9); w_i = 2 exp(r_i/2) / (exp(0.25) + exp(0.45))
    # = 2 * 1.284025 / 2.852338, 2 * 1.568312 / 2.852338
    wt.eval()  # eval-mode calls use the weights but are not recorded
    total, w = wt({"mask": torch.tensor(1.0), "caption": torch.tensor(1.0)})
    assert w["mask"] == pytest.approx(0.900332, abs=1e-6)
    assert w["caption"] == pytest.approx(1.099668, abs=1e-6)
    assert sum(w.values()) == pytest.approx(2.0) and total.item() == pytest.approx(2.0)
    _feed(wt, [(100.0, 100.0)])
    wt.train()
    _feed(wt, [(0.25, 1.8)])
    wt.end_period()  # period 3 means (0.25, 1.8): r = (0.5, 1.0); 2 e^.25/(e^.25+e^.5) = 0.875647
    assert wt({"mask": torch.tensor(1.0)})[1]["mask"] == pytest.approx(0.875647, abs=1e-6)


def test_dwa_step_window_matches_epoch_mode():
    steps = [(1.0, 2.0), (0.5, 1.8), (0.25, 1.8), (0.3, 1.0)]
    window = create_weighting({"name": "dwa", "period_steps": 1}, TASKS)
    epoch = create_weighting({"name": "dwa"}, TASKS)
    for m, c in steps:
        _feed(window, [(m, c)])
        _feed(epoch, [(m, c)])
        epoch.end_period()
        assert torch.equal(window.weights, epoch.weights)
    assert window.weights.tolist() != [1.0, 1.0]


def _toy(seed=0):
    torch.manual_seed(seed)
    return nn.ModuleDict({"shared": nn.Linear(4, 8), "h1": nn.Linear(8, 1), "h2": nn.Linear(8, 1)})


def _toy_losses(model, step, scale2=10.0):
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(32, 4, generator=g)
    y = x[:, :1] * 2 - x[:, 1:2]
    f = torch.tanh(model["shared"](x))
    return {"mask": ((model["h1"](f) - y) ** 2).mean(),
            "caption": scale2 * ((model["h2"](f) + y) ** 2).mean()}


def test_gradnorm_first_step_follows_definition():
    model = _toy()
    wt = create_weighting({"name": "gradnorm", "alpha": 1.5}, TASKS)
    shared = list(model["shared"].parameters())
    losses = _toy_losses(model, 0)
    norms = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(v, shared, retain_graph=True)]).norm()
             for v in losses.values()]
    total, weights = wt(losses, shared_params=shared)
    assert total.item() == pytest.approx((losses["mask"] + losses["caption"]).item(), rel=1e-6)
    assert weights == {"mask": 1.0, "caption": 1.0}
    total.backward()
    # step 1: w = 1, r = 1, target = mean norm; d sum|n_i w_i - mean| / dw_i = sign(n_i - mean) n_i
    mean = (norms[0] + norms[1]) / 2
    expected = [torch.sign(n - mean) * n for n in norms]
    assert wt.task_weights.grad.tolist() == pytest.approx([e.item() for e in expected], rel=1e-5)
    # the network sees the plain weighted sum (weights detached)
    ref = _toy(0)
    ref_losses = _toy_losses(ref, 0)
    (ref_losses["mask"] + ref_losses["caption"]).backward()
    assert torch.allclose(model["shared"].weight.grad, ref["shared"].weight.grad)


def test_gradnorm_lowers_weight_of_task_with_10x_gradient():
    model = _toy()
    wt = create_weighting({"name": "gradnorm"}, TASKS)
    opt = torch.optim.Adam([*model.parameters(), *wt.parameters()], lr=0.01)
    for step in range(30):
        total, weights = wt(_toy_losses(model, step), shared_params=list(model["shared"].parameters()))
        opt.zero_grad()
        total.backward()
        opt.step()
    assert weights["caption"] < 0.8 < 1.2 < weights["mask"]
    assert sum(weights.values()) == pytest.approx(2.0, abs=1e-5)
    with pytest.raises(ChangeAgentError, match="shared_params"):
        wt(_toy_losses(model, 0))


STRATEGIES = [
    {"name": "fixed", "weights": {"mask": 0.5}},
    {"name": "normalized"},
    {"name": "uncertainty", "init": 0.2},
    {"name": "dwa", "period_steps": 2},
    {"name": "gradnorm", "alpha": 0.5},
]


def _run(model, wt, opt, steps):
    record = []
    for step in steps:
        total, weights = wt(_toy_losses(model, step), shared_params=list(model["shared"].parameters()))
        opt.zero_grad()
        total.backward()
        opt.step()
        record.append((total.item(), weights))
    return record


@pytest.mark.parametrize("cfg", STRATEGIES, ids=lambda c: c["name"])
def test_state_dict_round_trip_continues_identically(cfg):
    model = _toy()
    wt = create_weighting(cfg, TASKS)
    opt = torch.optim.Adam([*model.parameters(), *wt.parameters()], lr=0.01)
    _run(model, wt, opt, range(5))
    buf = io.BytesIO()  # as in a checkpoint: tensors only, loadable with weights_only
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "w": wt.state_dict()}, buf)
    expected = _run(model, wt, opt, range(5, 10))

    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    model2 = _toy(seed=123)
    wt2 = create_weighting(copy.deepcopy(cfg), TASKS)
    opt2 = torch.optim.Adam([*model2.parameters(), *wt2.parameters()], lr=0.01)
    model2.load_state_dict(state["model"])
    wt2.load_state_dict(state["w"])
    opt2.load_state_dict(state["opt"])
    assert _run(model2, wt2, opt2, range(5, 10)) == expected


def test_resume_state_holds_history_and_initial_losses():
    dwa = create_weighting({"name": "dwa"}, TASKS)
    assert isinstance(dwa, DWA)
    assert {"loss_sum", "loss_count", "history", "periods", "steps", "weights"} <= set(dwa.state_dict())
    gn = create_weighting({"name": "gradnorm"}, TASKS)
    assert isinstance(gn, GradNorm)
    assert {"task_weights", "initial_losses"} <= set(gn.state_dict())


def test_config_and_input_errors():
    for cfg, msg in [({"name": "softmax"}, "name: 'softmax' is not one of"),
                     ({"name": "dwa", "temp": 2}, "temp: unknown key .did you mean 'temperature'"),
                     ({"name": "dwa", "temperature": 0}, "temperature: must be > 0"),
                     ({"name": "fixed", "weights": {"det": 1.0}}, "unknown task"),
                     ({"name": "gradnorm", "alpha": -1}, "alpha")]:
        with pytest.raises(ChangeAgentError, match=msg):
            create_weighting(cfg, TASKS)
    with pytest.raises(ChangeAgentError, match="unique"):
        create_weighting({}, ["mask", "mask"])
    wt = create_weighting(None, TASKS)  # default: the reference normalisation
    with pytest.raises(ChangeAgentError, match="unknown task"):
        wt({"mask": torch.tensor(1.0), "detection": torch.tensor(1.0)})
    with pytest.raises(ChangeAgentError, match="none of the tasks"):
        wt({"mask/change": torch.tensor(1.0)})
    with pytest.raises(ChangeAgentError, match="scalar"):
        wt({"mask": torch.ones(2)})


class _LossNet(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, step):
        return _toy_losses(self.model, step)


def _ddp_worker(rank, world, out_dir):
    dwa = create_weighting({"name": "dwa"}, TASKS)
    _feed(dwa, [[(0.5, 1.5)], [(1.5, 2.5)]][rank])  # global period 1 means (1.0, 2.0)
    dwa.end_period()
    _feed(dwa, [[(0.4, 1.6)], [(0.6, 2.0)]][rank])  # global period 2 means (0.5, 1.8)
    dwa.end_period()
    model = _toy()
    ddp = nn.parallel.DistributedDataParallel(_LossNet(model))  # GradNorm's extra grads under DDP
    gn = create_weighting({"name": "gradnorm"}, TASKS)
    total, _ = gn(ddp(rank), shared_params=list(model["shared"].parameters()))
    total.backward()
    torch.save({"dwa": dwa.weights.clone(), "gn_grad": gn.task_weights.grad.clone(),
                "net_grad": model["shared"].weight.grad.clone()}, f"{out_dir}/rank{rank}.pt")


def test_ddp_ranks_share_weights(tmp_path):
    """Two gloo ranks (forked: fast) with different losses derive the weights of the global batch."""
    run_gloo(_ddp_worker, tmp_path, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert r0["dwa"].tolist() == pytest.approx([0.900332, 1.099668], abs=1e-6)
    assert torch.equal(r0["dwa"], r1["dwa"]) and torch.equal(r0["gn_grad"], r1["gn_grad"])
    assert torch.allclose(r0["net_grad"], r1["net_grad"])  # DDP still syncs the network gradients
    # GradNorm norms are those of the gradient of the global (rank-averaged) loss
    model = _toy()
    shared = list(model["shared"].parameters())
    per_rank = [_toy_losses(model, r) for r in range(2)]
    norms = []
    for task in TASKS:
        mean_loss = (per_rank[0][task] + per_rank[1][task]) / 2
        norms.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(mean_loss, shared, retain_graph=True)]).norm())
    mean = (norms[0] + norms[1]) / 2
    assert r0["gn_grad"].tolist() == pytest.approx([(torch.sign(n - mean) * n).item() for n in norms], rel=1e-5)
