#!/usr/bin/python3
"""A PyTorch reference evaluator for ONNX CNNs with decoupled convolutions.

torch_ref.py evaluates the main graph of an ONNX model node by node with
PyTorch, in float64 by default, for the Go package peer. Plain operators are
written from the ONNX operator specification on top of torch.nn.functional.
Decoupled convolutions (domain ai.dcnet, op type DecoupledConv*) are written
straight from the formulas of DCNET.md, section 1: the configuration is read
only from the node's attributes and its inputs by position, never from the op
type's name or a FunctionProto the model may carry. Every computation uses
autograd-capable torch operations, so the same functions can produce
gradients (see the gradcheck mode and the train jobs).

Usage (Debian 12's /usr/bin/python3, which sees python3-torch and
python3-onnx):

    torch_ref.py run REQUEST_JSON
        evaluates every job of the request and writes response.json beside it
    torch_ref.py fit REQUEST_JSON
        runs optimisation steps (see "Fitting" below) and writes
        response.json beside the request
    torch_ref.py gradcheck
        checks the decoupled convolution's gradients against finite
        differences for every configuration; prints a JSON summary
    torch_ref.py stats MODEL.onnx [SEED]
        feeds seeded standard normal inputs (symbolic dimensions = 1) and
        prints output shapes and per-node decoupled statistics, for debugging

REQUEST_JSON:

    {"jobs": [{"model": PATH, "dtype": "float64" | "float32",
               "mode": "run" (default) | "train",
               "intermediates": BOOL,                    (run only)
               "labels": [INT], "label_smoothing": EPS,  (train only)
               "fd_step": H, "fd_probes": [{"init", "index"}],  (train only)
               "inputs": [{"name", "dims", "file"}]}]}

Each input file holds the tensor's values as little-endian float32 (the format
of ort_run.js); they are converted to the element type the graph declares for
that input (floating types to the run's dtype, integer types rounded). The
response, response.json:

    {"jobs": [{"error": MESSAGE} or
              {"outputs": [{"name", "type", "dims", "file"}],
               "values": [...],             (every node output, with
                                             "intermediates")
               "stats": {NODE: {...}}}]}

with every tensor written back as little-endian float32, whatever its type.
A job's failure (unsupported operator, bad attribute, missing input) is its
own "error" entry; the other jobs still run.

A "train" job evaluates the graph in training mode on one batch with integer
labels and returns the loss and its gradient with respect to every trainable
parameter, by PyTorch autograd:

    {"loss": FLOAT,
     "grads": [...],      (one tensor per parameter use, see below)
     "running": [...],    (updated BatchNormalization running statistics)
     "rho_batch": {NODE: FLOAT},
     "outputs": [...], "stats": {NODE: {...}},
     "fd": [FLOAT]}       (with "fd_probes")

Training mode differs from inference in three places:

- BatchNormalization normalises with the batch statistics (mean and
  population variance over every axis but 1), and gradients flow through
  them. Its running statistics are not used; their updated values,
  momentum * running + (1 - momentum) * batch statistic (population
  variance; momentum attribute, default 0.9), are reported under the
  running mean's and running variance's initializer names.
- A decoupled convolution with a learnable radius (RhoV and RhoScale given)
  uses rho_c = (RhoV_c^2 + 1e-4) * m, m the mean of N over the batch and every
  output location, padded borders included (DCNET.md section 2); gradients
  flow through m, RhoScale is not used, and m is reported per node.
- Dropout is the identity whatever its ratio and training_mode: the models
  this reference trains have no active dropout, and a random mask could not
  be reproduced by another implementation anyway.

The logits are the first graph output, or the input of the Softmax node
that computes it. The loss is the batch mean of
(1 - EPS) * -log softmax(logits)[label] + EPS * mean over classes of
-log softmax(logits), EPS the label smoothing (default 0).

Trainable parameters are the float initializers consumed as Conv inputs W
and B, Gemm inputs A, B and C, MatMul inputs A and B, BatchNormalization
scale and B, decoupled convolution inputs W, B, Alpha and RhoV, and either
operand of an Add whose other operand is computed from the fed inputs (a
bias, as after a MatMul), directly or through a chain of Identity nodes.
Running statistics and RhoScale are not. Each use of an initializer at such
a position is a parameter of its own (a leaf tensor of its own): the first
use, in node order, is named after the initializer, each later one
"INITIALIZER@NODE" after the consuming node's name, or "INITIALIZER@#I" for
an unnamed node, I its 0-based index in the graph. Running statistics are
named the same way.

"fd_probes" asks for central finite differences of the training loss, in
the job's dtype, with respect to single entries (flat index) of
initializers: the initializer's value is moved by +-H wherever it is used,
so a shared initializer's difference is the sum of its uses' gradients.
"""

import json
import math
import os
import sys

import numpy as np
import onnx
import onnx.helper
import onnx.numpy_helper
import torch
import torch.nn.functional as F

torch.set_num_threads(2)

DCNET_DOMAIN = "ai.dcnet"
DECOUPLED_PREFIX = "DecoupledConv"
DEFAULT_DOMAINS = ("", "ai.onnx")

# Defaults of the decoupled convolution's attributes (DCNET.md, section 1).
DEFAULT_ALPHA = 1.0
DEFAULT_BETA = 0.5
DEFAULT_K = 0.3
DEFAULT_EPS = 1e-4
DEFAULT_WEIGHTED = "none"

# rho_c = (v_c^2 + RHO_V_EPS) * RhoScale: a literal, not the eps attribute.
RHO_V_EPS = 1e-4
# The derivative of acos is evaluated at clamp(cos, -1+m, 1-m).
ACOS_GRAD_MARGIN = 1e-6

# Positions of the decoupled convolution's inputs.
IN_X, IN_W, IN_B, IN_ALPHA, IN_RHO_V, IN_RHO_SCALE = range(6)


class RefError(Exception):
    """A model the reference cannot evaluate: the message says why."""


def q(value):
    """Quotes a name for a message, as Go's %q would."""
    return json.dumps(value)


# ---------------------------------------------------------------------------
# Tensors and attributes


def float_like(dtype):
    """Reports whether a torch dtype is a floating type."""
    return dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def onnx_elem_dtype(elem_type, compute):
    """Maps an ONNX TensorProto data type to the torch dtype the run uses.

    Every floating type becomes the run's compute dtype, so a float64 run
    stays float64 through Cast nodes and float initializers.
    """
    P = onnx.TensorProto
    table = {
        P.FLOAT: compute,
        P.DOUBLE: compute,
        P.FLOAT16: compute,
        P.BFLOAT16: compute,
        P.INT64: torch.int64,
        P.INT32: torch.int32,
        P.INT16: torch.int16,
        P.INT8: torch.int8,
        P.UINT8: torch.uint8,
        P.BOOL: torch.bool,
    }
    if elem_type not in table:
        raise RefError("element type %s is not supported"
                       % onnx.TensorProto.DataType.Name(elem_type))
    return table[elem_type]


def tensor_from_proto(tp, compute):
    """Decodes a TensorProto with onnx.numpy_helper into a torch tensor."""
    arr = onnx.numpy_helper.to_array(tp)
    dtype = onnx_elem_dtype(tp.data_type, compute)
    return torch.from_numpy(np.array(arr, copy=True)).to(dtype)


def node_attrs(node):
    """Returns a node's attributes as Python values (strings decoded)."""
    out = {}
    for a in node.attribute:
        if a.ref_attr_name:
            raise RefError("attribute %s refers to %s: only a function body may do that"
                           % (q(a.name), q(a.ref_attr_name)))
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode("utf-8") for s in v]
        out[a.name] = v
    return out


def to_ints(t):
    """Returns a 0-d or 1-d integer tensor as a list of Python ints."""
    return [int(v) for v in t.reshape(-1).tolist()]


def norm_axis(axis, rank, what="axis"):
    """Maps a possibly negative axis into [0, rank)."""
    if not -rank <= axis < rank:
        raise RefError("%s %d is out of range for rank %d" % (what, axis, rank))
    return axis + rank if axis < 0 else axis


def pad_nd(x, begin, end, value=0.0):
    """Pads the trailing len(begin) dimensions of x (ONNX order of pads)."""
    spec = []
    for b, e in reversed(list(zip(begin, end))):
        spec += [b, e]
    if not any(spec):
        return x
    return F.pad(x, spec, mode="constant", value=value)


# ---------------------------------------------------------------------------
# Convolution and pooling geometry


