package bridge

// registerMetrics adds the families read from the bridge's parts at scrape
// time: log position, consumer lag and failures, deliveries, dead letters.
func (b *Bridge) registerMetrics() {
	m := b.Metrics
	// The figures from the database are the latest status sample's (at
	// most a second old), which health and the bot's status read too.
	m.GaugeFunc("log_position", "Position of the newest event in the event log.", func() float64 {
		return float64(b.Status().LogHead)
	})
	m.GaugeFunc("journal_backlog", "Transactions answered but not yet split into the event log.", func() float64 {
		return float64(b.Status().JournalBacklog)
	})
	m.GaugeVecFunc("consumer_lag_events", "Events in the log a consumer has not handled yet (from its durable cursor).",
		[]string{"consumer"}, func(emit func(float64, ...string)) {
			for _, c := range b.Status().Consumers {
				emit(float64(c.Lag), c.Name)
			}
		})
	m.CounterVecFunc("consumer_failures_total", "Failed consumer batches (each is retried), by consumer.",
		[]string{"consumer"}, func(emit func(float64, ...string)) {
			for _, r := range b.Consumers.Runners() {
				emit(float64(r.Failures()), r.Name())
			}
		})
	m.CounterVecFunc("consumer_parked_total", "Events a consumer failed on for good and parked (by this process), by consumer.",
		[]string{"consumer"}, func(emit func(float64, ...string)) {
			for _, r := range b.Consumers.Runners() {
				emit(float64(r.ParkedCount()), r.Name())
			}
		})
	m.GaugeVecFunc("parked_events", "Events in the parked list (failed for good, waiting for a retry request), by consumer.",
		[]string{"consumer"}, func(emit func(float64, ...string)) {
			counts := b.Status().ParkedEvents
			for _, r := range b.Consumers.Runners() {
				emit(float64(counts[r.Name()]), r.Name())
			}
		})
	m.GaugeFunc("parked_transactions", "Journalled transactions the indexer could not store (the database refused them) and set aside.", func() float64 {
		return float64(b.Status().ParkedTransactions)
	})
	m.CounterVecFunc("deliveries_total", "DTO deliveries by sink and result.",
		[]string{"sink", "result"}, func(emit func(float64, ...string)) {
			st := b.Webhooks.Stats()
			emit(float64(st.Delivered), "webhook", "delivered")
			emit(float64(st.Failed), "webhook", "failed")
			emit(float64(st.DeadLettered), "webhook", "dead_lettered")
			emit(float64(st.Disabled), "webhook", "disabled")
			if b.NATS != nil {
				ns := b.NATS.Stats()
				emit(float64(ns.Published), "nats", "delivered")
				emit(float64(ns.Duplicates), "nats", "duplicate")
				emit(float64(ns.FailedBatches), "nats", "failed")
			}
		})
	m.GaugeVecFunc("webhook_deliveries", "Webhook deliveries waiting, by state (pending, dead: the dead-letter list).",
		[]string{"state"}, func(emit func(float64, ...string)) {
			s := b.Status()
			emit(float64(s.WebhooksPending), "pending")
			emit(float64(s.WebhooksDead), "dead")
		})
	m.CounterVecFunc("unmapped_events_total", "Log events of types no DTO exists for (counted, not delivered).",
		nil, func(emit func(float64, ...string)) { emit(float64(b.DTOs.Unmapped())) })
	m.GaugeFunc("health_degraded", "1 when health is degraded: no process leads, or the journal backlog or a consumer's lag is past its health threshold.", func() float64 {
		if len(b.Status().Degradation(b.healthThresholds())) > 0 {
			return 1
		}
		return 0
	})
	m.GaugeFunc("leader", "1 when this process runs the consumers.", func() float64 {
		if b.Leader != nil && b.Leader.Leading() {
			return 1
		}
		return 0
	})
}
