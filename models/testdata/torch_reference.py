#!/usr/bin/python3
"""Run a models-built ONNX file's weights through the same network in PyTorch.

Builds the torchvision network the file claims to be (vgg11/13/16/19 with or
without batch norm, in torchvision's or the small-input layout; vgg-mini;
resnet18), loads every initializer of the ONNX file into it with
load_state_dict(strict=True) (so the names and shapes must match the
torchvision layout exactly), runs the input in eval mode and writes the output.
No ONNX engine is involved: the Go test compares this output with ONNX
Runtime's.

Use Debian's interpreter, which sees python3-torch, python3-torchvision and
python3-onnx:

    /usr/bin/python3 torch_reference.py --model M.onnx --arch vgg11 [--bn] \
        --input in.f32 --shape 2,3,32,32 --output out.f32

in.f32 and out.f32 are raw little-endian float32 arrays (C order). The output
shape is printed on stdout.
"""

import argparse
import sys

import numpy as np
import onnx
import onnx.numpy_helper
import torch
import torch.nn as nn
import torchvision

VGG_CFGS = {
    "vgg11": "A",
    "vgg13": "B",
    "vgg16": "D",
    "vgg19": "E",
}


def vgg_features(cfg, in_channels, bn):
    """torchvision's make_layers: the 'features' Sequential."""
    layers = []
    c = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(c, v, kernel_size=3, padding=1))
        if bn:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        c = v
    return nn.Sequential(*layers)


def classifier(in_features, hidden, classes, depth):
    """Linear, ReLU, Dropout repeated, then the last Linear."""
    layers = []
    n = in_features
    for _ in range(depth):
        layers += [nn.Linear(n, hidden), nn.ReLU(True), nn.Dropout()]
        n = hidden
    layers.append(nn.Linear(n, classes))
    return nn.Sequential(*layers)


class Plain(nn.Module):
    """features, optional avgpool, flatten, classifier."""

    def __init__(self, features, avgpool, classifier):
        super().__init__()
        self.features = features
        if avgpool is not None:
            self.avgpool = avgpool
        self.classifier = classifier

    def forward(self, x):
        x = self.features(x)
        if hasattr(self, "avgpool"):
            x = self.avgpool(x)
        return self.classifier(torch.flatten(x, 1))


def build(arch, bn, shape, classes):
    c, h, w = shape[1:]
    if arch == "resnet18":
        m = torchvision.models.resnet18(num_classes=classes)
        if c != 3:
            m.conv1 = nn.Conv2d(c, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return m
    if arch == "vgg-mini":
        cfg = [16, 16, "M", 32, 32, "M"]
        feats = vgg_features(cfg, c, bn)
        return Plain(feats, None, classifier(32 * (h // 4) * (w // 4), 64, classes, 1))
    cfg = torchvision.models.vgg.cfgs[VGG_CFGS[arch]]
    feats = vgg_features(cfg, c, bn)
    fh, fw = h // 32, w // 32
    if fh >= 7 and fw >= 7:
        return Plain(feats, nn.AdaptiveAvgPool2d((7, 7)), classifier(512 * 49, 4096, classes, 2))
    return Plain(feats, None, classifier(512 * fh * fw, 512, classes, 2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--arch", required=True)
    ap.add_argument("--bn", action="store_true")
    ap.add_argument("--input", required=True)
    ap.add_argument("--shape", required=True)
    ap.add_argument("--output", required=True)
    args = ap.parse_args()

    torch.set_num_threads(2)
    shape = [int(s) for s in args.shape.split(",")]
    model = onnx.load(args.model)
    state = {t.name: torch.from_numpy(onnx.numpy_helper.to_array(t).copy())
             for t in model.graph.initializer}
    classes = state["fc.bias" if args.arch == "resnet18" else "classifier.%d.bias" % (
        3 if args.arch == "vgg-mini" else 6)].shape[0]

    net = build(args.arch, args.bn, shape, classes)
    # num_batches_tracked is torch bookkeeping that ONNX exports never carry.
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            state[k] = v
    net.load_state_dict(state, strict=True)
    net.eval()

    x = np.fromfile(args.input, dtype="<f4").reshape(shape)
    with torch.no_grad():
        y = net(torch.from_numpy(x)).numpy().astype("<f4")
    y.tofile(args.output)
    print(",".join(str(d) for d in y.shape))
    return 0


if __name__ == "__main__":
    sys.exit(main())