def same_pads(in_sizes, kernel, strides, dilations, auto_pad):
    """Pads for auto_pad SAME_UPPER / SAME_LOWER: output = ceil(in / stride);
    an odd total puts the extra cell at the end (UPPER) or start (LOWER)."""
    begin, end = [], []
    for n, k, s, d in zip(in_sizes, kernel, strides, dilations):
        out = -(-n // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - n)
        small = total // 2
        if auto_pad == "SAME_UPPER":
            begin.append(small)
            end.append(total - small)
        else:
            begin.append(total - small)
            end.append(small)
    return begin, end


def geometry(x_shape, kernel, attrs, op):
    """Returns (pads_begin, pads_end, strides, dilations) of a Conv or pool.

    kernel is the spatial kernel shape; attrs holds auto_pad, pads, strides
    and dilations as ONNX defines them (defaults: NOTSET, 0, 1, 1).
    """
    nsp = len(kernel)
    if len(x_shape) != nsp + 2:
        raise RefError("%s: input of rank %d for a %d-d kernel" % (op, len(x_shape), nsp))
    in_sizes = list(x_shape[2:])
    strides = list(attrs.get("strides", [1] * nsp))
    dilations = list(attrs.get("dilations", [1] * nsp))
    if len(strides) != nsp or len(dilations) != nsp:
        raise RefError("%s: strides %s or dilations %s do not match kernel %s"
                       % (op, strides, dilations, kernel))
    if min(strides) < 1 or min(dilations) < 1:
        raise RefError("%s: strides %s and dilations %s must be positive" % (op, strides, dilations))
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        pads = list(attrs.get("pads", [0] * (2 * nsp)))
        if len(pads) != 2 * nsp:
            raise RefError("%s: pads %s do not match kernel %s" % (op, pads, kernel))
        begin, end = pads[:nsp], pads[nsp:]
    elif auto_pad == "VALID":
        begin, end = [0] * nsp, [0] * nsp
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = same_pads(in_sizes, kernel, strides, dilations, auto_pad)
    else:
        raise RefError("%s: auto_pad %s is not supported" % (op, q(auto_pad)))
    return begin, end, strides, dilations


def conv_kernel(w, attrs, op):
    """Checks the kernel_shape attribute, if any, against the weight."""
    kernel = list(w.shape[2:])
    if "kernel_shape" in attrs and list(attrs["kernel_shape"]) != kernel:
        raise RefError("%s: kernel_shape %s, weight has %s"
                       % (op, list(attrs["kernel_shape"]), kernel))
    return kernel


def conv_fn(rank):
    """Returns F.conv1d / conv2d / conv3d for an input of the given rank."""
    fns = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}
    if rank not in fns:
        raise RefError("convolution of a rank %d input is not supported" % rank)
    return fns[rank]


def pool_fns(rank):
    """Returns (max_pool, avg_pool) of torch for an input of the given rank."""
    fns = {
        3: (F.max_pool1d, F.avg_pool1d),
        4: (F.max_pool2d, F.avg_pool2d),
        5: (F.max_pool3d, F.avg_pool3d),
    }
    if rank not in fns:
        raise RefError("pooling of a rank %d input is not supported" % rank)
    return fns[rank]


def pool_extent(in_sizes, kernel, begin, end, strides, dilations, ceil_mode):
    """Returns the extra cells past the end pads that ceil_mode needs.

    Output size: floor or ceil of (in + pads - ((k-1)d+1)) / s, plus 1; with
    ceil_mode a window that would start in the end padding is dropped (as
    PyTorch and ONNX Runtime do). The padded input is then extended so that
    a plain floor-mode pooling yields exactly that many windows.
    """
    extra = []
    for n, k, b, e, s, d in zip(in_sizes, kernel, begin, end, strides, dilations):
        span = (k - 1) * d + 1
        room = n + b + e - span
        if room < 0:
            raise RefError("pool window %d larger than the padded input %d" % (span, n + b + e))
        if ceil_mode:
            out = -(-room // s) + 1
            if (out - 1) * s >= n + b:
                out -= 1
        else:
            out = room // s + 1
        extra.append(max(0, (out - 1) * s + span - (n + b + e)))
    return extra


# ---------------------------------------------------------------------------
# Plain ONNX operators. Each takes (ctx, node, inputs, attrs), where inputs
# holds a tensor or None (absent) per input position, and returns the list of
# its outputs.


def op_conv(ctx, node, inputs, attrs):
    """Conv: group, pads (asymmetric through F.pad), strides, dilations,
    auto_pad."""
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    kernel = conv_kernel(w, attrs, "Conv")
    begin, end, strides, dilations = geometry(x.shape, kernel, attrs, "Conv")
    group = attrs.get("group", 1)
    if x.shape[1] != w.shape[1] * group:
        raise RefError("Conv: input has %d channels, weight %s with group %d"
                       % (x.shape[1], list(w.shape), group))
    xp = pad_nd(x, begin, end)
    return [conv_fn(x.dim())(xp, w, b, strides, 0, dilations, group)]


def op_relu(ctx, node, inputs, attrs):
    """Relu."""
    return [torch.relu(inputs[0])]


def op_leaky_relu(ctx, node, inputs, attrs):
    """LeakyRelu: alpha defaults to 0.01."""
    return [F.leaky_relu(inputs[0], attrs.get("alpha", 0.01))]


def op_sigmoid(ctx, node, inputs, attrs):
    """Sigmoid."""
    return [torch.sigmoid(inputs[0])]


def op_tanh(ctx, node, inputs, attrs):
    """Tanh."""
    return [torch.tanh(inputs[0])]


def op_clip(ctx, node, inputs, attrs):
    """Clip: bounds as attributes (opset < 11) or optional inputs (>= 11)."""
    x = inputs[0]
    lo = inputs[1] if len(inputs) > 1 else None
    hi = inputs[2] if len(inputs) > 2 else None
    if lo is None and "min" in attrs:
        lo = torch.tensor(attrs["min"], dtype=x.dtype)
    if hi is None and "max" in attrs:
        hi = torch.tensor(attrs["max"], dtype=x.dtype)
    y = x
    if lo is not None:
        y = torch.maximum(y, lo.to(x.dtype))
    if hi is not None:
        y = torch.minimum(y, hi.to(x.dtype))
    return [y]


def single_output(node, op):
    """Rejects nodes that ask for outputs past the first."""
    if any(o for o in node.output[1:]):
        raise RefError("%s: only the first output is supported" % op)


def op_max_pool(ctx, node, inputs, attrs):
    """MaxPool: pads (as -inf), strides, dilations, ceil_mode, auto_pad."""
    single_output(node, "MaxPool")
    x = inputs[0]
    if not float_like(x.dtype):
        raise RefError("MaxPool: input type %s is not supported" % x.dtype)
    kernel = list(attrs["kernel_shape"])
    begin, end, strides, dilations = geometry(x.shape, kernel, attrs, "MaxPool")
    extra = pool_extent(x.shape[2:], kernel, begin, end, strides, dilations,
                        attrs.get("ceil_mode", 0))
    xp = pad_nd(x, begin, [e + c for e, c in zip(end, extra)], value=-math.inf)
    max_pool, _ = pool_fns(x.dim())
    return [max_pool(xp, kernel, strides, 0, dilations, ceil_mode=False)]


def op_average_pool(ctx, node, inputs, attrs):
    """AveragePool: pads, strides, ceil_mode, count_include_pad.

    The sum over each window is divided by the count of cells that count:
    the input's, plus the explicit pads' with count_include_pad; cells that
    only ceil_mode adds never count.
    """
    x = inputs[0]
    kernel = list(attrs["kernel_shape"])
    begin, end, strides, dilations = geometry(x.shape, kernel, attrs, "AveragePool")
    if any(d != 1 for d in dilations):
        raise RefError("AveragePool: dilations %s are not supported" % dilations)
    extra = pool_extent(x.shape[2:], kernel, begin, end, strides, dilations,
                        attrs.get("ceil_mode", 0))
    _, avg_pool = pool_fns(x.dim())
    full_end = [e + c for e, c in zip(end, extra)]
    xp = pad_nd(x, begin, full_end)
    mask = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype)
    if attrs.get("count_include_pad", 0):
        mask = pad_nd(mask, begin, end, value=1.0)
        mask = pad_nd(mask, [0] * len(extra), extra)
    else:
        mask = pad_nd(mask, begin, full_end)
    sums = avg_pool(xp, kernel, strides, 0)
    counts = avg_pool(mask, kernel, strides, 0)
    return [sums / counts]


