package models

import "fmt"

// resnet18Planes are the widths of layer1..layer4; each has two BasicBlocks.
var resnet18Planes = []int64{64, 128, 256, 512}

// buildResNet18 builds torchvision's resnet18: conv1 (7x7, stride 2, pad 3),
// bn1, relu, maxpool (3x3, stride 2, pad 1), layer1..layer4 of two
// BasicBlocks each (the first block of layers 2-4 has stride 2 and a
// downsample of a 1x1 stride-2 convolution and BatchNormalization),
// avgpool (GlobalAveragePool), Flatten and fc. Convolutions have no bias.
// Every stage keeps at least one row and column, so any positive input size
// works.
func buildResNet18(g *graph, x fmap, cfg Config) (string, error) {
	x = g.conv("conv1", x, 64, 7, 2, 3, false)
	x = g.batchNorm("bn1", x)
	x = g.relu("relu", x)
	x = g.maxPool("maxpool", x, 3, 2, 1)
	for i, planes := range resnet18Planes {
		for j := range 2 {
			stride := int64(1)
			if i > 0 && j == 0 {
				stride = 2
			}
			x = basicBlock(g, fmt.Sprintf("layer%d.%d", i+1, j), x, planes, stride)
		}
	}
	if g.shrunk != "" {
		return "", tooSmall(fmap{c: cfg.Input[0], h: cfg.Input[1], w: cfg.Input[2]}, g.shrunk)
	}
	x = g.globalAvgPool("avgpool", x)
	flat, n := g.flatten("", x)
	return g.linear("fc", flat, n, int64(cfg.Classes)), nil
}

// basicBlock adds torchvision's BasicBlock at path: conv1, bn1, relu, conv2,
// bn2, the shortcut (downsample.0 and downsample.1 when the stride or width
// changes), Add, and the block's relu again (exported as relu_1).
func basicBlock(g *graph, path string, x fmap, planes, stride int64) fmap {
	out := g.conv(path+".conv1", x, planes, 3, stride, 1, false)
	out = g.batchNorm(path+".bn1", out)
	out = g.relu(path+".relu", out)
	out = g.conv(path+".conv2", out, planes, 3, 1, 1, false)
	out = g.batchNorm(path+".bn2", out)
	identity := x
	if stride != 1 || x.c != planes {
		identity = g.conv(path+".downsample.0", x, planes, 1, stride, 0, false)
		identity = g.batchNorm(path+".downsample.1", identity)
	}
	out = g.add(path, out, identity)
	return g.relu(path+".relu", out)
}
