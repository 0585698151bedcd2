// Package export writes fine-tuned models and weights out of a run
// directory: as an ONNX model in function form or inlined, as a
// safetensors file, or as a NumPy .npz archive.
//
// It owns turning a checkpoint back into a model: which values go into
// which initializers, the metadata an exported model carries, the inline
// form with folded constants, and the weight file formats. It does not
// train (see package finetune), decide what a checkpoint holds or how the
// run directory's files are read and written (see package checkpoint), or
// define the decoupled operator (see package dcnet); it never prints.
//
// # Loading a run
//
// Load reads a run directory (checkpoint.Dir): model.onnx, the model as
// fine-tuning started from it; run.json; and one checkpoint, Best (which
// falls back to the last one while there is no best one), Last, or the
// path of any safetensors file. It checks that the checkpoint fits the
// model before anything is written: every parameter and running
// statistic the engine makes of the model must be there with the
// model's shape, and the only other tensors allowed are optimiser state
// ("optim.*/...") and step counters ("#step", "<RhoScale>#t"), which
// export leaves out. Each problem is reported, naming the checkpoint and
// the tensor.
//
// # The fine-tuned model
//
// Trained.Model writes the checkpoint into the run's model:
//
//   - each parameter and running statistic goes into the initializer of
//     its name, as float32 (the checkpoint keeps running statistics in
//     float64; they are rounded);
//   - a later use of a shared initializer, which the engine trains apart
//     as "<initializer>@<node>", becomes an initializer of that name read
//     by that node, unless it still equals the first use;
//   - the layers listed in metadata ai.dcnet.uncalibrated whose radius
//     scale training has updated ("<RhoScale>#t" > 0) leave the list,
//     since RhoScale now holds the running average of the patch norm
//     (DCNET.md section 2); the key goes when the list is empty;
//   - dcconvert.preprocess (data.MetaPreprocess) records run.json's
//     preprocessing and class names, so that evaluating the exported model
//     needs no preprocessing flags; ai.dcnet.layers is kept;
//   - the producer is dcconvert.
//
// Names are never changed, and the same checkpoint always gives the same
// bytes: nothing depends on map order or time.
//
// # ONNX, function form and inline form
//
// WriteONNX writes a model in function form, each decoupled convolution
// one ai.dcnet node whose model-local function computes it, or in inline
// form (Inline), which any ONNX runtime runs without functions: every
// call is replaced by its body (rewrite.Inline, values renamed
// "<node>/<value>"), and what depends only on the filters and the radius
// is computed once and stored as an initializer, for each decoupled
// node N with filters W:
//
//	W.normalized   W_c / |w|_c, |w|_c = sqrt(sum W_c^2 + eps)   [C_out, C_in, kH, kW]
//	N.ones         the all-ones kernel of the patch norm         [1, C_in, kH, kW]
//	N.rho          learnable radius (RhoV_c^2 + 1e-4) * RhoScale  [1, C_out, 1, 1]
//	W.norm         |w|_c, with weighted = linear                 [1, C_out, 1, 1]
//	W.log1p_norm   log(1 + |w|_c), with weighted = log           [1, C_out, 1, 1]
//
// W, RhoV and RhoScale themselves are then read by nothing and are
// removed. The bias B and the channel scale Alpha stay as they are,
// reshaped at run time, and so do the scalar constants of the body (eps,
// alpha, beta, k, a fixed rho), which are Constant nodes. A name already
// taken gets a suffix "_1", "_2", .... The folded values are computed in
// float64 and rounded once, so they can differ from a runtime's float32
// evaluation of the same nodes in the last bit.
//
// # Large models
//
// Protobuf cannot encode a message of 2 GiB or more, so a larger model is
// written with external data, as ONNX specifies: the raw data of each
// initializer of at least 1 KiB goes to "<output>.data" next to the model,
// at an offset aligned to 4 KiB, and the initializer records location,
// offset and length. The data file is written before the model, each
// through a temporary file and a rename.
//
// # Weight files
//
// WriteSafetensors and WriteNPZ write every float initializer of the
// fine-tuned model (parameters and running statistics, including the
// split shared ones) as float32 under its initializer name: a safetensors
// file, whose metadata holds ai.dcnet.layers (each decoupled layer's
// configuration), ai.dcnet.uncalibrated, dcconvert.preprocess and the
// checkpoint's step, epoch and validation accuracy; or an uncompressed
// .npz archive of NPY 1.0 files ('<f4', C order), one
// "<initializer>.npy" per initializer, so numpy.load(path)[name] returns
// it (names with "/" are zip paths; numpy keeps them). Both are written
// atomically, and byte for byte the same for the same checkpoint.
package export