def op_global_average_pool(ctx, node, inputs, attrs):
    """GlobalAveragePool: the mean over every spatial dimension."""
    x = inputs[0]
    return [x.mean(dim=tuple(range(2, x.dim())), keepdim=True)]


def op_flatten(ctx, node, inputs, attrs):
    """Flatten: [prod(dims before axis), prod(dims from axis)]."""
    x = inputs[0]
    axis = attrs.get("axis", 1)
    if axis < 0:
        axis += x.dim()
    if not 0 <= axis <= x.dim():
        raise RefError("Flatten: axis %d is out of range for rank %d" % (attrs["axis"], x.dim()))
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    inner = int(np.prod(x.shape[axis:], dtype=np.int64))
    return [x.reshape(outer, inner)]


def op_reshape(ctx, node, inputs, attrs):
    """Reshape: 0 copies the input's dimension (unless allowzero), -1 is
    inferred."""
    x = inputs[0]
    if len(inputs) > 1 and inputs[1] is not None:
        shape = to_ints(inputs[1])
    elif "shape" in attrs:
        shape = list(attrs["shape"])
    else:
        raise RefError("Reshape: no shape")
    allow_zero = attrs.get("allowzero", 0)
    out = []
    for i, s in enumerate(shape):
        if s == 0 and not allow_zero:
            if i >= x.dim():
                raise RefError("Reshape: 0 at position %d of %s, input rank %d" % (i, shape, x.dim()))
            s = x.shape[i]
        out.append(s)
    return [x.reshape(out)]


def op_gemm(ctx, node, inputs, attrs):
    """Gemm: alpha * A' B' + beta * C, A' and B' transposed on request."""
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    if attrs.get("transA", 0):
        a = a.t()
    if attrs.get("transB", 0):
        b = b.t()
    y = attrs.get("alpha", 1.0) * torch.matmul(a, b)
    if c is not None:
        y = y + attrs.get("beta", 1.0) * c
    return [y]


def op_matmul(ctx, node, inputs, attrs):
    """MatMul: numpy matmul semantics."""
    return [torch.matmul(inputs[0], inputs[1])]


def binary_operands(inputs, attrs, op):
    """Returns the two operands of an elementwise op with numpy broadcasting;
    the legacy (opset < 7) broadcast along an axis is rejected."""
    if "axis" in attrs:
        raise RefError("%s: the legacy broadcast axis attribute is not supported" % op)
    return inputs[0], inputs[1]


def op_add(ctx, node, inputs, attrs):
    """Add, with broadcasting."""
    a, b = binary_operands(inputs, attrs, "Add")
    return [a + b]


def op_sub(ctx, node, inputs, attrs):
    """Sub, with broadcasting."""
    a, b = binary_operands(inputs, attrs, "Sub")
    return [a - b]


def op_mul(ctx, node, inputs, attrs):
    """Mul, with broadcasting."""
    a, b = binary_operands(inputs, attrs, "Mul")
    return [a * b]


def op_div(ctx, node, inputs, attrs):
    """Div, with broadcasting; integer division truncates as in C."""
    a, b = binary_operands(inputs, attrs, "Div")
    if float_like(a.dtype):
        return [a / b]
    return [torch.div(a, b, rounding_mode="trunc")]


def op_batch_normalization(ctx, node, inputs, attrs):
    """BatchNormalization in inference mode:
    (x - mean) / sqrt(var + epsilon) * scale + B, per channel (axis 1).
    In a training run, batch_normalization_training instead."""
    if ctx.training is not None:
        return batch_normalization_training(ctx, node, inputs, attrs)
    single_output(node, "BatchNormalization")
    if attrs.get("training_mode", 0):
        raise RefError("BatchNormalization: training_mode is not supported")
    if attrs.get("spatial", 1) != 1:
        raise RefError("BatchNormalization: spatial=0 is not supported")
    x, scale, bias, mean, var = inputs[:5]
    shape = [1, -1] + [1] * (x.dim() - 2)
    eps = attrs.get("epsilon", 1e-5)
    inv = scale.reshape(shape) / torch.sqrt(var.reshape(shape) + eps)
    return [(x - mean.reshape(shape)) * inv + bias.reshape(shape)]


def batch_normalization_training(ctx, node, inputs, attrs):
    """BatchNormalization in training mode: normalises with the batch mean
    and population variance over every axis but 1 (gradients flow through
    both), and records the updated running statistics
    momentum * running + (1 - momentum) * batch statistic. Outputs past Y,
    if asked for, are the updated running mean and variance."""
    if any(o for o in node.output[3:]):
        raise RefError("BatchNormalization: outputs past the running variance are not supported")
    if attrs.get("spatial", 1) != 1:
        raise RefError("BatchNormalization: spatial=0 is not supported")
    x, scale, bias, mean, var = inputs[:5]
    if x.dim() < 2:
        raise RefError("BatchNormalization: input of rank %d" % x.dim())
    shape = [1, -1] + [1] * (x.dim() - 2)
    axes = [0] + list(range(2, x.dim()))
    eps = attrs.get("epsilon", 1e-5)
    momentum = attrs.get("momentum", 0.9)
    batch_mean = x.mean(dim=axes)
    centred = x - batch_mean.reshape(shape)
    batch_var = (centred * centred).mean(dim=axes)
    y = centred / torch.sqrt(batch_var.reshape(shape) + eps) * scale.reshape(shape) + bias.reshape(shape)
    new_mean = momentum * mean.detach() + (1 - momentum) * batch_mean.detach()
    new_var = momentum * var.detach() + (1 - momentum) * batch_var.detach()
    for pos, value in ((3, new_mean), (4, new_var)):
        ctx.training.running[ctx.training.running_name(ctx.node_index, pos)] = value
    return [y, new_mean, new_var]


def op_dropout(ctx, node, inputs, attrs):
    """Dropout at inference: the identity (mask all true). In a training
    run Dropout is the identity too, whatever its ratio and training_mode
    (see the module's documentation)."""
    x = inputs[0]
    if (ctx.training is None and len(inputs) > 2 and inputs[2] is not None
            and bool(inputs[2].reshape(-1)[0])):
        raise RefError("Dropout: training_mode is not supported")
    outs = [x]
    if len(node.output) > 1:
        outs.append(torch.ones_like(x, dtype=torch.bool))
    return outs


def softmax_like(ctx, x, attrs, fn):
    """Softmax-style op: before opset 13 the input is coerced to 2-d at axis
    (default 1); from 13 it works along axis (default -1)."""
    if ctx.opset < 13:
        axis = norm_axis(attrs.get("axis", 1), max(x.dim(), 1))
        outer = int(np.prod(x.shape[:axis], dtype=np.int64))
        return fn(x.reshape(outer, -1), 1).reshape(x.shape)
    return fn(x, norm_axis(attrs.get("axis", -1), x.dim()))


def op_softmax(ctx, node, inputs, attrs):
    """Softmax."""
    return [softmax_like(ctx, inputs[0], attrs, torch.softmax)]


def op_log_softmax(ctx, node, inputs, attrs):
    """LogSoftmax."""
    return [softmax_like(ctx, inputs[0], attrs, torch.log_softmax)]


def op_identity(ctx, node, inputs, attrs):
    """Identity."""
    return [inputs[0]]


def op_constant(ctx, node, inputs, attrs):
    """Constant: value, value_float(s) or value_int(s)."""
    if "value" in attrs:
        return [tensor_from_proto(attrs["value"], ctx.dtype)]
    if "value_float" in attrs:
        return [torch.tensor(attrs["value_float"], dtype=ctx.dtype)]
    if "value_floats" in attrs:
        return [torch.tensor(list(attrs["value_floats"]), dtype=ctx.dtype)]
    if "value_int" in attrs:
        return [torch.tensor(attrs["value_int"], dtype=torch.int64)]
    if "value_ints" in attrs:
        return [torch.tensor(list(attrs["value_ints"]), dtype=torch.int64)]
    raise RefError("Constant: attributes %s are not supported" % sorted(attrs))


def op_concat(ctx, node, inputs, attrs):
    """Concat along axis."""
    xs = [x for x in inputs if x is not None]
    return [torch.cat(xs, dim=norm_axis(attrs["axis"], xs[0].dim()))]


def op_shape(ctx, node, inputs, attrs):
    """Shape, with the optional start and end of opset 15."""
    dims = list(inputs[0].shape)
    start = attrs.get("start", 0)
    end = attrs.get("end", len(dims))
    return [torch.tensor(dims[start:end], dtype=torch.int64)]


