#!/usr/bin/python3
"""Export small PyTorch models the way users' ONNX files look.

Writes testdata/foreign/<name>/model.onnx with one test data set in ONNX's
backend-test layout (test_data_set_0/input_0.pb, output_0.pb: serialized
TensorProto). Inputs come from fixed seeds; outputs are computed by PyTorch.
Every exported model is checked with onnx.checker.check_model(full_check=True)
(without letting onnx 1.12 rewrite the file, see check_model below).

Run from the repository root with Debian's interpreter (which sees
python3-torch, python3-torchvision and python3-onnx):

    /usr/bin/python3 scripts/make_foreign_fixtures.py

The tests under internal/peer run each fixture in ONNX Runtime and compare
with output_0.pb.
"""

import argparse
import collections
import os
import sys
import tempfile
import warnings

import numpy as np
import onnx
import onnx.numpy_helper
import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, conv1x1

MAX_BYTES = 1 << 20  # each model file stays well under 1 MB
BATCH = 2  # the fixtures feed two samples through the symbolic batch axis
INPUT_NAME = "input"
OUTPUT_NAME = "output"


class ConvNet(nn.Module):
    """conv-relu-pool-conv-relu-pool-flatten-linear on 1x16x16 inputs."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = self.pool1(torch.relu(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x)))
        return self.fc(self.flatten(x))


class BNNet(nn.Module):
    """conv-bn-relu-pool twice, then flatten-linear, on 3x16x16 inputs."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = self.pool1(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool2(torch.relu(self.bn2(self.conv2(x))))
        return self.fc(self.flatten(x))


class ZeroBiasNet(nn.Module):
    """Three 4->4 convs whose biases are all zero (equal initializers)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv3 = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * 8 * 8, 10)
        for conv in (self.conv1, self.conv2, self.conv3):
            nn.init.zeros_(conv.bias)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = self.pool(torch.relu(self.conv3(x)))
        return self.fc(self.flatten(x))


class VGGStyle(nn.Module):
    """torchvision's VGG layout in miniature on 3x16x16 inputs: a features stack,
    AdaptiveAvgPool2d to the size the features already have (exported as a 1x1
    AveragePool), and a classifier with Dropout (dropped by the eval export)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((4, 4))
        self.classifier = nn.Sequential(
            nn.Linear(8 * 4 * 4, 32),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(32, 10),
        )

    def forward(self, x):
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


