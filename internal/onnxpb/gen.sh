#!/bin/sh
# Regenerates onnx.pb.go from ONNX 1.12's onnx.proto as Debian ships it.
#
# Needs: apt-get install -y libonnx-dev protobuf-compiler
#        go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#
# The proto package is renamed from "onnx" to "dcconvert.onnx" so that these
# bindings never collide with another package registering onnx.* names in the
# same binary (protobuf-go panics at start-up on duplicate registrations).
set -eu
src=${ONNX_PROTO:-/usr/include/onnx/onnx.proto}
cd "$(dirname "$0")"
sed -e 's/^package onnx;/package dcconvert.onnx;/' "$src" > onnx.proto
protoc --go_out=. --go_opt=paths=source_relative \
	--go_opt=Monnx.proto=github.com/dcconvert/dcconvert/internal/onnxpb \
	onnx.proto