def op_gather(ctx, node, inputs, attrs):
    """Gather: out shape = data[:axis] + indices + data[axis+1:]; negative
    indices count from the end."""
    data, idx = inputs[0], inputs[1].to(torch.int64)
    axis = norm_axis(attrs.get("axis", 0), data.dim())
    n = data.shape[axis]
    if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
        raise RefError("Gather: index out of range for dimension %d" % n)
    idx = torch.where(idx < 0, idx + n, idx)
    picked = torch.index_select(data, axis, idx.reshape(-1))
    shape = list(data.shape[:axis]) + list(idx.shape) + list(data.shape[axis + 1:])
    return [picked.reshape(shape)]


def axes_of(inputs, attrs):
    """Returns the axes of Unsqueeze or Squeeze: input 1 (opset >= 13) or
    the axes attribute; None when neither is given."""
    if len(inputs) > 1 and inputs[1] is not None:
        return to_ints(inputs[1])
    if "axes" in attrs:
        return list(attrs["axes"])
    return None


def op_unsqueeze(ctx, node, inputs, attrs):
    """Unsqueeze: axes refer to the output's rank."""
    x = inputs[0]
    axes = axes_of(inputs, attrs)
    if axes is None:
        raise RefError("Unsqueeze: no axes")
    rank = x.dim() + len(axes)
    for a in sorted(norm_axis(a, rank) for a in axes):
        x = x.unsqueeze(a)
    return [x]


def op_squeeze(ctx, node, inputs, attrs):
    """Squeeze: the given axes, or every dimension of size 1."""
    x = inputs[0]
    axes = axes_of(inputs, attrs)
    if axes is None:
        axes = [i for i, s in enumerate(x.shape) if s == 1]
    for a in sorted((norm_axis(a, x.dim()) for a in axes), reverse=True):
        if x.shape[a] != 1:
            raise RefError("Squeeze: dimension %d has size %d" % (a, x.shape[a]))
        x = x.squeeze(a)
    return [x]


def op_cast(ctx, node, inputs, attrs):
    """Cast: floating targets become the run's dtype (a float64 run stays
    float64); integer targets truncate toward zero."""
    return [inputs[0].to(onnx_elem_dtype(attrs["to"], ctx.dtype))]


DEFAULT_OPS = {
    "Add": op_add,
    "AveragePool": op_average_pool,
    "BatchNormalization": op_batch_normalization,
    "Cast": op_cast,
    "Clip": op_clip,
    "Concat": op_concat,
    "Constant": op_constant,
    "Conv": op_conv,
    "Div": op_div,
    "Dropout": op_dropout,
    "Flatten": op_flatten,
    "Gather": op_gather,
    "Gemm": op_gemm,
    "GlobalAveragePool": op_global_average_pool,
    "Identity": op_identity,
    "LeakyRelu": op_leaky_relu,
    "LogSoftmax": op_log_softmax,
    "MatMul": op_matmul,
    "MaxPool": op_max_pool,
    "Mul": op_mul,
    "Relu": op_relu,
    "Reshape": op_reshape,
    "Shape": op_shape,
    "Sigmoid": op_sigmoid,
    "Softmax": op_softmax,
    "Squeeze": op_squeeze,
    "Sub": op_sub,
    "Tanh": op_tanh,
    "Unsqueeze": op_unsqueeze,
}


# ---------------------------------------------------------------------------
# The decoupled convolution (DCNET.md, section 1)


class ClampedAcos(torch.autograd.Function):
    """theta = acos(c) forward; backward evaluates the derivative of acos at
    clamp(c, -1 + 1e-6, 1 - 1e-6), so gradients stay finite at |c| = 1."""

    @staticmethod
    def forward(ctx, c):
        """theta = acos(c), c already clamped to [-1, 1]."""
        ctx.save_for_backward(c)
        return torch.acos(c)

    @staticmethod
    def backward(ctx, grad):
        """-grad / sqrt(1 - c'^2), c' = clamp(c, -1 + 1e-6, 1 - 1e-6)."""
        (c,) = ctx.saved_tensors
        cc = c.clamp(-1 + ACOS_GRAD_MARGIN, 1 - ACOS_GRAD_MARGIN)
        return -grad / torch.sqrt(1 - cc * cc)


# Magnitude functions h(N); rho broadcasts over channels, cfg holds alpha and
# beta.


def mag_sphere(n, rho, cfg):
    """sphere: alpha."""
    return cfg["alpha"] * torch.ones_like(n)


def mag_ball(n, rho, cfg):
    """ball: alpha * min(N, rho) / rho."""
    return cfg["alpha"] * torch.minimum(n, rho) / rho


def mag_tanh(n, rho, cfg):
    """tanh: alpha * tanh(N / rho)."""
    return cfg["alpha"] * torch.tanh(n / rho)


def mag_linear(n, rho, cfg):
    """linear: alpha * N."""
    return cfg["alpha"] * n


def mag_seg(n, rho, cfg):
    """seg: alpha * N if N <= rho, else beta * N + alpha * rho - beta * rho."""
    a, b = cfg["alpha"], cfg["beta"]
    return torch.where(n <= rho, a * n, b * n + a * rho - b * rho)


def mag_log(n, rho, cfg):
    """log: alpha * log(1 + N)."""
    return cfg["alpha"] * torch.log(1 + n)


def mag_mix(n, rho, cfg):
    """mix: alpha * N + beta * log(1 + N)."""
    return cfg["alpha"] * n + cfg["beta"] * torch.log(1 + n)


MAGNITUDES = {
    "sphere": mag_sphere,
    "ball": mag_ball,
    "tanh": mag_tanh,
    "linear": mag_linear,
    "seg": mag_seg,
    "log": mag_log,
    "mix": mag_mix,
}
NEEDS_RHO = ("ball", "tanh", "seg")

# Angular activations g; theta is None unless the function needs it.


def ang_cos(cos, theta, cfg):
    """cos: cos."""
    return cos


def ang_linear(cos, theta, cfg):
    """linear: 1 - 2 theta / pi."""
    return 1 - 2 * theta / math.pi


def ang_sigmoid(cos, theta, cfg):
    """sigmoid: K tanh((pi/2 - theta) / (2k)), K = 1 / tanh(pi / (4k))."""
    k = cfg["k"]
    big_k = 1 / math.tanh(math.pi / (4 * k))
    return big_k * torch.tanh((math.pi / 2 - theta) / (2 * k))


def ang_sqcos(cos, theta, cfg):
    """sqcos: sign(cos) cos^2."""
    return torch.sign(cos) * cos * cos


ANGULARS = {
    "cos": ang_cos,
    "linear": ang_linear,
    "sigmoid": ang_sigmoid,
    "sqcos": ang_sqcos,
}
NEEDS_THETA = ("linear", "sigmoid")

# Weightings m(|w|_c).


def weight_none(wn):
    """none: 1."""
    return torch.ones_like(wn)


def weight_linear(wn):
    """linear: |w|_c."""
    return wn


def weight_log(wn):
    """log: log(1 + |w|_c)."""
    return torch.log(1 + wn)


WEIGHTINGS = {
    "none": weight_none,
    "linear": weight_linear,
    "log": weight_log,
}


def decoupled_config(attrs, learnable):
    """Reads and checks a decoupled convolution's configuration from its
    attributes alone. learnable says whether RhoV and RhoScale are given."""
    cfg = {}
    for name in ("magnitude", "angular"):
        if name not in attrs:
            raise RefError("attribute %s is missing" % name)
        cfg[name] = attrs[name]
    cfg["weighted"] = attrs.get("weighted", DEFAULT_WEIGHTED)
    for name, table in (("magnitude", MAGNITUDES), ("angular", ANGULARS), ("weighted", WEIGHTINGS)):
        if not isinstance(cfg[name], str) or cfg[name] not in table:
            raise RefError("%s %s is not one of %s" % (name, q(cfg[name]), ", ".join(table)))
    cfg["alpha"] = float(attrs.get("alpha", DEFAULT_ALPHA))
    cfg["beta"] = float(attrs.get("beta", DEFAULT_BETA))
    cfg["k"] = float(attrs.get("k", DEFAULT_K))
    cfg["eps"] = float(attrs.get("eps", DEFAULT_EPS))
    cfg["rho"] = float(attrs["rho"]) if "rho" in attrs else None
    problems = []
    if not cfg["eps"] > 0:
        problems.append("eps %g must be > 0" % cfg["eps"])
    if not cfg["alpha"] > 0:
        problems.append("alpha %g must be > 0" % cfg["alpha"])
    if not cfg["beta"] >= 0:
        problems.append("beta %g must be >= 0" % cfg["beta"])
    if cfg["angular"] == "sigmoid" and not cfg["k"] > 0:
        problems.append("k %g must be > 0" % cfg["k"])
    if cfg["magnitude"] in NEEDS_RHO and not learnable:
        if cfg["rho"] is None:
            problems.append("magnitude %s needs attribute rho or inputs RhoV and RhoScale"
                            % cfg["magnitude"])
        elif not cfg["rho"] > 0:
            problems.append("rho %g must be > 0" % cfg["rho"])
    if attrs.get("group", 1) != 1:
        problems.append("group %d: a decoupled convolution has group 1" % attrs["group"])
    if problems:
        raise RefError("; ".join(problems))
    return cfg


