"""The PyTorch 1.13 side of bench/run.sh's training workloads.

Run with Debian's /usr/bin/python3 (python3-torch, python3-torchvision).
Each command prints "key value" lines on standard output:

  torch_peer.py train NET VARIANT STEPS
      NET vgg-mini (1x28x28) or vgg11 (CIFAR-style, 3x32x32), 10 classes;
      VARIANT plain or ball-learn. ns: the mean time of an optimisation step
      on a fixed random batch of 64, over STEPS steps after one untimed step
  torch_peer.py vgg16-step
      torchvision's vgg16, 10 classes, the first optimisation step on a
      random batch of 8 at 3x224x224. ns: its time; rss_kib: the peak
      resident set size of the process

A step is PyTorch's usual one: zero the gradients, forward, mean
cross-entropy, backward, SGD (lr 0.01, momentum 0.9, weight decay 5e-4), on
torch.set_num_threads(2). The nets match dcconvert's models package layer
for layer (models/vgg.go): 3x3 pad 1 convolutions with bias and ReLU, 2x2
max pools, Linear / ReLU / Dropout classifiers. ball-learn replaces every
convolution by BallConv, the decoupled convolution of DCNET.md section 1
with a learnable radius (section 2); as dcconvert's trainer does, it leaves
the decoupled filters and the radii out of the weight decay (section 4).
"""

import resource
import sys
import time

import torch
from torch import nn
import torch.nn.functional as F

torch.set_num_threads(2)
torch.manual_seed(1)

CLASSES = 10
POOL = "M"

# name: (feature layers, classifier hidden widths, input C, input H = W)
NETS = {
    "vgg-mini": ([16, 16, POOL, 32, 32, POOL], [64], 1, 28),
    "vgg11": ([64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL], [512, 512], 3, 32),
}


class BallConv(nn.Module):
    """Decoupled 3x3 pad 1 convolution: ball magnitude (alpha 1), cos angular
    activation, no weighting, learnable radius, bias:

        N     = sqrt(conv(x*x, ones) + eps)   the patch norm, one channel
        cos   = clamp(conv(x, W_c / |w|_c) / N, -1, 1)
        rho_c = (v_c^2 + 1e-4) * m,  m = the mean of N over batch and locations
        y     = min(N, rho_c) / rho_c * cos + b_c
    """

    eps = 1e-4

    def __init__(self, cin, cout):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, 3, 3))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.bias = nn.Parameter(torch.zeros(cout))
        self.rho_v = nn.Parameter(torch.ones(cout))
        self.weight.no_decay = self.rho_v.no_decay = True
        self.register_buffer("ones", torch.ones(1, cin, 3, 3))
        # The running mean of m that inference uses, kept up as dcconvert's
        # engine keeps it.
        self.register_buffer("rho_scale", torch.zeros(()))

    def forward(self, x):
        n = torch.sqrt(F.conv2d(x * x, self.ones, padding=1) + self.eps)
        norm = torch.sqrt(self.weight.pow(2).sum(dim=(1, 2, 3), keepdim=True) + self.eps)
        cos = torch.clamp(F.conv2d(x, self.weight / norm, padding=1) / n, -1, 1)
        m = n.mean()
        with torch.no_grad():
            self.rho_scale.mul_(0.999).add_(0.001 * m)
        rho = ((self.rho_v.pow(2) + 1e-4) * m).view(1, -1, 1, 1)
        return torch.minimum(n, rho) / rho * cos + self.bias.view(1, -1, 1, 1)


def plain_conv(cin, cout):
    return nn.Conv2d(cin, cout, 3, padding=1)


def build(net, variant):
    """Returns the network as an nn.Sequential and its input shape C, H, W."""
    convs = {"plain": plain_conv, "ball-learn": BallConv}
    if net not in NETS or variant not in convs:
        raise SystemExit(f"unknown net {net!r} or variant {variant!r}: want {list(NETS)} and {list(convs)}")
    layers, hidden, c, hw = NETS[net]
    mods, cin, side = [], c, hw
    for v in layers:
        if v == POOL:
            mods.append(nn.MaxPool2d(2))
            side //= 2
        else:
            mods += [convs[variant](cin, v), nn.ReLU()]
            cin = v
    mods.append(nn.Flatten())
    width = cin * side * side
    for h in hidden:
        mods += [nn.Linear(width, h), nn.ReLU(), nn.Dropout()]
        width = h
    mods.append(nn.Linear(width, CLASSES))
    return nn.Sequential(*mods), (c, hw, hw)


def stepper(net, batch, shape):
    """Returns a function running one optimisation step of net on a fixed
    random batch."""
    decay = [p for p in net.parameters() if not getattr(p, "no_decay", False)]
    rest = [p for p in net.parameters() if getattr(p, "no_decay", False)]
    groups = [{"params": decay, "weight_decay": 5e-4}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    opt = torch.optim.SGD(groups, lr=0.01, momentum=0.9)
    x = torch.randn(batch, *shape)
    y = torch.arange(batch) % CLASSES
    net.train()

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    return step


def train(net, variant, steps):
    model, shape = build(net, variant)
    step = stepper(model, 64, shape)
    step()
    t0 = time.perf_counter_ns()
    for _ in range(int(steps)):
        step()
    print(f"ns {(time.perf_counter_ns() - t0) / int(steps):.0f}")


def vgg16_step():
    import torchvision

    step = stepper(torchvision.models.vgg16(weights=None, num_classes=CLASSES), 8, (3, 224, 224))
    t0 = time.perf_counter_ns()
    step()
    print(f"ns {time.perf_counter_ns() - t0}")
    print(f"rss_kib {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")  # KiB on Linux


COMMANDS = {"train": train, "vgg16-step": vgg16_step}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        raise SystemExit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
