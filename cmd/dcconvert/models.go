package main

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dcconvert/dcconvert/models"
	"github.com/dcconvert/dcconvert/onnximport"
)

// modelsOptions are the options of "dcconvert models".
type modelsOptions struct {
	*rootOptions
	// Name is the builder, one of models.Names().
	Name string
	// Out is the file to write.
	Out string
	// Config is what to build: the builder's models.DefaultConfig with the
	// flags given on the command line applied.
	Config models.Config
}

// modelsFlags holds the values of the flags that become a models.Config;
// which of them apply is decided by whether the flag was given.
type modelsFlags struct {
	input   [3]int64
	classes int
	bn      bool
	opset   int64
	seed    uint64
}

// newModelsCmd builds the models command. runF replaces runModels when not
// nil, so that tests can see the parsed options.
func newModelsCmd(root *rootOptions, runF func(*modelsOptions) error) *cobra.Command {
	opts := &modelsOptions{rootOptions: root}
	var f modelsFlags
	cmd := &cobra.Command{
		Use:   "models NAME -o OUT",
		Short: "Build a VGG-family or ResNet model with deterministic weights",
		Long: strings.TrimSpace(`
Models builds one of the VGG-family or ResNet models, laid out and
initialised as torchvision does with weights drawn from --seed, and writes it
as ONNX. The same flags always give the same bytes.

NAME is one of ` + strings.Join(models.Names(), ", ") + `.

The file is written through a temporary file in the same directory and a
rename, so a failed run leaves no partial file. A one-line summary goes to
standard error unless -q is given.`),
		Example: "  dcconvert models vgg-mini -o vgg-mini.onnx\n" +
			"  dcconvert models vgg11 --bn --input 3x32x32 --classes 10 -o vgg11_cifar.onnx",
		Args:      modelNameArg,
		ValidArgs: models.Names(),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Name = args[0]
			cfg, err := modelsConfig(opts.Name, cmd, f)
			if err != nil {
				return err
			}
			if opts.Out == "" {
				return usageErrorf("models: missing required flag -o/--output")
			}
			opts.Config = cfg
			if runF != nil {
				return runF(opts)
			}
			return runModels(opts)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&opts.Out, "output", "o", "", "file to write (required)")
	fl.Var(&shapeValue{&f.input}, "input",
		fmt.Sprintf("input shape without the batch dimension (default %s)", perModelDefault(func(c models.Config) string { return shapeString(c.Input) })))
	fl.IntVar(&f.classes, "classes", 0,
		fmt.Sprintf("number of output classes (default %s)", perModelDefault(func(c models.Config) string { return strconv.Itoa(c.Classes) })))
	fl.BoolVar(&f.bn, "bn", false, "add BatchNormalization after every convolution (VGG family; resnet18 always has it)")
	fl.Int64Var(&f.opset, "opset", 0,
		fmt.Sprintf("default-domain opset, %d to %d (default %s)", models.MinOpset, models.MaxOpset, perModelDefault(func(c models.Config) string { return strconv.FormatInt(c.Opset, 10) })))
	fl.Uint64Var(&f.seed, "seed", 0,
		fmt.Sprintf("seed of the weight initialisation, at least 1 (default %s)", perModelDefault(func(c models.Config) string { return strconv.FormatUint(c.Seed, 10) })))
	return cmd
}

// modelNameArg checks that the one argument names a builder.
func modelNameArg(cmd *cobra.Command, args []string) error {
	if err := exactArgs("NAME")(cmd, args); err != nil {
		return err
	}
	if !slices.Contains(models.Names(), args[0]) {
		return usageErrorf("unknown model %q: choose one of %s", args[0], strings.Join(models.Names(), ", "))
	}
	return nil
}