def decoupled_conv(x, w, b, scale, rho_v, rho_scale, cfg, pads_begin, pads_end,
                   strides, dilations, batch_rho=False):
    """Evaluates y = A_c h(N) m(|w|_c) g(theta) + b_c (DCNET.md, section 1).

    x is [B, Cin, *spatial], w [C, Cin, *kernel]; b, scale (A) and rho_v are
    [C] or None; rho_scale is a one-element tensor or None. With batch_rho
    (training, DCNET.md section 2) a learnable radius uses the mean of N over
    the batch and every output location in place of rho_scale, gradients
    flowing through it. Returns y and a dict of the intermediate values (N,
    P, cos, theta, h, m, g, rho, w_norm, and rho_m: that mean).
    """
    eps = cfg["eps"]
    c_out = w.shape[0]
    chan = (1, c_out) + (1,) * (x.dim() - 2)
    conv = conv_fn(x.dim())
    reduce_dims = tuple(range(1, w.dim()))

    w_norm = torch.sqrt((w * w).sum(dim=reduce_dims) + eps)
    xp = pad_nd(x, pads_begin, pads_end)
    ones = torch.ones((1,) + tuple(w.shape[1:]), dtype=x.dtype)
    n = torch.sqrt(conv(xp * xp, ones, None, strides, 0, dilations) + eps)
    p = conv(xp, w / w_norm.reshape((c_out,) + (1,) * (w.dim() - 1)), None,
             strides, 0, dilations)
    cos = torch.clamp(p / n, -1.0, 1.0)
    theta = ClampedAcos.apply(cos) if cfg["angular"] in NEEDS_THETA else None

    rho = None
    if cfg["magnitude"] in NEEDS_RHO:
        if rho_v is not None and batch_rho:
            rho_m = n.mean()
            rho = ((rho_v * rho_v + RHO_V_EPS) * rho_m).reshape(chan)
        elif rho_v is not None:
            rho = ((rho_v * rho_v + RHO_V_EPS) * rho_scale.reshape(())).reshape(chan)
        else:
            rho = torch.tensor(cfg["rho"], dtype=x.dtype)
    h = MAGNITUDES[cfg["magnitude"]](n, rho, cfg)
    g = ANGULARS[cfg["angular"]](cos, theta, cfg)
    m = WEIGHTINGS[cfg["weighted"]](w_norm).reshape(chan)

    y = h * m * g
    if scale is not None:
        y = scale.reshape(chan) * y
    if b is not None:
        y = y + b.reshape(chan)
    parts = {"w_norm": w_norm, "N": n, "P": p, "cos": cos, "h": h, "m": m, "g": g}
    if theta is not None:
        parts["theta"] = theta
    if rho is not None:
        parts["rho"] = rho
    if rho_v is not None and batch_rho and cfg["magnitude"] in NEEDS_RHO:
        parts["rho_m"] = rho_m
    return y, parts


def decoupled_stats(cfg, y, parts):
    """Per-node statistics: which side of rho each (batch, location, channel)
    entry's N lies on, and how |cos| spreads over the quarters of [0, 1]."""
    with torch.no_grad():
        n = parts["N"].expand_as(y)
        abs_cos = parts["cos"].abs()
        total = abs_cos.numel()
        if total == 0:
            raise RefError("the output is empty")
        quarter = torch.clamp(torch.floor(abs_cos * 4), max=3).to(torch.int64)
        counts = torch.bincount(quarter.reshape(-1), minlength=4)
        stats = {
            "magnitude": cfg["magnitude"],
            "angular": cfg["angular"],
            "weighted": cfg["weighted"],
            "entries": total,
            "below_rho": 0.0,
            "above_rho": 0.0,
            "cos_quartiles": [float(c) / total for c in counts.tolist()],
            "min_abs_cos": float(abs_cos.min()),
            "max_abs_cos": float(abs_cos.max()),
            "min_n": float(parts["N"].min()),
            "max_n": float(parts["N"].max()),
        }
        if "rho" in parts:
            below = (n <= parts["rho"]).to(torch.float64).mean()
            stats["below_rho"] = float(below)
            stats["above_rho"] = float((n > parts["rho"]).to(torch.float64).mean())
    return stats


def op_decoupled_conv(ctx, node, inputs, attrs):
    """A DecoupledConv* node of domain ai.dcnet: inputs X, W, B, Alpha, RhoV,
    RhoScale by position, configuration from the attributes only."""
    single_output(node, node.op_type)
    padded = list(inputs) + [None] * (6 - len(inputs))
    if len(inputs) > 6:
        raise RefError("%d inputs, at most 6 (X, W, B, Alpha, RhoV, RhoScale)" % len(inputs))
    x, w, b, scale, rho_v, rho_scale = padded
    if x is None or w is None:
        raise RefError("inputs X and W are required")
    if (rho_v is None) != (rho_scale is None):
        raise RefError("RhoV and RhoScale must be given together")
    cfg = decoupled_config(attrs, rho_v is not None)
    if w.dim() != x.dim() or w.shape[1] != x.shape[1]:
        raise RefError("X %s and W %s do not fit a group-1 convolution"
                       % (list(x.shape), list(w.shape)))
    c_out = w.shape[0]
    for name, t in (("B", b), ("Alpha", scale), ("RhoV", rho_v)):
        if t is not None and list(t.shape) != [c_out]:
            raise RefError("%s has shape %s, want [%d]" % (name, list(t.shape), c_out))
    if rho_scale is not None and rho_scale.numel() != 1:
        raise RefError("RhoScale has shape %s, want a scalar" % list(rho_scale.shape))
    kernel = conv_kernel(w, attrs, node.op_type)
    begin, end, strides, dilations = geometry(x.shape, kernel, attrs, node.op_type)
    training = ctx.training is not None and rho_v is not None
    y, parts = decoupled_conv(x, w, b, scale, rho_v, rho_scale, cfg, begin, end,
                              strides, dilations, batch_rho=training)
    key = node_key(node)
    ctx.stats[key] = decoupled_stats(cfg, y, parts)
    if "rho_m" in parts:
        ctx.training.rho_batch[key] = float(parts["rho_m"])
    if ctx.values is not None:
        for name, t in parts.items():
            ctx.values["%s/%s" % (key, name)] = t
    return [y]


# ---------------------------------------------------------------------------
# Graph evaluation


class Context:
    """The state of one model's evaluation. training is None at inference,
    a Training in a training run; node_index is the index of the node being
    evaluated."""

    def __init__(self, dtype, opset, keep_values, training=None):
        self.dtype = dtype
        self.opset = opset
        self.stats = {}
        self.values = {} if keep_values else None
        self.training = training
        self.node_index = -1


def node_key(node):
    """Names a node: its name, or its first output's when it has none."""
    return node.name or (node.output[0] if node.output else "")


def operator_for(node):
    """Returns the function that evaluates a node, or raises RefError."""
    if node.domain in DEFAULT_DOMAINS and node.op_type in DEFAULT_OPS:
        return DEFAULT_OPS[node.op_type]
    if node.domain == DCNET_DOMAIN and node.op_type.startswith(DECOUPLED_PREFIX):
        return op_decoupled_conv
    return None


def default_opset(model):
    """The model's default-domain opset version."""
    for imp in model.opset_import:
        if imp.domain in DEFAULT_DOMAINS:
            return imp.version
    raise RefError("the model imports no default-domain opset")


def input_dtype(value_info, compute):
    """The torch dtype a graph input is fed as, from its declared type."""
    tt = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type"):
        raise RefError("graph input %s is not a tensor" % q(value_info.name))
    return onnx_elem_dtype(tt.elem_type, compute)


