// Package metrics holds the bridge's Prometheus metrics and serves them on
// METRICS_LISTEN (/metrics). Labels are bounded: event types outside the
// Matrix spec are "other", routes are templates, homeserver endpoints are
// paths with their ids replaced.
package metrics

import (
	"net/http"
	"net/http/pprof"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
)

// Metrics are the bridge's metric families.
type Metrics struct {
	Registry *prometheus.Registry

	Transactions         *prometheus.CounterVec
	EventsReceived       *prometheus.CounterVec
	TransactionCommit    prometheus.Histogram
	TransactionPace      prometheus.Histogram
	APIRequests          *prometheus.CounterVec
	APIRequestSeconds    *prometheus.HistogramVec
	RateLimited          *prometheus.CounterVec
	HomeserverCalls      *prometheus.CounterVec
	HomeserverSeconds    *prometheus.HistogramVec
	Reconciles           *prometheus.CounterVec
	ReconcileRecovered   prometheus.Counter
	ReconcileFailedRooms prometheus.Counter
	ReconcileSeconds     prometheus.Histogram
}

const namespace = "daarion_bridge"

// New registers every family (plus the Go and process collectors).
func New() *Metrics {
	m := &Metrics{
		Registry:          prometheus.NewRegistry(),
		Transactions:      counterVec("transactions_total", "Appservice transactions received, by result (ok, bad_request, error).", "result"),
		EventsReceived:    counterVec("events_received_total", "Events received in transactions, by kind and type (types outside the spec are 'other').", "kind", "type"),
		TransactionCommit: histogram("transaction_commit_seconds", "Time to commit a transaction's events to the event log.", []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5}),
		TransactionPace: histogram("transaction_pace_seconds", "Time a transaction's answer was held back after its commit while the indexer was behind (appservice.pace_journal_events); 0 for most.",
			[]float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1}),
		APIRequests:          counterVec("internal_api_requests_total", "Internal API requests by route template, calling service and status.", "route", "service", "status"),
		APIRequestSeconds:    histogramVec("internal_api_request_seconds", "Internal API request latency by route template and service.", prometheus.ExponentialBuckets(0.0005, 2.5, 12), "route", "service"),
		RateLimited:          counterVec("internal_api_rate_limited_total", "Internal API requests refused by the per-service rate limit.", "service"),
		HomeserverCalls:      counterVec("homeserver_requests_total", "Requests to the homeserver by endpoint template and result (2xx, 4xx, 5xx, error).", "endpoint", "result"),
		HomeserverSeconds:    histogramVec("homeserver_request_seconds", "Homeserver request latency by endpoint template.", prometheus.ExponentialBuckets(0.001, 2.5, 12), "endpoint"),
		Reconciles:           counterVec("reconciles_total", "Reconciles of rooms' timelines with the event log, by trigger (start, interval, transaction_gap, homeserver_back, command).", "trigger"),
		ReconcileRecovered:   counter("reconcile_recovered_events_total", "Events a reconcile found in a room's timeline but not in the event log, and stored."),
		ReconcileFailedRooms: counter("reconcile_failed_rooms_total", "Rooms a reconcile could not compare (the homeserver refused or failed)."),
		ReconcileSeconds:     histogram("reconcile_seconds", "Time to reconcile a set of rooms.", prometheus.ExponentialBuckets(0.01, 2.5, 10)),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Transactions, m.EventsReceived, m.TransactionCommit, m.TransactionPace, m.APIRequests, m.APIRequestSeconds,
		m.RateLimited, m.HomeserverCalls, m.HomeserverSeconds,
		m.Reconciles, m.ReconcileRecovered, m.ReconcileFailedRooms, m.ReconcileSeconds,
	)
	return m
}

// counter, counterVec, histogram and histogramVec build a family in the
// bridge's namespace.
func counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
}

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
}

func histogram(name, help string, buckets []float64) prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets})
}

func histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets}, labels)
}

// knownTypes are the event types counted by name; others are "other".
var knownTypes = []string{
	"m.room.message", "m.room.member", "m.room.name", "m.room.topic", "m.room.avatar", "m.room.canonical_alias",
	"m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.history_visibility", "m.room.guest_access",
	"m.room.encryption", "m.room.encrypted", "m.room.redaction", "m.room.tombstone", "m.room.server_acl",
	"m.room.pinned_events", "m.reaction", "m.sticker", "m.typing", "m.receipt", "m.presence",
}

// EventType bounds an event type label.
func EventType(t string) string {
	if slices.Contains(knownTypes, t) {
		return t
	}
	return "other"
}

// ObserveRequest records one internal API request.
func (m *Metrics) ObserveRequest(route, service string, status int, d time.Duration) {
	if service == "" {
		service = "none"
	}
	m.APIRequests.WithLabelValues(route, service, strconv.Itoa(status)).Inc()
	m.APIRequestSeconds.WithLabelValues(route, service).Observe(d.Seconds())
	if status == http.StatusTooManyRequests {
		m.RateLimited.WithLabelValues(service).Inc()
	}
}

// ObserveReconcile records one reconcile of rooms.
func (m *Metrics) ObserveReconcile(trigger string, _, recovered, failed int, d time.Duration) {
	m.Reconciles.WithLabelValues(trigger).Inc()
	m.ReconcileRecovered.Add(float64(recovered))
	m.ReconcileFailedRooms.Add(float64(failed))
	m.ReconcileSeconds.Observe(d.Seconds())
}

// GaugeFunc registers a gauge read at scrape time.
func (m *Metrics) GaugeFunc(name, help string, f func() float64) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, f))
}

// GaugeVecFunc registers a labelled gauge collected at scrape time.
func (m *Metrics) GaugeVecFunc(name, help string, labels []string, collect func(emit func(value float64, labelValues ...string))) {
	m.Registry.MustRegister(&funcCollector{
		desc:    prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil),
		collect: collect,
	})
}

type funcCollector struct {
	desc      *prometheus.Desc
	collect   func(emit func(value float64, labelValues ...string))
	valueType prometheus.ValueType
}

func (c *funcCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c *funcCollector) Collect(ch chan<- prometheus.Metric) {
	c.collect(func(v float64, lv ...string) {
		valueType := c.valueType
		if valueType == 0 {
			valueType = prometheus.GaugeValue
		}
		ch <- prometheus.MustNewConstMetric(c.desc, valueType, v, lv...)
	})
}

// Handler serves the registry on /metrics.
func (m *Metrics) Handler(withPprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// ObserveTransaction records one appservice transaction.
func (m *Metrics) ObserveTransaction(result string, events []eventlog.IncomingEvent, commit time.Duration) {
	m.Transactions.WithLabelValues(result).Inc()
	for i := range events {
		m.EventsReceived.WithLabelValues(string(events[i].Kind), EventType(events[i].Type)).Inc()
	}
	if result != "bad_request" && result != "overloaded" { // neither reached a commit
		m.TransactionCommit.Observe(commit.Seconds())
	}
}

// ObservePace records how long a committed transaction's answer was held
// back by the pacing.
func (m *Metrics) ObservePace(waited time.Duration) { m.TransactionPace.Observe(waited.Seconds()) }

// CounterVecFunc registers a labelled counter collected at scrape time
// (from counts another package keeps).
func (m *Metrics) CounterVecFunc(name, help string, labels []string, collect func(emit func(value float64, labelValues ...string))) {
	m.Registry.MustRegister(&funcCollector{
		desc:      prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil),
		collect:   collect,
		valueType: prometheus.CounterValue,
	})
}
