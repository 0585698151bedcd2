package main

import "strconv"

// mulSat multiplies non-negative counts, saturating instead of overflowing.
func mulSat(a, b int64) int64 {
	const maxInt64 = 1<<63 - 1
	if a != 0 && b > maxInt64/a {
		return maxInt64
	}
	return a * b
}

// groupDigits formats n with commas between groups of three digits:
// 138357544 -> "138,357,544".
func groupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := s[0] == '-'
	if neg {
		s = s[1:]
	}
	var b []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			b = append(b, ',')
		}
		b = append(b, s[i])
	}
	if neg {
		return "-" + string(b)
	}
	return string(b)
}

// byteSize formats a size in bytes with SI units: "553.4 MB", "12.0 kB",
// "512 B".
func byteSize(n int64) string {
	const unit = 1000
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 3 {
		v /= unit
		i++
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + []string{"kB", "MB", "GB", "TB"}[i]
}
