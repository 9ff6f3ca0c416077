"""Three Adam steps of WeSpeaker's code and ours from the same weights on the same batches.

    SBS_DIR=SCRATCH python bench/sbs_step_parity.py

Reads the initial weights and first batches WeSpeaker dumped for seed 1
(``$SBS_DIR/dump/ws-s1``, see bench/results_side_by_side.md) and imports
WeSpeaker's model and head from the side-by-side scratch copy (``$SBS_DIR/ref``;
nothing of WeSpeaker's is in the project). Prints losses, gradient and weight
differences per step, and the same for our code at 1 vs 2 threads: the yardstick
of a rounding-only difference.
"""
import os
import sys

import torch

SBS = os.environ["SBS_DIR"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(SBS, "ref"), os.path.join(SBS, "shims"),
                os.path.join(SBS, "refpkgs"), REPO]
from wespeaker.models.speaker_model import get_speaker_model  # noqa: E402
from wespeaker.models.projections import ArcMarginProduct as WsArc  # noqa: E402
from wespeaker_py.config import load_config  # noqa: E402
from wespeaker_py.models.projections import get_projection  # noqa: E402
from wespeaker_py.runtime.builder import build_speaker_model  # noqa: E402

D = os.path.join(SBS, "dump", "ws-s1") + "/"
init = torch.load(D + "init.pt")
batches = torch.load(D + "epoch_1.pt")[:3]


def _last(o):
    return o[-1] if isinstance(o, tuple) else o


def ws_model():
    m = get_speaker_model("ECAPA_TDNN_c512")(feat_dim=80, embed_dim=192, pooling_func="ASTP")
    m.add_module("projection", WsArc(192, 62, scale=32.0, margin=0.0, easy_margin=False))
    m.load_state_dict(init)
    return m, (lambda m, f, y: torch.nn.functional.cross_entropy(
        m.projection(_last(m(f)), y), y))


def our_model():
    cfg = load_config(os.path.join(REPO, "examples/mini/conf/ecapa_tdnn.yaml"),
                      [("exp_dir", "/tmp/x"), ("data_type", "raw")])
    # what the trainer's builder.build_model assembles for this fbank config
    m = build_speaker_model(cfg)
    m.add_module("projection", get_projection(cfg.projection_args,
                                              embed_dim=cfg.model_args["embed_dim"],
                                              num_class=62))
    m.load_state_dict(init)
    return m, (lambda m, f, y: m.projection.logits_and_loss(
        m(f), y, torch.nn.CrossEntropyLoss())[1])


def run(make, threads):
    torch.set_num_threads(threads)
    m, lossf = make()
    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=0.0, weight_decay=1e-4)
    out = []
    for b in batches:
        for g in opt.param_groups:
            g["lr"] = b["lr"]
        loss = lossf(m, b["feat"].float(), b["label"].long())
        opt.zero_grad()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in m.named_parameters()}
        opt.step()
        out.append((loss.item(), grads,
                    {n: p.detach().clone() for n, p in m.named_parameters()}))
    return out


ws, ours1, ours2 = run(ws_model, 1), run(our_model, 1), run(our_model, 2)


def cmp(a, b, name):
    for i, ((la, ga, wa), (lb, gb, wb)) in enumerate(zip(a, b)):
        rel = {n: ((ga[n] - gb[n]).abs().max() / ga[n].abs().max().clamp(min=1e-30)).item()
               for n in ga}
        worst = max(rel, key=rel.get)
        gnorm = (sum(((ga[n] - gb[n]) ** 2).sum() for n in ga)
                 / sum((ga[n] ** 2).sum() for n in ga)).sqrt().item()
        big = [n for n in ga
               if ga[n].abs().max() > 1e-4 * max(g.abs().max() for g in ga.values())]
        grel_big = max(rel[n] for n in big)
        grel = (f"{rel[worst]:.2e} ({worst}, max |grad| {ga[worst].abs().max().item():.1e}); "
                f"over tensors with max |grad| > 1e-4 of the largest: {grel_big:.1e}; "
                f"whole-gradient relative norm {gnorm:.1e}")
        wdiff = max((wa[n] - wb[n]).abs().max().item() for n in wa)
        moved = sum(int(((wa[n] - wb[n]).abs() > 1e-6).sum()) for n in wa)
        print(f"{name} step {i+1}: loss {la:.7f} vs {lb:.7f}; "
              f"max grad diff / max |grad| per tensor {grel}; "
              f"max weight diff {wdiff:.2e}; weights apart by > 1e-6: {moved}")


print("WeSpeaker loss per step", [round(b['loss'], 6) for b in batches])
cmp(ws, ours1, "WeSpeaker vs ours (1 thread)")
cmp(ours1, ours2, "ours 1 thread vs ours 2 threads")
