// Package benchkit is what the rig benchmarks (cmd/rigbench, cmd/e2eebench)
// share, so that their reports read alike and are made by one piece of
// code: the result rows and PASS lines with their table and JSON, the
// latency summaries (nearest-rank percentiles), the host-load readings from
// /proc that say whether a result was taken on a quiet machine, and the
// small helpers of a benchmark's main (progress lines, flags, profiles, the
// source revision, an agent's send through the bridge).
package benchkit
