package bench

import (
	"math"
	"testing"
	"time"
)

func TestHistogramBuckets(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 129, 255, 256, 1000, 12345, 1 << 20, 987654321, 1 << 39} {
		i := histIndex(v)
		got := histValue(i)
		if rel := math.Abs(float64(got)-float64(v)) / math.Max(float64(v), 1); rel > 1.0/histSub {
			t.Errorf("value %d: bucket %d stands for %d (error %.4f)", v, i, got, rel)
		}
		if i > 0 && histIndex(v) < histIndex(v-1) {
			t.Errorf("index not monotonic at %d", v)
		}
	}
	if i := histIndex(math.MaxUint64); i != histBuckets-1 {
		t.Errorf("huge value in bucket %d, want the last", i)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var a, b histogram
	for i := 1; i <= 1000; i++ {
		a.record(time.Duration(i) * time.Microsecond)
	}
	b.record(time.Second)
	a.merge(&b)
	check := func(name string, got, want time.Duration) {
		t.Helper()
		if rel := math.Abs(float64(got-want)) / float64(want); rel > 0.01 {
			t.Errorf("%s = %v, want about %v", name, got, want)
		}
	}
	check("p50", a.quantile(0.5), 500*time.Microsecond)
	check("p99", a.quantile(0.99), 990*time.Microsecond)
	check("max", a.quantile(1), time.Second)
	if a.n != 1001 {
		t.Errorf("n = %d", a.n)
	}
	var empty histogram
	if empty.quantile(0.5) != 0 || empty.mean() != 0 {
		t.Error("empty histogram is not zero")
	}
}

func TestFormats(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{sizeName(32), "32 B"}, {sizeName(1024), "1024 B"}, {sizeName(4098), "4098 B"},
		{sizeName(65536), "64 KiB"}, {sizeName(1 << 20), "1 MiB"},
		{num(1234567.4), "1,234,567"}, {num(12.34), "12.3"}, {num(999), "999"},
		{si(3_120_000), "3.12M"}, {si(30_000), "30.0k"}, {si(512), "512"},
		{micros(87.5), "87.5 µs"}, {micros(1234), "1.23 ms"},
		{decimalRate(8.9e6), "8.9 MB/s"}, {decimalRate(1.07e9), "1.07 GB/s"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