def evaluate(model, feeds, dtype, keep_values, training=None):
    """Evaluates model's main graph on feeds (name -> float64 numpy array).

    Returns (outputs, stats, values): graph outputs by name, decoupled
    statistics by node, and (keep_values) every node output and decoupled
    intermediate by name. A training run passes a Training: it supplies the
    initializers' values and the parameter leaves, collects what training
    mode reports, and receives the logits.
    """
    graph = model.graph
    ctx = Context(dtype, default_opset(model), keep_values, training)
    env = {}
    for init in graph.initializer:
        if training is not None and init.name in training.init_values:
            env[init.name] = training.init_values[init.name]
        else:
            env[init.name] = tensor_from_proto(init, dtype)
    declared = {vi.name: vi for vi in graph.input}
    for name in feeds:
        if name not in declared:
            raise RefError("input %s is not a graph input" % q(name))
    for name, vi in declared.items():
        if name in feeds:
            target = input_dtype(vi, dtype)
            t = torch.from_numpy(feeds[name])
            if not float_like(target):
                t = torch.round(t)
            env[name] = t.to(target)
        elif name not in env:
            raise RefError("input %s is not fed" % q(name))

    for index, node in enumerate(graph.node):
        where = "node %s (%s%s)" % (q(node.name), node.domain + "." if node.domain else "", node.op_type)
        fn = operator_for(node)
        if fn is None:
            raise RefError("%s: operator is not supported" % where)
        ctx.node_index = index
        ins = []
        for pos, name in enumerate(node.input):
            if not name:
                ins.append(None)
            elif training is not None and (index, pos) in training.leaves:
                ins.append(training.leaves[(index, pos)])
            elif name in env:
                ins.append(env[name])
            else:
                raise RefError("%s: input %s is not computed before the node" % (where, q(name)))
        try:
            outs = fn(ctx, node, ins, node_attrs(node))
        except RefError as e:
            raise RefError("%s: %s" % (where, e)) from None
        except (ArithmeticError, IndexError, KeyError, RuntimeError, TypeError, ValueError) as e:
            raise RefError("%s: %s: %s" % (where, type(e).__name__, e)) from None
        for name, t in zip(node.output, outs):
            if name:
                env[name] = t
                if ctx.values is not None:
                    ctx.values[name] = t

    outputs = {}
    for vi in graph.output:
        if vi.name not in env:
            raise RefError("graph output %s is never computed" % q(vi.name))
        outputs[vi.name] = env[vi.name]
    if training is not None:
        if training.logits_name not in env:
            raise RefError("logits %s are never computed" % q(training.logits_name))
        training.logits = env[training.logits_name]
    return outputs, ctx.stats, ctx.values


# ---------------------------------------------------------------------------
# Training mode: loss, parameter gradients, running statistics

FLOAT_ELEM_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                    onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)

# Input positions of the default-domain operators whose float initializers
# are trainable parameters.
TRAINABLE_INPUTS = {
    "Conv": (1, 2),
    "Gemm": (0, 1, 2),
    "MatMul": (0, 1),
    "BatchNormalization": (1, 2),
}
# A decoupled convolution's trainable inputs (not RhoScale).
DECOUPLED_TRAINABLE = (IN_W, IN_B, IN_ALPHA, IN_RHO_V)
# BatchNormalization's running mean and variance.
RUNNING_INPUTS = (3, 4)


class Use:
    """One use of an initializer at a parameter or running-statistic
    position: node index, input position, the initializer (root) and the
    name the use is reported under."""

    def __init__(self, index, pos, root, name):
        self.index = index
        self.pos = pos
        self.root = root
        self.name = name


class Training:
    """The state a training run shares with evaluate and the operators.

    init_values holds the float initializers' values; leaves maps (node
    index, input position) to the tensor fed there in place of the
    initializer (a parameter leaf); running_names maps a BatchNormalization's
    (node index, 3 or 4) to the name its updated statistic is reported
    under. evaluate fills running, rho_batch and logits.
    """

    def __init__(self, init_values, leaves, running_names, logits_name):
        self.init_values = init_values
        self.leaves = leaves
        self.running_names = running_names
        self.logits_name = logits_name
        self.running = {}
        self.rho_batch = {}
        self.logits = None

    def running_name(self, index, pos):
        """The name of the running statistic fed to input pos of node
        index."""
        return self.running_names[(index, pos)]


def parameter_positions(node, computed):
    """Returns (trainable positions, running-statistic positions) of a
    node's inputs; computed holds the names of the values that depend on
    the fed inputs (an Add's operand is a bias when the other one is
    computed)."""
    if node.domain == DCNET_DOMAIN and node.op_type.startswith(DECOUPLED_PREFIX):
        return DECOUPLED_TRAINABLE, ()
    if node.domain in DEFAULT_DOMAINS:
        if node.op_type == "Add" and len(node.input) == 2:
            return tuple(k for k in (0, 1) if node.input[1 - k] in computed), ()
        running = RUNNING_INPUTS if node.op_type == "BatchNormalization" else ()
        return TRAINABLE_INPUTS.get(node.op_type, ()), running
    return (), ()


def use_node_name(node, index):
    """Names a node in "INITIALIZER@NODE": its name, or "#INDEX"."""
    return node.name or "#%d" % index


def parameter_uses(model, fed):
    """Lists the parameter uses and running-statistic uses of a model's
    graph, in node order, named as the module's documentation says.

    An input reaches an initializer directly or through Identity nodes;
    initializers that are fed as graph inputs are inputs, not parameters.
    """
    graph = model.graph
    floats = {init.name for init in graph.initializer
              if init.data_type in FLOAT_ELEM_TYPES and init.name not in fed}
    identity = {}
    for node in graph.node:
        if node.domain in DEFAULT_DOMAINS and node.op_type == "Identity" and node.output:
            identity[node.output[0]] = node.input[0]

    def root(name):
        seen = set()
        while name in identity and name not in seen:
            seen.add(name)
            name = identity[name]
        return name if name in floats else None

    params, running = [], []
    computed = set(fed)
    for index, node in enumerate(graph.node):
        trainable, stats = parameter_positions(node, computed)
        if any(name in computed for name in node.input):
            computed.update(o for o in node.output if o)
        where = "node %s (%s)" % (q(node.name), node.op_type)
        for positions, uses, what in ((trainable, params, "parameter"),
                                      (stats, running, "running statistic")):
            for pos in positions:
                if pos >= len(node.input) or not node.input[pos]:
                    continue
                r = root(node.input[pos])
                if r is None:
                    if uses is running:
                        raise RefError("%s: running statistic %s is not an initializer"
                                       % (where, q(node.input[pos])))
                    continue
                name = r
                if any(u.root == r for u in uses):
                    name = "%s@%s" % (r, use_node_name(node, index))
                if any(u.name == name for u in uses):
                    raise RefError("%s: %s %s is used twice by the node" % (where, what, q(r)))
                uses.append(Use(index, pos, r, name))
    return params, running


def logits_of(model):
    """Returns (the name of the logits, the Softmax node that turns them
    into the first graph output, or None)."""
    graph = model.graph
    if not graph.output:
        raise RefError("the graph has no output")
    out = graph.output[0].name
    for node in graph.node:
        if out in node.output:
            if node.domain in DEFAULT_DOMAINS and node.op_type == "Softmax":
                return node.input[0], node
            break
    return out, None


def check_logits(ctx_opset, logits, softmax, labels):
    """Checks that the logits are [batch, classes], that a final Softmax
    works along the classes, and that the labels fit."""
    if not float_like(logits.dtype) or logits.dim() != 2:
        raise RefError("logits of type %s and shape %s, want floating [batch, classes]"
                       % (str(logits.dtype).replace("torch.", ""), list(logits.shape)))
    if softmax is not None:
        attrs = node_attrs(softmax)
        axis = attrs.get("axis", 1 if ctx_opset < 13 else -1)
        if norm_axis(axis, 2) != 1:
            raise RefError("the final Softmax %s works along axis %d, not the classes"
                           % (q(softmax.name), axis))
    batch, classes = logits.shape
    if len(labels) != batch:
        raise RefError("%d labels for a batch of %d" % (len(labels), batch))
    for i, label in enumerate(labels):
        if not 0 <= label < classes:
            raise RefError("label %d of sample %d is not in [0, %d)" % (label, i, classes))


def training_loss(logits, labels, smoothing):
    """The batch mean of (1 - smoothing) * -log softmax(logits)[label] +
    smoothing * mean over classes of -log softmax(logits)."""
    logp = torch.log_softmax(logits, dim=1)
    rows = torch.arange(logits.shape[0])
    nll = -logp[rows, torch.tensor(labels, dtype=torch.int64)]
    spread = -logp.mean(dim=1)
    return ((1 - smoothing) * nll + smoothing * spread).mean()


