package dcnet

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// withConfig returns the default configuration changed by f.
func withConfig(f func(*Config)) Config {
	c := DefaultConfig()
	f(&c)
	return c
}

func TestKeyGolden(t *testing.T) {
	tests := []struct {
		name   string
		c      Config
		key    string
		opType string
		inputs []string
	}{
		{"default", DefaultConfig(),
			"mag=linear;ang=cos;weighted=none;alpha=1;eps=9.99999975e-05;inputs=X,W",
			"DecoupledConv_7bee4adf", []string{"X", "W"}},
		{"ball learnable radius with bias", withConfig(func(c *Config) { c.Magnitude, c.LearnRho, c.Bias = MagBall, true, true }),
			"mag=ball;ang=cos;weighted=none;alpha=1;rho=learn;eps=9.99999975e-05;inputs=X,W,B,RhoV,RhoScale",
			"DecoupledConv_026cc1a0", []string{"X", "W", "B", "", "RhoV", "RhoScale"}},
		{"seg sigmoid log weighting with channel scale", withConfig(func(c *Config) {
			c.Magnitude, c.Angular, c.Weighted, c.Rho, c.ChannelScale = MagSeg, AngSigmoid, WeightLog, 2.5, true
		}),
			"mag=seg;ang=sigmoid;weighted=log;alpha=1;beta=0.5;k=0.300000012;rho=2.5;eps=9.99999975e-05;inputs=X,W,Alpha",
			"DecoupledConv_c0af5cf6", []string{"X", "W", "", "Alpha"}},
		{"mix sqcos with every scalar set", withConfig(func(c *Config) {
			c.Magnitude, c.Angular, c.Weighted, c.Alpha, c.Eps, c.Bias, c.ChannelScale = MagMix, AngSqcos, WeightLinear, 2, 1e-3, true, true
		}),
			"mag=mix;ang=sqcos;weighted=linear;alpha=2;beta=0.5;eps=0.00100000005;inputs=X,W,B,Alpha",
			"DecoupledConv_b7026ca1", []string{"X", "W", "B", "Alpha"}},
		{"tanh linear fixed radius", withConfig(func(c *Config) { c.Magnitude, c.Angular, c.Rho = MagTanh, AngLinear, 0.1 }),
			"mag=tanh;ang=linear;weighted=none;alpha=1;rho=0.100000001;eps=9.99999975e-05;inputs=X,W",
			"DecoupledConv_2e703a16", []string{"X", "W"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.c.Validate(); err != nil {
				t.Fatalf("the example is not valid: %v", err)
			}
			if got := tt.c.Key(); got != tt.key {
				t.Errorf("Key() = %q, want %q", got, tt.key)
			}
			if got := tt.c.OpType(); got != tt.opType {
				t.Errorf("OpType() = %q, want %q", got, tt.opType)
			}
			if diff := cmp.Diff(tt.inputs, tt.c.Inputs()); diff != "" {
				t.Errorf("Inputs() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestKeyChanges(t *testing.T) {
	// base uses every value: seg needs rho and beta, sigmoid needs k.
	base := withConfig(func(c *Config) { c.Magnitude, c.Angular, c.Rho = MagSeg, AngSigmoid, 2 })
	tests := []struct {
		name    string
		base    Config
		change  func(*Config)
		changes bool
	}{
		{"magnitude", base, func(c *Config) { c.Magnitude = MagBall }, true},
		{"angular", base, func(c *Config) { c.Angular = AngSqcos }, true},
		{"weighting", base, func(c *Config) { c.Weighted = WeightLog }, true},
		{"alpha", base, func(c *Config) { c.Alpha = 2 }, true},
		{"beta of seg", base, func(c *Config) { c.Beta = 0.25 }, true},
		{"k of sigmoid", base, func(c *Config) { c.K = 0.5 }, true},
		{"fixed rho", base, func(c *Config) { c.Rho = 3 }, true},
		{"rho becomes learnable", base, func(c *Config) { c.LearnRho = true }, true},
		{"eps", base, func(c *Config) { c.Eps = 1e-5 }, true},
		{"bias present", base, func(c *Config) { c.Bias = true }, true},
		{"channel scale present", base, func(c *Config) { c.ChannelScale = true }, true},
		{"smallest float32 step of alpha", base, func(c *Config) { c.Alpha = math.Nextafter32(1, 2) }, true},

		{"beta of ball", withConfig(func(c *Config) { c.Magnitude, c.Rho = MagBall, 1 }), func(c *Config) { c.Beta = 7 }, false},
		{"k of cos", DefaultConfig(), func(c *Config) { c.K = 7 }, false},
		{"rho of linear", DefaultConfig(), func(c *Config) { c.Rho = 7 }, false},
		{"fixed rho when learnable", withConfig(func(c *Config) { c.Magnitude, c.LearnRho = MagTanh, true }), func(c *Config) { c.Rho = 7 }, false},
		{"beta of mix", withConfig(func(c *Config) { c.Magnitude = MagMix }), func(c *Config) { c.Beta = 7 }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			changed := tt.base
			tt.change(&changed)
			k0, k1 := tt.base.Key(), changed.Key()
			if (k0 != k1) != tt.changes {
				t.Errorf("key %q -> %q: changed = %v, want %v", k0, k1, k0 != k1, tt.changes)
			}
			if (tt.base.OpType() != changed.OpType()) != tt.changes {
				t.Errorf("op type %s -> %s: changed = %v, want %v", tt.base.OpType(), changed.OpType(), !tt.changes, tt.changes)
			}
		})
	}
}

func TestKeysDistinct(t *testing.T) {
	seen := map[string]string{}
	n := 0
	for _, rho := range []float32{1, 2} {
		for _, c := range allConfigs(rho) {
			for _, bias := range []bool{false, true} {
				c.Bias = bias
				if prev, ok := seen[c.OpType()]; ok && prev != c.Key() {
					t.Errorf("op type %s for both %q and %q", c.OpType(), prev, c.Key())
				}
				seen[c.OpType()] = c.Key()
				n++
			}
		}
	}
	t.Logf("%d configurations, %d distinct op types", n, len(seen))
}

func TestSummary(t *testing.T) {
	tests := []struct {
		c    Config
		want string
	}{
		{DefaultConfig(), "linear x cos"},
		{withConfig(func(c *Config) { c.Magnitude, c.LearnRho = MagBall, true }), "ball(rho=learn) x cos"},
		{withConfig(func(c *Config) { c.Magnitude, c.Angular, c.Weighted, c.Rho = MagSeg, AngSigmoid, WeightLog, 2.5 }),
			"seg(rho=2.5,beta=0.5) x sigmoid(k=0.3), weighted=log"},
		{withConfig(func(c *Config) { c.Magnitude, c.Alpha, c.Eps, c.ChannelScale = MagSphere, 2, 1e-3, true }),
			"sphere(alpha=2) x cos, eps=0.001, scaled"},
	}
	for _, tt := range tests {
		if got := tt.c.Summary(); got != tt.want {
			t.Errorf("Summary() = %q, want %q", got, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	tests := []struct {
		name string
		c    Config
		want []FlagError // in order
	}{
		{"default", DefaultConfig(), nil},
		{"every function", withConfig(func(c *Config) { c.Magnitude, c.Angular, c.Weighted, c.Rho = MagSeg, AngSqcos, WeightLog, 1 }), nil},
		{"learnable radius ignores rho", withConfig(func(c *Config) { c.Magnitude, c.LearnRho = MagBall, true }), nil},
		{"unused rho of 0", withConfig(func(c *Config) { c.Magnitude = MagMix }), nil},
		{"beta 0", withConfig(func(c *Config) { c.Magnitude, c.Beta = MagMix, 0 }), nil},
		{"unknown magnitude", withConfig(func(c *Config) { c.Magnitude = "bal" }), []FlagError{{"--mag",
			`--mag "bal" is not a magnitude function: choose sphere, ball, tanh, linear, seg, log or mix`}}},
		{"unknown angular", withConfig(func(c *Config) { c.Angular = "sin" }), []FlagError{{"--ang",
			`--ang "sin" is not an angular activation: choose cos, linear, sigmoid or sqcos`}}},
		{"unknown weighting", withConfig(func(c *Config) { c.Weighted = "" }), []FlagError{{"--weighted",
			`--weighted "" is not a weighting: choose none, linear or log`}}},
		{"alpha 0", withConfig(func(c *Config) { c.Alpha = 0 }), []FlagError{{"--alpha",
			`--alpha 0 is not a valid scale: give a number greater than 0`}}},
		{"alpha negative", withConfig(func(c *Config) { c.Alpha = -1 }), []FlagError{{"--alpha",
			`--alpha -1 is not a valid scale: give a number greater than 0`}}},
		{"beta negative", withConfig(func(c *Config) { c.Beta = -0.5 }), []FlagError{{"--beta",
			`--beta -0.5 is not a valid slope: give a number of 0 or more`}}},
		{"k 0", withConfig(func(c *Config) { c.K = 0 }), []FlagError{{"--k",
			`--k 0 is not a valid temperature: give a number greater than 0`}}},
		{"eps 0", withConfig(func(c *Config) { c.Eps = 0 }), []FlagError{{"--eps",
			`--eps 0 is not a valid epsilon: give a number greater than 0`}}},
		{"eps negative", withConfig(func(c *Config) { c.Eps = -1e-4 }), []FlagError{{"--eps",
			`--eps -0.0001 is not a valid epsilon: give a number greater than 0`}}},
		{"rho 0 for ball", withConfig(func(c *Config) { c.Magnitude = MagBall }), []FlagError{{"--rho",
			`--rho 0 is not a valid radius: give a number greater than 0, learn or auto`}}},
		{"rho negative for tanh", withConfig(func(c *Config) { c.Magnitude, c.Rho = MagTanh, -2 }), []FlagError{{"--rho",
			`--rho -2 is not a valid radius: give a number greater than 0, learn or auto`}}},
		{"learnable radius for linear", withConfig(func(c *Config) { c.LearnRho = true }), []FlagError{{"--rho",
			`--rho learn does not apply to magnitude linear: only ball, tanh and seg have a radius`}}},
		{"alpha NaN", withConfig(func(c *Config) { c.Alpha = nan }), []FlagError{{"--alpha",
			`--alpha NaN is not a finite number: give a number greater than 0`}}},
		{"beta infinite while unused", withConfig(func(c *Config) { c.Beta = inf }), []FlagError{{"--beta",
			`--beta +Inf is not a finite number: give a number of 0 or more`}}},
		{"k NaN", withConfig(func(c *Config) { c.K = nan }), []FlagError{{"--k",
			`--k NaN is not a finite number: give a number greater than 0`}}},
		{"rho NaN while unused", withConfig(func(c *Config) { c.Rho = nan }), []FlagError{{"--rho",
			`--rho NaN is not a finite number: give a number greater than 0, learn or auto`}}},
		{"eps -Inf", withConfig(func(c *Config) { c.Eps = -inf }), []FlagError{{"--eps",
			`--eps -Inf is not a finite number: give a number greater than 0`}}},
		{"everything at once", Config{Magnitude: "x", Angular: "y", Weighted: "z", Alpha: -1, Beta: -1, K: -1, Eps: -1},
			[]FlagError{
				{"--mag", `--mag "x" is not a magnitude function: choose sphere, ball, tanh, linear, seg, log or mix`},
				{"--ang", `--ang "y" is not an angular activation: choose cos, linear, sigmoid or sqcos`},
				{"--weighted", `--weighted "z" is not a weighting: choose none, linear or log`},
				{"--alpha", `--alpha -1 is not a valid scale: give a number greater than 0`},
				{"--beta", `--beta -1 is not a valid slope: give a number of 0 or more`},
				{"--k", `--k -1 is not a valid temperature: give a number greater than 0`},
				{"--eps", `--eps -1 is not a valid epsilon: give a number greater than 0`},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			var got []FlagError
			for _, e := range unjoin(err) {
				var fe *FlagError
				if !errors.As(e, &fe) {
					t.Fatalf("error %q is a %T, want *FlagError", e, e)
				}
				if !strings.HasPrefix(fe.Msg, fe.Flag+" ") {
					t.Errorf("message %q does not start with its flag %s", fe.Msg, fe.Flag)
				}
				got = append(got, *fe)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate() (-want +got):\n%s", diff)
			}
		})
	}
}

// unjoin returns the errors joined in err, or err alone.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestLayerInfoJSON(t *testing.T) {
	tests := []struct {
		name string
		c    Config
		want string
	}{
		{"default", DefaultConfig(),
			`{"magnitude":"linear","angular":"cos","weighted":"none","alpha":1,"eps":0.0001}`},
		{"ball learnable sigmoid", withConfig(func(c *Config) { c.Magnitude, c.Angular, c.LearnRho = MagBall, AngSigmoid, true }),
			`{"magnitude":"ball","angular":"sigmoid","weighted":"none","alpha":1,"k":0.3,"rho":"learn","eps":0.0001}`},
		{"seg fixed log", withConfig(func(c *Config) { c.Magnitude, c.Weighted, c.Rho = MagSeg, WeightLog, 2.5 }),
			`{"magnitude":"seg","angular":"cos","weighted":"log","alpha":1,"beta":0.5,"rho":2.5,"eps":0.0001}`},
		{"mix", withConfig(func(c *Config) { c.Magnitude, c.Alpha, c.Beta = MagMix, 0.7, 0.1 }),
			`{"magnitude":"mix","angular":"cos","weighted":"none","alpha":0.7,"beta":0.1,"eps":0.0001}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			li := LayerInfoOf(tt.c)
			b, err := json.Marshal(li)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Errorf("JSON %s, want %s", b, tt.want)
			}
			var back LayerInfo
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(li, back); diff != "" {
				t.Errorf("JSON round trip (-want +got):\n%s", diff)
			}
		})
	}
	var r Radius
	if err := json.Unmarshal([]byte(`"auto"`), &r); err == nil {
		t.Error(`reading radius "auto" succeeded, want an error`)
	}
	if _, err := json.Marshal(Radius{Value: float32(math.NaN())}); err == nil {
		t.Error("writing a NaN radius succeeded, want an error")
	}
}
