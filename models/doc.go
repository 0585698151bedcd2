// Package models builds VGG-family and ResNet models as ONNX, laid out and
// initialised as torchvision does, with weights drawn deterministically from
// a seed. They stand in for pretrained CNNs wherever none can be downloaded:
// in tests, in demos, and as the starting point to train briefly before a
// rewrite.
//
// The package only builds in-memory models (*onnxpb.ModelProto); writing them
// to files, reading them back and training them belong to other packages.
//
// # Builders
//
//	vgg11, vgg13, vgg16, vgg19  torchvision configurations A, B, D, E; 3x224x224, 1000 classes
//	vgg-mini                    conv16-16-pool-32-32-pool, fc 64; 1x28x28, 10 classes (117,434 parameters)
//	resnet18                    torchvision's; 3x224x224, 1000 classes
//
// Config.BN adds BatchNormalization between every convolution and its ReLU in
// the VGG family (torchvision's vgg*_bn; the graph is then named e.g.
// "vgg16_bn"); resnet18 always has it.
//
// A VGG whose last feature map is at least 7x7 gets torchvision's head: an
// AveragePool with kernel = stride = map/7 standing for AdaptiveAvgPool2d((7,
// 7)) (1x1 at 224x224, as torch exports it), Flatten and the 25088 -> 4096 ->
// 4096 -> classes classifier. The map must then be a multiple of 7x7. A VGG
// whose last map is smaller in either direction (the CIFAR convention: 1x1 at
// 32x32) has no pool and a 512*h*w -> 512 -> 512 -> classes classifier. Each
// classifier has ReLU and Dropout between its Gemms. resnet18 ends in
// GlobalAveragePool, so it takes any input size.
//
// # Graphs
//
// One input "input" [batch_size, C, H, W] and one output "output"
// [batch_size, classes], both FLOAT, with a symbolic batch dimension. Linear
// layers are Gemm with transB=1 and weights [out, in]. Dropout nodes carry
// no ratio, so the default 0.5 of every opset applies; at inference they are
// the identity. BatchNormalization is written in inference form with
// epsilon 1e-5 and momentum 0.9 (torch's momentum 0.1).
//
// Names follow torch's exports. Initializers are state_dict keys
// ("features.0.weight", "layer2.0.downsample.1.running_var", "fc.bias"). A
// node is named after its module's scope and op type
// ("/features/features.0/Conv", "/layer1/layer1.0/relu_1/Relu", "/Flatten")
// and its output is the node name with "_output_0" appended, except for the
// last node's, which is "output".
//
// # Opsets and IR versions
//
// Config.Opset selects a default-domain opset from 7 to 17 (13 by default),
// and every node is written in the form that opset defines: ceil_mode on
// MaxPool only from opset 10, no spatial attribute on BatchNormalization (its
// default 1 before opset 9 is what is wanted), Gemm always with its C input.
// The IR version is the one of the ONNX release that introduced the opset:
//
//	opset  7, 8  9  10  11  12-14  15-17
//	IR     3     4  5   6   7      8
//
// At IR 3 every initializer is also listed as a graph input, after "input",
// as that IR requires; from IR 4 on initializers are not graph inputs.
//
// # Initialisation
//
// As torchvision initialises VGG: convolution weights Kaiming normal with
// mode fan_out and gain sqrt(2) (std = sqrt(2/(C_out*kH*kW))), convolution
// biases 0, Linear weights normal(0, 0.01) and biases 0, BatchNormalization
// scale 1, bias 0, running mean 0 and running variance 1. resnet18 uses the
// same rules, so its fc also gets normal(0, 0.01) (torchvision leaves that
// layer at torch's default uniform initialisation). Values are float32,
// stored little-endian in raw_data.
//
// Each tensor draws from its own PCG stream (math/rand/v2) seeded with
// Config.Seed and the FNV-1a hash of the tensor's name, so a tensor's values
// depend only on the seed and its name: the same Config always gives the same
// bytes, and different seeds give different weights. Seed 0 means seed 1.
//
// # Parameter counts
//
// Counting every initializer except BatchNormalization running statistics
// (as torch's parameters() does), the defaults give torchvision's numbers:
// vgg11 132,863,336; vgg13 133,047,848; vgg16 138,357,544; vgg19
// 143,667,240; resnet18 11,689,512.
//
// # Errors
//
// An unknown name, an opset outside 7..17, fewer than one class, a
// non-positive input dimension, an input that shrinks a VGG feature map to
// nothing or does not fit its 7x7 pool, and an input or a number of classes
// that makes the weights exceed the 2 GiB one ONNX file holds are reported
// as *ConfigError, whose Field names the offending part of the Config. All
// problems with the Config's fields are reported together (errors.Join).
// Build never panics on a bad Config.
package models