class MiniResNet(nn.Module):
    """A two-stage ResNet on 3x16x16 inputs built from torchvision's BasicBlock
    (conv-bn-relu-conv-bn, skip Add, relu), with torchvision's ResNet head:
    AdaptiveAvgPool2d((1, 1)), flatten, linear. (torchvision's ResNet class
    itself has fixed widths 64-512, too large for a fixture.)"""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = BasicBlock(8, 8)
        downsample = nn.Sequential(conv1x1(8, 16, stride=2), nn.BatchNorm2d(16))
        self.layer2 = BasicBlock(8, 16, stride=2, downsample=downsample)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def randomize_batchnorm(model, gen):
    """Give every BatchNorm non-trivial affine parameters and running statistics,
    as a trained model has, so folding or keeping them is visible in outputs."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))


# name -> (builder, input CxHxW, opset, export keyword arguments, seed,
#          op types the export must contain, op types it must not contain)
FIXTURES = [
    ("convnet_opset9", ConvNet, (1, 16, 16), 9, {}, 1, {"Conv", "MaxPool", "Flatten", "Gemm"}, set()),
    ("convnet_opset13", ConvNet, (1, 16, 16), 13, {}, 1, {"Conv", "MaxPool", "Flatten", "Gemm"}, set()),
    ("convnet_opset17", ConvNet, (1, 16, 16), 17, {}, 1, {"Conv", "MaxPool", "Flatten", "Gemm"}, set()),
    ("bn_folded", BNNet, (3, 16, 16), 13, {}, 2, {"Conv"}, {"BatchNormalization"}),
    (
        "bn_kept",
        BNNet,
        (3, 16, 16),
        13,
        {"training": torch.onnx.TrainingMode.PRESERVE},
        2,
        {"Conv", "BatchNormalization"},
        set(),
    ),
    ("zero_bias", ZeroBiasNet, (1, 16, 16), 13, {}, 3, {"Conv", "Identity"}, set()),
    ("vgg_style", VGGStyle, (3, 16, 16), 13, {}, 5, {"Conv", "AveragePool", "Gemm"}, {"Dropout"}),
    ("mini_resnet", MiniResNet, (3, 16, 16), 13, {}, 4, {"Conv", "Add", "Gemm"}, {"BatchNormalization"}),
]


def check_model(path):
    """Runs onnx.checker.check_model(path, full_check=True) without its side
    effect: in onnx 1.12 the full check of a path runs shape inference with the
    model file as output, so the file would be rewritten with value_info added.
    Here the inferred model goes to a temporary file instead."""
    onnx.checker.check_model(path)
    with tempfile.TemporaryDirectory() as tmp:
        onnx.shape_inference.infer_shapes_path(
            path, os.path.join(tmp, "inferred.onnx"), check_type=True, strict_mode=True
        )


def op_histogram(model):
    """Returns the op types of the main graph with their counts, sorted by name."""
    return sorted(collections.Counter(n.op_type for n in model.graph.node).items())


def export_one(out_dir, name, builder, chw, opset, kwargs, seed, must, must_not):
    """Builds, exports, checks and writes one fixture; returns the exported
    model and its file size."""
    torch.manual_seed(seed)
    model = builder()
    randomize_batchnorm(model, torch.Generator().manual_seed(seed + 1000))
    model.eval()
    x = torch.randn((BATCH,) + chw, generator=torch.Generator().manual_seed(seed + 2000))
    with torch.no_grad():
        y = model(x)

    case_dir = os.path.join(out_dir, name)
    data_dir = os.path.join(case_dir, "test_data_set_0")
    os.makedirs(data_dir, exist_ok=True)
    model_path = os.path.join(case_dir, "model.onnx")
    torch.onnx.export(
        model,
        x,
        model_path,
        opset_version=opset,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        **kwargs,
    )

    size = os.path.getsize(model_path)
    if size >= MAX_BYTES:
        sys.exit(f"{model_path}: {size} bytes, want under {MAX_BYTES}")
    with open(model_path, "rb") as f:
        written = f.read()
    check_model(model_path)
    with open(model_path, "rb") as f:
        if f.read() != written:
            sys.exit(f"{model_path}: changed by the checker")
    exported = onnx.load_from_string(written)
    ops = {n.op_type for n in exported.graph.node}
    if not must <= ops:
        sys.exit(f"{model_path}: missing op types {sorted(must - ops)}; got {sorted(ops)}")
    if ops & must_not:
        sys.exit(f"{model_path}: unexpected op types {sorted(ops & must_not)}")
    dim0 = exported.graph.input[0].type.tensor_type.shape.dim[0]
    if dim0.dim_param != "batch":
        sys.exit(f"{model_path}: input batch dimension is not symbolic: {dim0}")

    for fname, tname, arr in (("input_0.pb", INPUT_NAME, x), ("output_0.pb", OUTPUT_NAME, y)):
        tensor = onnx.numpy_helper.from_array(arr.numpy().astype(np.float32), tname)
        with open(os.path.join(data_dir, fname), "wb") as f:
            f.write(tensor.SerializeToString())
    return exported, size


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("testdata", "foreign"), help="output directory (%(default)s)")
    args = parser.parse_args()

    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    # The PRESERVE export warns about constant folding in training mode; the
    # models are exported in eval mode, where folding changes no parameter.
    warnings.filterwarnings("ignore", message="It is recommended that constant folding be turned off")
    print(f"torch {torch.__version__}, onnx {onnx.__version__}, numpy {np.__version__}")
    for name, builder, chw, opset, kwargs, seed, must, must_not in FIXTURES:
        exported, size = export_one(args.out, name, builder, chw, opset, kwargs, seed, must, must_not)
        hist = ", ".join(f"{op} {n}" for op, n in op_histogram(exported))
        opsets = ",".join(f"{o.domain or 'ai.onnx'}:{o.version}" for o in exported.opset_import)
        print(f"{name}: ir {exported.ir_version}, opset {opsets}, {size} bytes, "
              f"{len(exported.graph.initializer)} initializers: {hist}")


if __name__ == "__main__":
    main()
