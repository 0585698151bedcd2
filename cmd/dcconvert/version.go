package main

import "runtime/debug"

// version is the version dcconvert reports. Release builds set it with
//
//	go build -ldflags "-X main.version=v1.2.3" ./cmd/dcconvert
//
// Otherwise it is taken from the module version recorded in the binary
// (go install module@version), or stays "dev".
var version = "dev"

// buildVersion returns the version to report.
func buildVersion() string {
	if version != "dev" && version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
