//go:build goolm

package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The bridge's own account of a decryption: daarion_bridge_e2ee_decrypt_seconds
// (decrypt and journal the clear form, per event, on the e2ee consumer) and
// daarion_bridge_e2ee_decryptions_total by outcome, read from its /metrics
// before and after the encrypted phase. It splits the added latency into
// the part the decryption itself takes and the rest (the extra journal hop).
const (
	decryptHistogram = "daarion_bridge_e2ee_decrypt_seconds"
	decryptOutcomes  = "daarion_bridge_e2ee_decryptions_total"
)

type bucket struct {
	le    float64 // upper bound, seconds (+Inf last)
	count float64 // cumulative
}

type decryptStats struct {
	buckets    []bucket
	sum, count float64
	outcomes   map[string]float64
}

func scrapeDecrypt(ctx context.Context, url string) (decryptStats, error) {
	st := decryptStats{outcomes: map[string]float64{}}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET %s: %d", url, resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "daarion_bridge_e2ee_") {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(name, decryptHistogram+"_bucket{"):
			le := label(name, "le")
			bound := math.Inf(1)
			if le != "+Inf" {
				if bound, err = strconv.ParseFloat(le, 64); err != nil {
					continue
				}
			}
			st.buckets = append(st.buckets, bucket{le: bound, count: v})
		case name == decryptHistogram+"_sum":
			st.sum = v
		case name == decryptHistogram+"_count":
			st.count = v
		case strings.HasPrefix(name, decryptOutcomes+"{"):
			st.outcomes[label(name, "outcome")] = v
		}
	}
	slices.SortFunc(st.buckets, func(a, b bucket) int { return cmpFloat(a.le, b.le) })
	return st, sc.Err()
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// label reads one label's value from a sample name like x{a="1",b="2"}.
func label(name, key string) string {
	_, rest, ok := strings.Cut(name, key+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

// minus is what happened between an earlier reading and this one.
func (b decryptStats) minus(a decryptStats) decryptStats {
	d := decryptStats{sum: b.sum - a.sum, count: b.count - a.count, outcomes: map[string]float64{}}
	for k, v := range b.outcomes {
		d.outcomes[k] = v - a.outcomes[k]
	}
	for i, bk := range b.buckets {
		c := bk.count
		if i < len(a.buckets) && a.buckets[i].le == bk.le {
			c -= a.buckets[i].count
		}
		d.buckets = append(d.buckets, bucket{le: bk.le, count: c})
	}
	return d
}

// quantile estimates the q-quantile by linear interpolation in its bucket,
// as PromQL's histogram_quantile does; the buckets grow by 2.5×, so it is
// a rough figure (the mean, sum/count, is exact).
func (d decryptStats) quantile(q float64) time.Duration {
	if d.count <= 0 || len(d.buckets) == 0 {
		return 0
	}
	rank := q * d.count
	lower, below := 0.0, 0.0
	for _, bk := range d.buckets {
		if bk.count >= rank {
			if math.IsInf(bk.le, 1) {
				return seconds(lower)
			}
			frac := 0.0
			if bk.count > below {
				frac = (rank - below) / (bk.count - below)
			}
			return seconds(lower + (bk.le-lower)*frac)
		}
		lower, below = bk.le, bk.count
	}
	return seconds(lower)
}

func (d decryptStats) mean() time.Duration {
	if d.count <= 0 {
		return 0
	}
	return seconds(d.sum / d.count)
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// outcomeList formats the outcome counts, largest first.
func (d decryptStats) outcomeList() string {
	keys := make([]string, 0, len(d.outcomes))
	for k, v := range d.outcomes {
		if v != 0 {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b string) int { return cmpFloat(d.outcomes[b], d.outcomes[a]) })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %.0f", k, d.outcomes[k])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
