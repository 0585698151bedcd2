// Package data reads labelled image data sets and turns them into batches of
// model inputs: decoding, preprocessing, augmentation and a seeded sample
// order, with the decoding done in parallel ahead of the consumer.
//
// It does not train or evaluate models (see packages finetune and engine),
// print anything, or fetch data from anywhere.
//
// # Data directories
//
// Open reads a data directory and returns one split of it as a Set. Detect
// names its format, trying them in this order:
//
//   - idx (MNIST, Fashion-MNIST): train-images-idx3-ubyte,
//     train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
//     t10k-labels-idx1-ubyte, each raw or gzipped (named with .gz; the
//     content decides). Magic numbers, dimensions and the agreement of
//     image and label counts are checked; nothing is allocated beyond what
//     the file holds. There are at least 10 classes (more when the labels
//     go higher). Class names come from classes.txt (one a line) when
//     present, else Fashion-MNIST's names when the directory's path
//     contains "fashion" (in any case), else "0", "1", ....
//   - cifar10: data_batch_1.bin to data_batch_5.bin (those present, without
//     gaps) and test_batch.bin, records of 1 label byte and 3072 pixel
//     bytes; class names from batches.meta.txt when present. The
//     cifar-10-batches-bin sub-directory the archive unpacks to is looked in
//     too.
//   - cifar100: train.bin and test.bin, records of a coarse and a fine label
//     byte and 3072 pixel bytes; the fine labels are used; class names from
//     fine_label_names.txt when present (also under cifar-100-binary/).
//   - imagefolder: DIR/CLASS/... holding .png, .jpg and .jpeg files (any
//     case; sub-directories are searched, hidden files and directories
//     skipped), or the same under DIR/train/ and DIR/test/, whose class
//     directories must be the same. Classes are the directory names in
//     sorted order. Files are listed by Open and decoded by Set.Image with
//     image/png and image/jpeg: grayscale files give 1 channel, the others
//     3 (alpha is dropped after compositing onto black). Files over 2^26
//     pixels are refused.
//   - synthetic: the word "synthetic" instead of a directory selects a
//     generated task of oriented bars (SyntheticOptions): any number of
//     classes and any image shape, deterministic from its seed, drawn per
//     sample when asked for. vgg-mini reaches about 98% on it after one
//     epoch (SGD with momentum at learning rate 0.05, or Adam at 0.001),
//     while a nearest-centroid classifier on pixels gets about 88% right.
//
// Every error about a file names it. Corrupt image files are found when
// decoded, so the Loader reports them, naming the file.
//
// # Splits and validation fractions
//
// SplitTrain, SplitTest and SplitAll (train then test) select what Open
// returns. OpenOptions.ValSplit > 0 holds out that fraction of the train
// split, class by class, chosen from OpenOptions.Seed; SplitTest then
// returns the held-out samples and SplitTrain the rest. This gives data
// without a test split (an image folder without train/ and test/) one; for
// data with a test split the held-out part stands in for it, so that model
// selection does not look at the real test split, which Open returns with
// ValSplit 0. HasTestSplit tells the two kinds apart.
//
// # Preprocessing
//
// Preprocess converts an image to a model input in this order: converting
// RGB to grayscale (ITU-R BT.601 luma) when the model takes one channel,
// resizing to the model's H by W with golang.org/x/image/draw's BiLinear
// kernel (which averages over every source pixel when shrinking), repeating
// a grayscale channel when the model takes three, then (x - Mean[c]) /
// Std[c]. In a Loader the augmentation comes between the resize and the
// normalisation, so its padding is black as in the usual pipelines.
//
// # Augmentation
//
// AugmentStandard pads by Padding(H, W) pixels (an eighth of the shorter
// side: 4 for 32x32, 3 for 28x28), crops back at a random offset and flips
// horizontally with probability 1/2; AugmentCrop does the same without the
// flip (for digits and text); AugmentNone does nothing. The random values of
// a sample come from (seed, epoch, index in the Set) alone.
//
// # Loading batches
//
// A Loader cuts an epoch into batches: the samples in index order, or
// shuffled by a permutation drawn from (seed, epoch). Epoch returns an
// iterator:
//
//	l, err := data.NewLoader(set, data.LoaderOptions{Batch: 64, Shuffle: true,
//		Augment: data.AugmentStandard, Seed: 1, Pre: pre})
//	...
//	for b, err := range l.Epoch(epoch) {
//		if err != nil {
//			return err
//		}
//		// b.X holds b.Shape[0] samples of C*H*W values; b.Labels their labels.
//	}
//
// Workers goroutines (GOMAXPROCS by default) decode, convert and augment
// samples, at most Prefetch batches ahead of the loop body. Every value of a
// batch depends only on the options, the epoch and the data, never on the
// number of workers or their scheduling. Breaking out of the loop stops the
// workers before the loop statement completes. Batches resumes an epoch
// part way through.
//
// # Randomness
//
// The generators are written out in this package (SplitMix64 with Fisher-
// Yates shuffles), so shuffles, held-out samples, augmentations and the
// synthetic images stay the same across Go releases.
//
// # Preprocessing in a model
//
// A model records how its inputs are prepared under the metadata_props key
// MetaPreprocess ("dcconvert.preprocess"), as the JSON form of
// Preprocessing (input shape, per-channel mean and std, class names), so
// that eval needs no preprocessing flags. ReadPreprocessing and
// WritePreprocessing read and write it.
package data