def read_labels(job):
    """Reads and checks a train job's labels and label smoothing."""
    labels = job.get("labels")
    if not isinstance(labels, list) or not labels:
        raise RefError("a training run needs labels, one per sample")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        raise RefError("labels %s are not all integers" % labels)
    smoothing = job.get("label_smoothing", 0.0)
    if not isinstance(smoothing, (int, float)) or not 0 <= smoothing <= 1:
        raise RefError("label smoothing %s is not in [0, 1]" % q(smoothing))
    return labels, float(smoothing)


def train_job(dir_, index, job, model, feeds, dtype):
    """Runs a train job: loss, gradients of every parameter use, updated
    running statistics, the batch mean m of each learnable-radius node and,
    on request, finite differences of the loss."""
    labels, smoothing = read_labels(job)
    params, running = parameter_uses(model, feeds)
    running_names = {(u.index, u.pos): u.name for u in running}
    base = {init.name: tensor_from_proto(init, dtype) for init in model.graph.initializer
            if init.data_type in FLOAT_ELEM_TYPES}
    logits_name, softmax = logits_of(model)
    opset = default_opset(model)

    def forward(values, leaves):
        """The training loss with the given initializer values and
        parameter leaves."""
        tr = Training(values, leaves, running_names, logits_name)
        outputs, stats, _ = evaluate(model, feeds, dtype, False, tr)
        check_logits(opset, tr.logits, softmax, labels)
        return training_loss(tr.logits, labels, smoothing), outputs, stats, tr

    leaves = {(u.index, u.pos): base[u.root].clone().requires_grad_() for u in params}
    loss, outputs, stats, tr = forward(base, leaves)
    if not bool(torch.isfinite(loss)):
        raise RefError("the loss is %s" % float(loss))
    grads = {}
    if params:
        found = torch.autograd.grad(loss, [leaves[(u.index, u.pos)] for u in params],
                                    allow_unused=True)
        for u, g in zip(params, found):
            grads[u.name] = g if g is not None else torch.zeros_like(base[u.root])

    resp = {
        "loss": float(loss),
        "grads": write_tensors(dir_, "job%d_grad" % index, grads),
        "running": write_tensors(dir_, "job%d_run" % index, tr.running),
        "rho_batch": tr.rho_batch,
        "outputs": write_tensors(dir_, "job%d_out" % index, outputs),
        "stats": stats,
    }
    probes = job.get("fd_probes") or []
    if probes:
        step = float(job.get("fd_step", 0))
        if not step > 0:
            raise RefError("finite differences need fd_step > 0, not %s" % q(job.get("fd_step")))
        resp["fd"] = finite_differences(base, params, probes, step, forward)
    return resp


def finite_differences(base, params, probes, step, forward):
    """Central differences of the training loss with respect to single
    initializer entries, moved by +-step wherever the initializer is used
    (the difference quotient divides by the steps actually taken after
    rounding)."""
    out = []
    with torch.no_grad():
        for probe in probes:
            name, at = probe.get("init"), probe.get("index")
            if name not in base:
                raise RefError("finite difference: %s is not a float initializer" % q(name))
            if not isinstance(at, int) or not 0 <= at < base[name].numel():
                raise RefError("finite difference: index %s is out of range for %s of %d values"
                               % (q(at), q(name), base[name].numel()))

            def loss_at(delta, name=name, at=at):
                """The loss with entry at of initializer name moved by
                delta, and the move actually made."""
                moved = base[name].clone()
                flat = moved.view(-1)
                old = float(flat[at])
                flat[at] = old + delta
                values = dict(base)
                values[name] = moved
                leaves = {(u.index, u.pos): values[u.root] for u in params}
                return float(forward(values, leaves)[0]), float(flat[at]) - old

            up, d_up = loss_at(step)
            down, d_down = loss_at(-step)
            out.append((up - down) / (d_up - d_down))
    return out


# ---------------------------------------------------------------------------
# Fitting: optimisation steps with torch.optim
#
# A fit request runs several optimisation steps of the training loss above
# on a model, one batch each, with PyTorch's own optimisers, and returns
# how far each trainable initializer moved (new minus old value, computed
# in the run's dtype before it is rounded to float32 for transport, so that
# an update is carried to float32 precision however small it is against
# the weight):
#
#     {"model": PATH, "dtype": "float64",
#      "batches": [{"inputs": [{"name", "dims", "file"}], "labels": [INT]}],
#      "optimizer": "sgd" | "adam" | "adamw", "lr": LR,
#      "momentum": M, "nesterov": BOOL, "weight_decay": WD,
#      "wd_filters": BOOL, "schedule": "const" | "cosine",
#      "project_every": N, "clip_norm": C, "label_smoothing": EPS}
#
# response.json: {"losses": [FLOAT], "updates": [{"name", "dims", "file"}]}
# or {"error": MESSAGE}.
#
# The rules are DCNET.md section 4's: every trainable initializer (one
# leaf per initializer, its uses' gradients summed) trains; weight decay
# (torch's L2 weight_decay; decoupled for AdamW) applies to all but
# decoupled filters (unless wd_filters) and RhoV; the cosine schedule is
# torch's CosineAnnealingLR over the number of batches, stepped after each
# optimiser step; clip_norm > 0 applies clip_grad_norm_; after step s with
# s % project_every == 0 each decoupled filter bank with weighted = none is
# divided by sqrt(sum of squares per output channel + eps), in place.


def fit_request(request_path):
    """Runs a fit request and writes response.json beside it."""
    dir_ = os.path.dirname(os.path.abspath(request_path))
    with open(request_path) as f:
        req = json.load(f)
    try:
        resp = fit_job(dir_, req)
    except RefError as e:
        resp = {"error": str(e)}
    with open(os.path.join(dir_, "response.json"), "w") as f:
        json.dump(resp, f)


def fit_job(dir_, req):
    """Runs the steps of a fit request and returns the response."""
    dtype = {"float64": torch.float64, "float32": torch.float32}.get(req.get("dtype", "float64"))
    if dtype is None:
        raise RefError("dtype %s is not float64 or float32" % q(req.get("dtype")))
    model = onnx.load(req["model"])
    batches = []
    for b in req["batches"]:
        feeds = {f["name"]: read_float32(os.path.join(dir_, f["file"]), f["dims"])
                 for f in b["inputs"]}
        labels, _ = read_labels(b)
        batches.append((feeds, labels))
    if not batches:
        raise RefError("a fit request needs at least one batch")
    smoothing = float(req.get("label_smoothing", 0.0))
    params, running = parameter_uses(model, batches[0][0])
    running_names = {(u.index, u.pos): u.name for u in running}
    base = {init.name: tensor_from_proto(init, dtype) for init in model.graph.initializer
            if init.data_type in FLOAT_ELEM_TYPES}
    logits_name, softmax = logits_of(model)
    opset = default_opset(model)

    roots = []
    for u in params:
        if u.root not in roots:
            roots.append(u.root)
    leaves = {r: base[r].clone().requires_grad_() for r in roots}
    filters, rho_vs, projected = set(), set(), []
    for node in model.graph.node:
        if not (node.domain == DCNET_DOMAIN and node.op_type.startswith(DECOUPLED_PREFIX)):
            continue
        inputs = list(node.input) + [""] * 6
        attrs = node_attrs(node)
        cfg = decoupled_config(attrs, bool(inputs[IN_RHO_V]))
        w = inputs[IN_W]
        if w in leaves:
            filters.add(w)
            if cfg["weighted"] == "none" and all(w != p for p, _ in projected):
                projected.append((w, cfg["eps"]))
        if inputs[IN_RHO_V] in leaves:
            rho_vs.add(inputs[IN_RHO_V])
    wd = float(req.get("weight_decay", 0.0))
    wd_filters = bool(req.get("wd_filters", False))
    decayed = [leaves[r] for r in roots
               if r not in rho_vs and (r not in filters or wd_filters)]
    plain = [leaves[r] for r in roots
             if not (r not in rho_vs and (r not in filters or wd_filters))]
    groups = [{"params": decayed, "weight_decay": wd}, {"params": plain, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    lr = float(req["lr"])
    name = req.get("optimizer", "sgd")
    if name == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=float(req.get("momentum", 0.0)),
                              nesterov=bool(req.get("nesterov", False)))
    elif name == "adam":
        opt = torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    elif name == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    else:
        raise RefError("optimizer %s is not sgd, adam or adamw" % q(name))
    schedule = req.get("schedule", "const")
    if schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=len(batches))
    elif schedule == "const":
        sched = None
    else:
        raise RefError("schedule %s is not const or cosine" % q(schedule))
    project_every = int(req.get("project_every", 0))
    clip = float(req.get("clip_norm", 0.0))

    losses = []
    for step, (feeds, labels) in enumerate(batches, 1):
        opt.zero_grad()
        uses = {(u.index, u.pos): leaves[u.root] for u in params}
        tr = Training(base, uses, running_names, logits_name)
        evaluate(model, feeds, dtype, False, tr)
        check_logits(opset, tr.logits, softmax, labels)
        loss = training_loss(tr.logits, labels, smoothing)
        if not bool(torch.isfinite(loss)):
            raise RefError("step %d: the loss is %s" % (step, float(loss)))
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(list(leaves.values()), clip)
        opt.step()
        if sched is not None:
            sched.step()
        if project_every > 0 and step % project_every == 0:
            with torch.no_grad():
                for w, eps in projected:
                    t = leaves[w]
                    norm = torch.sqrt((t * t).reshape(t.shape[0], -1).sum(dim=1) + eps)
                    t.div_(norm.reshape((-1,) + (1,) * (t.dim() - 1)))
        losses.append(float(loss))
    updates = {r: leaves[r].detach() - base[r] for r in roots}
    return {"losses": losses, "updates": write_tensors(dir_, "update", updates)}


