// Package checkpoint owns the run directory of a fine-tuning run and the
// files in it: checkpoints in the safetensors format with a checksum, the
// metrics log and its plot. Every file is written atomically, through a
// temporary file in the same directory and a rename, so a crash leaves the
// previous version of a file, never a part of a new one.
//
// It does not decide what goes into a checkpoint or when one is saved (see
// package finetune), nor convert weights to or from a model (see packages
// engine and export); it reads and writes the files.
//
// # The run directory
//
// A Dir names a run directory; the file names are constants (ModelFile,
// RunFile, LastFile, BestFile, MetricsFile, CurvesFile) and Dir.Path joins
// them to it. Dir.Check tells a run directory from any other path.
//
// # Safetensors
//
// Encode and Decode convert between a File (named tensors of float32,
// float64 or int64, and string metadata) and the safetensors format: an
// 8-byte little-endian header length, a JSON header giving each tensor's
// dtype, shape and byte range, and the little-endian data. Encode is
// deterministic: the same File always gives the same bytes. It records the
// SHA-256 of the data section in the metadata under MetaChecksum, and
// Decode rejects a file whose data no longer hashes to it, so a corrupt
// checkpoint is reported instead of resuming training from bad weights.
// Files from other writers, which carry no checksum, are read as they are.
//
// Decode checks everything it reads: the header length against the file,
// the header against the format, each tensor's shape against its byte
// range, and that the tensors cover the data section without overlap or
// holes. It allocates nothing a file claims before checking that the bytes
// are there, and does not panic on any input. WriteFile and ReadFile do the
// same with files.
//
// # Metrics
//
// The metrics log (MetricsFile) holds one JSON Record a line: step, epoch,
// training loss and accuracy, learning rate, validation results when there
// are some, throughput and wall time. NaN and infinities, which JSON
// cannot hold, are written as null and read back as NaN. WriteMetrics
// rewrites the whole log atomically; ReadMetrics reports the number of a
// line it cannot read. RenderCurves and PlotCurves draw the log as a PNG
// image of loss and accuracy against step.
package checkpoint