// modelsConfig returns the default configuration of the builder name with
// the flags given on cmd's command line applied, checking their values.
func modelsConfig(name string, cmd *cobra.Command, f modelsFlags) (models.Config, error) {
	cfg, err := models.DefaultConfig(name)
	if err != nil {
		return cfg, asUsageError(err)
	}
	given := cmd.Flags().Changed
	var errs []error
	if given("input") {
		cfg.Input = f.input
	}
	if given("classes") {
		if f.classes < 1 {
			errs = append(errs, fmt.Errorf("--classes %d: must be at least 1", f.classes))
		}
		cfg.Classes = f.classes
	}
	if given("bn") {
		cfg.BN = f.bn
	}
	if given("opset") {
		if f.opset < models.MinOpset || f.opset > models.MaxOpset {
			errs = append(errs, fmt.Errorf("--opset %d: must be in %d..%d", f.opset, models.MinOpset, models.MaxOpset))
		}
		cfg.Opset = f.opset
	}
	if given("seed") {
		if f.seed < 1 {
			errs = append(errs, fmt.Errorf("--seed %d: must be at least 1", f.seed))
		}
		cfg.Seed = f.seed
	}
	if len(errs) > 0 {
		return cfg, asUsageError(errors.Join(errs...))
	}
	return cfg, nil
}

// runModels builds the model opts asks for and writes it to opts.Out.
// A configuration the builder rejects is a usage error.
func runModels(opts *modelsOptions) error {
	start := time.Now()
	p, err := models.Build(opts.Name, opts.Config)
	if err != nil {
		var ce *models.ConfigError
		if errors.As(err, &ce) {
			return asUsageError(err)
		}
		return fmt.Errorf("building %s: %w", opts.Name, err)
	}
	built := time.Now()
	m := &onnximport.Model{Proto: p}
	if err := m.Check(); err != nil {
		return fmt.Errorf("checking the built %s: %w", opts.Name, err)
	}
	b, err := m.Encode()
	if err != nil {
		return fmt.Errorf("%s: %w", opts.Name, err)
	}
	encoded := time.Now()
	if err := onnximport.WriteFileAtomic(opts.Out, b); err != nil {
		return writeError(opts.Out, err)
	}
	written := time.Now()
	opts.debugf("built %s in %v, checked and encoded in %v, wrote in %v", opts.Name,
		built.Sub(start).Round(time.Millisecond), encoded.Sub(built).Round(time.Millisecond), written.Sub(encoded).Round(time.Millisecond))
	opts.infof("wrote %s: %s, %s parameters, opset %d, %s", opts.Out, p.GetGraph().GetName(),
		groupDigits(floatParameters(p.GetGraph())), m.Opset(""), byteSize(int64(len(b))))
	return nil
}

// writeError names the file that could not be written, without the name
// of the temporary file the write went through.
func writeError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("writing %s: %w", path, err)
}

// perModelDefault describes a default that depends on the builder, for
// help texts: the value most builders share, then the others by builder
// ("3x224x224; vgg-mini 1x28x28").
func perModelDefault(format func(models.Config) string) string {
	var values []string            // distinct values, in order of first use
	users := map[string][]string{} // value -> builders
	for _, name := range models.Names() {
		cfg, err := models.DefaultConfig(name)
		if err != nil {
			continue
		}
		v := format(cfg)
		if users[v] == nil {
			values = append(values, v)
		}
		users[v] = append(users[v], name)
	}
	if len(values) == 0 {
		return "none"
	}
	common := values[0]
	for _, v := range values {
		if len(users[v]) > len(users[common]) {
			common = v
		}
	}
	parts := []string{common}
	for _, v := range values {
		if v != common {
			parts = append(parts, strings.Join(users[v], ", ")+" "+v)
		}
	}
	return strings.Join(parts, "; ")
}

// shapeString writes an input shape as CxHxW.
func shapeString(s [3]int64) string {
	return fmt.Sprintf("%dx%dx%d", s[0], s[1], s[2])
}

// shapeValue is a flag value holding an input shape written CxHxW.
type shapeValue struct {
	shape *[3]int64
}

// String returns the shape as CxHxW, or "" when it is not set.
func (v *shapeValue) String() string {
	if v.shape == nil || *v.shape == [3]int64{} {
		return ""
	}
	return shapeString(*v.shape)
}

// Set parses CxHxW.
func (v *shapeValue) Set(s string) error {
	parts := strings.Split(strings.ToLower(s), "x")
	if len(parts) != 3 {
		return fmt.Errorf("want CxHxW, three positive whole numbers such as 3x224x224")
	}
	var out [3]int64
	for i, p := range parts {
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil || n < 1 {
			return fmt.Errorf("want CxHxW, three positive whole numbers such as 3x224x224")
		}
		out[i] = n
	}
	*v.shape = out
	return nil
}

// Type names the value in help texts.
func (v *shapeValue) Type() string { return "CxHxW" }
