package bench

import (
	"context"
	"errors"
	"testing"
)

func TestLeastDisturbed(t *testing.T) {
	type cell struct {
		other    float64
		err      string
		attempts int
	}
	for _, tc := range []struct {
		name      string
		retries   int
		others    []float64
		errAt     int // attempt index that fails, -1 for none
		wantOther float64
		wantN     int
	}{
		{"quiet first", 2, []float64{3, 90, 90}, -1, 3, 1},
		{"best of three", 2, []float64{90, 40, 60}, -1, 40, 3},
		{"second quiet", 2, []float64{90, 10, 60}, -1, 10, 2},
		{"no retries", 0, []float64{90, 10}, -1, 90, 1},
		{"failure returned at once", 2, []float64{90, 50, 10}, 1, 50, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := &Options{Retries: tc.retries, QuietWait: -1}
			i := 0
			got := leastDisturbed(context.Background(), o, func() cell {
				c := cell{other: tc.others[i]}
				if i == tc.errAt {
					c.err = errors.New("boom").Error()
				}
				i++
				return c
			}, func(c *cell) (float64, bool) { return c.other, c.err == "" },
				func(c *cell, n int) { c.attempts = n })
			if got.other != tc.wantOther || got.attempts != tc.wantN {
				t.Errorf("kept other %v after %d attempts; want %v after %d", got.other, got.attempts, tc.wantOther, tc.wantN)
			}
		})
	}
}

func TestOptionsValidation(t *testing.T) {
	base := func() Options { return Options{Targets: []Target{{Name: "direct", Kind: KindDirect}}} }
	for _, tc := range []struct {
		name string
		edit func(*Options)
	}{
		{"mode", func(o *Options) { o.Modes = []Mode{"speed"} }},
		{"clients", func(o *Options) { o.Clients = []int{0} }},
		{"payload", func(o *Options) { o.Payloads = []int{MaxPayload + 1} }},
		{"duration", func(o *Options) { o.Duration = -1 }},
		{"inflight", func(o *Options) { o.Inflight = MaxInflight + 1 }},
		{"sessions", func(o *Options) { o.Sessions = 70000 }},
		{"retries", func(o *Options) { o.Retries = MaxRetries + 1 }},
		{"targets", func(o *Options) { o.Targets = nil }},
	} {
		o := base()
		tc.edit(&o)
		if err := o.setDefaults(); !errors.Is(err, errOptions) {
			t.Errorf("%s: err = %v, want errOptions", tc.name, err)
		}
	}
	o := base()
	if err := o.setDefaults(); err != nil || len(o.Modes) != 3 || o.Duration != DefaultDuration || o.Inflight != 1 {
		t.Errorf("defaults: %v, %+v", err, o)
	}
}
