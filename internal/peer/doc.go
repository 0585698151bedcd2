// Package peer finds and drives the reference implementations tests compare
// against: ONNX Runtime 1.30 (onnxruntime-node, run through Node), the onnx
// Python package with its checker, and a PyTorch reference for decoupled
// convolutions ([Torch]). It is used only by tests; no library code imports
// it.
//
// # Missing peers
//
// A test that needs a peer calls one of [Python], [CheckModel], [ORT] or
// [Torch]. When the peer is missing, the test is skipped with a message naming
// what to install. When DCCONVERT_REQUIRE_PEERS=1 is set ([Require]), as CI
// does, a missing peer fails the test instead, so a misconfigured machine
// cannot pass by skipping everything. A peer that is present but rejects a
// model is reported through the test ([CheckModel]) or as an error
// ([Runtime.Run], [TorchRunner.Run]).
//
// # Setting up the peers
//
// From the repository root (Debian 12):
//
//	apt-get install -y python3-onnx python3-torch python3-torchvision
//	ONNXRUNTIME_NODE_INSTALL=skip npm ci
//
// The npm packages land in the repository's node_modules. DCCONVERT_ORT_DIR
// points at another node_modules directory holding onnxruntime-node.
//
// # Exchanging tensors
//
// [Runtime.Run] starts one node process per call. Tensors travel through
// files in a temporary directory: the raw float32 values, little-endian, in
// one file per tensor, and a small JSON document naming the files, tensor
// names and shapes.
//
// # The PyTorch reference
//
// [TorchRunner.Run] evaluates a model's main graph node by node in PyTorch
// (torch_ref.py, embedded and run with Debian's python3), in float64: the
// plain operators of small CNNs, written from the ONNX specification, and
// every ai.dcnet DecoupledConv* node, written from DCNET.md section 1 and
// configured by its attributes alone. It returns the graph outputs and, per
// decoupled node, [DecoupledStats] showing which branches of the piecewise
// functions the data reached. Tensors travel the same way as for ONNX
// Runtime; one Python process serves each call.
//
// [TorchRunner.Train] evaluates the same graph in training mode on one
// labelled batch and returns, by PyTorch autograd in float64, the
// cross-entropy loss (optionally label-smoothed) and the gradient of every
// trainable parameter, one per use of a shared initializer
// ("INITIALIZER@NODE" for uses after the first); also the updated
// BatchNormalization running statistics and, per decoupled node with a
// learnable radius, the batch mean of N it used ([TorchTrainResult]).
//
// This package does not decode ONNX files itself.
package peer
