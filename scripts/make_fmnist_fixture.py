#!/usr/bin/python3
"""Train a small CNN on Fashion-MNIST and record what PyTorch says it scores.

Writes testdata/fmnist/model.onnx and testdata/fmnist/expected.json:

  - the net is conv16-relu-pool-conv32-relu-pool-flatten-linear10 (3x3
    convolutions with padding 1, 2x2 max pools), about 20k parameters;
  - it is trained for one epoch of the 60000 training images (Adam, learning
    rate 1e-3, batch 64, seeded order) with 2 threads, in well under a
    minute;
  - it is exported with torch.onnx.export at opset 13 with a symbolic batch
    dimension, and the preprocessing is recorded in the model's
    metadata_props under "dcconvert.preprocess": {"input": [1, 28, 28],
    "mean": [MEAN], "std": [STD], "classes": [names]};
  - it is evaluated in float32 on all 10000 test images with exactly the
    preprocessing dcconvert applies (pixel / 255, then (x - MEAN) / STD):
    top-1 and top-5 accuracy in percent, and the mean cross-entropy of the
    softmax of the logits (computed in float64 from the float32 logits).

Run from the repository root with Debian's interpreter (which sees
python3-torch and python3-onnx) and Debian's dataset-fashion-mnist:

    /usr/bin/python3 scripts/make_fmnist_fixture.py

The Go test TestEvalFashionMNISTTruth in cmd/dcconvert evaluates the model
with `dcconvert eval` and compares with expected.json.
"""

import argparse
import gzip
import json
import os
import sys
import tempfile
import warnings

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA_DIR = "/usr/share/datasets/fashion-mnist"
OUT_DIR = "testdata/fmnist"
SEED = 1
EPOCHS = 1
BATCH = 64
LR = 1e-3
MEAN = 0.2860  # Fashion-MNIST's pixel mean and standard deviation (train split)
STD = 0.3530
MAX_BYTES = 200_000
META_KEY = "dcconvert.preprocess"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
COMMAND = "/usr/bin/python3 scripts/make_fmnist_fixture.py"


def read_idx(path, want_dims):
    """Reads a gzipped idx file into a uint8 array, checking its header."""
    with gzip.open(path, "rb") as f:
        b = f.read()
    if b[0] != 0 or b[1] != 0 or b[2] != 0x08 or b[3] != want_dims:
        raise SystemExit(f"{path}: not an idx file of unsigned bytes with {want_dims} dimensions")
    dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], "big") for i in range(want_dims)]
    data = np.frombuffer(b, dtype=np.uint8, offset=4 + 4 * want_dims)
    if data.size != int(np.prod(dims)):
        raise SystemExit(f"{path}: {data.size} values for dimensions {dims}")
    return data.reshape(dims)


def load(split):
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(DATA_DIR, f"{prefix}-images-idx3-ubyte.gz"), 3)
    labels = read_idx(os.path.join(DATA_DIR, f"{prefix}-labels-idx1-ubyte.gz"), 1)
    return images, labels.astype(np.int64)


def preprocess(images):
    """dcconvert's preprocessing: float32 pixel / 255, then (x - MEAN) / STD."""
    x = torch.from_numpy(images.copy()).to(torch.float32).unsqueeze(1) / 255
    mean = torch.tensor(MEAN, dtype=torch.float32)
    std = torch.tensor(STD, dtype=torch.float32)
    return (x - mean) / std


class Net(nn.Module):
    """conv16-relu-pool-conv32-relu-pool-flatten-linear10 on 1x28x28."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x):
        x = self.pool1(torch.relu(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x)))
        return self.fc(self.flatten(x))


def train(net, x, y):
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    net.train()
    for epoch in range(EPOCHS):
        order = torch.randperm(len(y), generator=gen)
        total, n = 0.0, 0
        for i in range(0, len(y), BATCH):
            idx = order[i:i + BATCH]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x[idx]), torch.from_numpy(y)[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            n += len(idx)
        print(f"epoch {epoch + 1}: mean training loss {total / n:.4f}", file=sys.stderr)


def evaluate(net, x, y):
    """Top-1, top-5 (percent) and mean cross-entropy over every sample."""
    net.eval()
    labels = torch.from_numpy(y)
    top1 = top5 = 0
    ce = 0.0
    with torch.no_grad():
        for i in range(0, len(y), 1000):
            logits = net(x[i:i + 1000])
            lab = labels[i:i + 1000]
            top = logits.topk(5, dim=1).indices
            top1 += (top[:, 0] == lab).sum().item()
            top5 += (top == lab[:, None]).any(dim=1).sum().item()
            ce += F.cross_entropy(logits.to(torch.float64), lab, reduction="sum").item()
    n = len(y)
    return 100.0 * top1 / n, 100.0 * top5 / n, ce / n


def export(net, path):
    net.eval()
    dummy = torch.zeros(2, 1, 28, 28)
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "model.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, dummy, raw, opset_version=13,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              do_constant_folding=True)
        model = onnx.load(raw)
    meta = {"input": [1, 28, 28], "mean": [MEAN], "std": [STD], "classes": CLASSES}
    entry = model.metadata_props.add()
    entry.key = META_KEY
    entry.value = json.dumps(meta, separators=(",", ":"))
    model.doc_string = "Fashion-MNIST test fixture of dcconvert, made by scripts/make_fmnist_fixture.py"
    onnx.checker.check_model(model, full_check=True)
    b = model.SerializeToString()
    if len(b) > MAX_BYTES:
        raise SystemExit(f"{path}: {len(b)} bytes, over the {MAX_BYTES} budget")
    with open(path, "wb") as f:
        f.write(b)
    return len(b)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=OUT_DIR, help="directory to write (default %(default)s)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    np.random.seed(SEED)

    train_images, train_labels = load("train")
    test_images, test_labels = load("test")
    net = Net()
    train(net, preprocess(train_images), train_labels)
    top1, top5, ce = evaluate(net, preprocess(test_images), test_labels)

    os.makedirs(args.out, exist_ok=True)
    size = export(net, os.path.join(args.out, "model.onnx"))
    expected = {
        "top1": top1,
        "top5": top5,
        "mean_cross_entropy": ce,
        "images": int(len(test_labels)),
        "split": "test",
        "preprocess": {"input": [1, 28, 28], "mean": [MEAN], "std": [STD]},
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "command": COMMAND,
    }
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out}/model.onnx ({size} bytes) and expected.json: "
          f"top-1 {top1:.2f}%, top-5 {top5:.2f}%, mean cross-entropy {ce:.6f}", file=sys.stderr)


if __name__ == "__main__":
    main()