# ---------------------------------------------------------------------------
# File exchange with the Go package


def read_float32(path, dims):
    """Reads little-endian float32 values of the given shape as float64."""
    count = int(np.prod(dims, dtype=np.int64))
    arr = np.fromfile(path, dtype="<f4")
    if arr.size != count:
        raise RefError("%s: %d values, shape %s needs %d" % (path, arr.size, dims, count))
    return arr.astype(np.float64).reshape(dims)


def write_tensors(dir_, prefix, tensors):
    """Writes tensors (name -> torch tensor) as little-endian float32 files
    and returns their entries for the response."""
    entries = []
    for i, (name, t) in enumerate(tensors.items()):
        arr = t.detach().cpu()
        type_name = str(arr.dtype).replace("torch.", "")
        arr = arr.to(torch.float64).numpy().astype("<f4")
        fname = "%s_%d.bin" % (prefix, i)
        arr.tofile(os.path.join(dir_, fname))
        entries.append({"name": name, "type": type_name, "dims": list(arr.shape), "file": fname})
    return entries


def run_job(dir_, index, job):
    """Runs one job of a request and returns its response entry."""
    model_path = job["model"]
    dtype = {"float64": torch.float64, "float32": torch.float32}.get(job.get("dtype", "float64"))
    if dtype is None:
        raise RefError("dtype %s is not float64 or float32" % q(job.get("dtype")))
    try:
        model = onnx.load(model_path)
    except Exception as e:  # onnx raises several kinds for bad files
        raise RefError("loading %s: %s: %s" % (model_path, type(e).__name__, e)) from None
    feeds = {}
    for f in job.get("inputs", []):
        feeds[f["name"]] = read_float32(os.path.join(dir_, f["file"]), f["dims"])
    mode = job.get("mode", "run")
    if mode == "train":
        return train_job(dir_, index, job, model, feeds, dtype)
    if mode != "run":
        raise RefError("mode %s is not run or train" % q(mode))
    with torch.no_grad():
        outputs, stats, values = evaluate(model, feeds, dtype, job.get("intermediates", False))
    resp = {
        "outputs": write_tensors(dir_, "job%d_out" % index, outputs),
        "stats": stats,
    }
    if values is not None:
        resp["values"] = write_tensors(dir_, "job%d_val" % index, values)
    return resp


def run_request(request_path):
    """Runs every job of a request and writes response.json beside it."""
    dir_ = os.path.dirname(os.path.abspath(request_path))
    with open(request_path) as f:
        req = json.load(f)
    jobs = []
    for i, job in enumerate(req["jobs"]):
        try:
            jobs.append(run_job(dir_, i, job))
        except RefError as e:
            jobs.append({"error": str(e)})
    with open(os.path.join(dir_, "response.json"), "w") as f:
        json.dump({"jobs": jobs}, f)


# ---------------------------------------------------------------------------
# Self-checks and debugging


def gradcheck():
    """Checks the decoupled convolution's autograd gradients against finite
    differences (torch.autograd.gradcheck, float64) for every magnitude,
    angular and weighting, with fixed and learnable rho; and that the
    gradient stays finite where |cos| = 1. Prints a JSON summary."""
    # The tensors are tiny: a second thread only adds contention.
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(7)
    checked, failures = 0, []

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    for mag in MAGNITUDES:
        for ang in ANGULARS:
            for weighted in WEIGHTINGS:
                for learnable in ((False, True) if mag in NEEDS_RHO else (False,)):
                    cfg = decoupled_config({
                        "magnitude": mag, "angular": ang, "weighted": weighted,
                        "alpha": 1.3, "beta": 0.4, "k": 0.5, "rho": 1.7, "eps": 1e-4,
                    }, learnable)
                    x = rand(1, 2, 3, 4).requires_grad_()
                    w = rand(2, 2, 2, 2).requires_grad_()
                    b = rand(2).requires_grad_()
                    scale = (rand(2).abs() + 0.5).requires_grad_()
                    args = [x, w, b, scale]
                    if learnable:
                        args += [(rand(2).abs() + 0.5).requires_grad_(),
                                 torch.tensor(1.5, dtype=torch.float64).requires_grad_()]
                    else:
                        args += [None, None]

                    def f(*a, cfg=cfg):
                        """The decoupled convolution of one geometry: pads
                        (top 1, left 0, bottom 0, right 1), strides 1x2."""
                        return decoupled_conv(*a, cfg, [1, 0], [0, 1], [1, 2], [1, 1])[0]

                    try:
                        torch.autograd.gradcheck(f, tuple(args), eps=1e-6, atol=1e-5, rtol=1e-4)
                    except RuntimeError as e:  # gradcheck raises on a mismatch
                        failures.append("%s/%s/%s learnable=%s: %s"
                                        % (mag, ang, weighted, learnable, str(e).splitlines()[0]))
                    checked += 1

    # |cos| = 1 exactly: a patch parallel to the filter, with a tiny eps.
    finite = 0
    for ang in NEEDS_THETA:
        cfg = decoupled_config({"magnitude": "sphere", "angular": ang, "eps": 1e-30}, False)
        w = torch.tensor([[[[1.0, 2.0]]]], dtype=torch.float64, requires_grad=True)
        x = torch.tensor([[[[3.0, 6.0, -3.0, -6.0]]]], dtype=torch.float64, requires_grad=True)
        y, parts = decoupled_conv(x, w, None, None, None, None, cfg, [0, 0], [0, 0], [1, 2], [1, 1])
        y.sum().backward()
        if bool(torch.isfinite(x.grad).all()) and bool(torch.isfinite(w.grad).all()):
            finite += 1
        else:
            failures.append("angular %s: gradient not finite at |cos| = 1 (cos %s)"
                            % (ang, parts["cos"].reshape(-1).tolist()))
    print(json.dumps({"checked": checked, "finite_at_unit_cos": finite, "failures": failures}))
    return 0 if not failures else 1


def stats_main(model_path, seed):
    """Feeds seeded standard normal inputs to a model and prints its output
    shapes and decoupled statistics."""
    model = onnx.load(model_path)
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = rng.standard_normal(dims)
    with torch.no_grad():
        outputs, stats, _ = evaluate(model, feeds, torch.float64, False)
    for name, t in outputs.items():
        print("output %s %s" % (name, list(t.shape)))
    for name, s in stats.items():
        print("node %s %s" % (name, json.dumps(s)))


def main(argv):
    """Dispatches on the mode named by argv[1]."""
    if len(argv) >= 3 and argv[1] == "run":
        run_request(argv[2])
        return 0
    if len(argv) >= 3 and argv[1] == "fit":
        fit_request(argv[2])
        return 0
    if len(argv) == 2 and argv[1] == "gradcheck":
        return gradcheck()
    if len(argv) in (3, 4) and argv[1] == "stats":
        stats_main(argv[2], int(argv[3]) if len(argv) == 4 else 0)
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except RefError as e:
        sys.stderr.write("%s\n" % e)
        sys.exit(1)
