//go:build linux

package main

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzParseSize checks that parseSize never panics, that what it accepts is
// above 0 and comes back the same written as plain bytes or by formatSize,
// and that its errors quote the input.
func FuzzParseSize(f *testing.F) {
	for _, seed := range []string{
		"1", "1048576", "512KB", "5MB", "1GB", "5mb", "5 MiB", "1.5MB", "0.001KB",
		"9223372036854775807", "9223372036854775808", "8589934591.999999999GB",
		"", "0", "-1", "5XB", "1.5", ".5MB", "1e6", "0x10", "+5", "٣MB",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "bad size "+strconv.Quote(s)+": ") {
				t.Fatalf("parseSize(%q) error %q does not quote the input", s, err)
			}
			return
		}
		if n <= 0 {
			t.Fatalf("parseSize(%q) = %d, want above 0", s, n)
		}
		plain := strconv.FormatInt(n, 10)
		if back, err := parseSize(plain); err != nil || back != n {
			t.Fatalf("parseSize(%q) = %d; parseSize(%q) = %d, %v", s, n, plain, back, err)
		}
		if back, err := parseSize(formatSize(n)); err != nil || back != n {
			t.Fatalf("parseSize(%q) = %d; parseSize(%q) = %d, %v", s, n, formatSize(n), back, err)
		}
	})
}
