// Command dcconvert reads pretrained CNNs in ONNX form, rewrites their
// convolutions into decoupled convolutions, fine-tunes and exports them.
//
// Usage:
//
//	dcconvert <command> [flags] [arguments]
//
// The commands:
//
//	inspect MODEL   describe a model: inputs, outputs, operators, convolutions, parameters
//	models NAME     build a VGG-family or ResNet model with deterministic weights
//	rewrite MODEL   replace convolutions by decoupled convolutions with the same weights
//	eval MODEL      top-1, top-5 and cross-entropy of a model on a data set
//
// Every command takes -v/--verbose and -q/--quiet; dcconvert --version prints
// the version. Run "dcconvert <command> --help" for a command's flags.
//
// # Exit status
//
// 0 when the command succeeded, 1 when it failed (bad input, a file that
// cannot be read or written), 2 when it was invoked wrongly (an unknown
// command or flag, a bad flag value, a missing argument). Errors are printed
// to standard error as one "dcconvert: ..." message; usage errors are
// followed by a line saying how to get help.
//
// # Layout of this package
//
// Each command lives in its own file as an options struct, a constructor
// (newXxxCmd) that builds the cobra.Command and binds its flags to the
// struct, and a run function (runXxx) that does the work with those options
// and the injected standard streams. main.go turns errors into exit codes.
package main
