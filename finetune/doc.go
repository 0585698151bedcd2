// Package finetune trains plain and decoupled ONNX models on the engine:
// the loss, the optimisers, the learning-rate schedules, the training
// rules of the decoupled convolution, validation, and the snapshot of the
// whole training state that a checkpoint holds.
//
// It does not print, parse flags or write files: the command line attaches
// progress display, metrics logging and checkpoint writing to the Hooks of
// Trainer.Run, and saves Trainer.Snapshot with package checkpoint.
//
// # A step
//
// TrainStep runs one batch through the training engine (batch statistics
// in BatchNormalization, the batch mean of the patch norm in learnable
// radii, seeded dropout) and gets the loss, the batch mean of
// -log softmax(logits)[label] with optional label smoothing, a trailing
// Softmax folded into it, and every gradient. Then, in this order:
//
//  1. the orthogonality regulariser (Config.Orth) adds
//     l * 0.5 * ||What^T What - I||^2 of each trained decoupled filter bank
//     to the loss and its gradient to the filters' gradients;
//  2. gradient clipping (Config.ClipNorm) rescales all gradients by one
//     factor so that their global L2 norm is at most the limit;
//  3. the optimiser (SGD with momentum or Nesterov momentum, Adam,
//     AdamW; PyTorch's update rules) updates each trained parameter at the
//     step's learning rate, with weight decay on every parameter but
//     decoupled filters (unless Config.WDFilters), RhoV and RhoScale
//     (DCNET.md section 4);
//  4. after step s with s % Config.ProjectEvery == 0, each trained
//     decoupled filter bank with weighted = none is projected,
//     W_c <- W_c / sqrt(|W_c|^2 + eps); optimiser state is kept.
//
// RhoScale is not a parameter: the engine keeps its running average. The
// learning rate follows Config.Schedule after a linear warm-up
// (Config.LearningRate).
//
// # What trains
//
// Config.Train chooses every parameter, the decoupled convolutions' W, B,
// Alpha and RhoV, or the classifier (the last Gemm or MatMul and its bias);
// Config.Freeze excludes initializers by name pattern. NewHead replaces
// the classifier with one sized to the data's classes; without it, New
// refuses data whose class count differs from the classifier's width.
//
// # Runs and resuming
//
// Run goes from the trainer's current step to the end of the run. Epoch e
// takes its batches in the data loader's order for (seed, e), with
// augmentation from (seed, e, sample) and dropout from (seed, step), so the
// batches of a step depend on nothing but the step. Snapshot returns every
// parameter, the optimiser state, the running statistics and counters, and
// the step; Restore on a new Trainer for the same model and configuration
// continues the run, and the weights it reaches are bit for bit those of
// an uninterrupted run. Cancelling Run's context finishes the step in
// progress, asks the Checkpoint hook to save, and returns ErrInterrupted.
package finetune
